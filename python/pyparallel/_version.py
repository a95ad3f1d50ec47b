"""The version of pyparallel, in one place: pyproject.toml reads it from here
(setuptools' dynamic version), the package exports it as
pyparallel.__version__, and CHANGELOG.md has an entry for it."""

__version__ = "0.1.0"
