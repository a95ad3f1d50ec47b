"""The C extension pyparallel._core, built by setuptools (see pyproject.toml).

Everything else about the package is declared in pyproject.toml; only the
extension needs code, because its sources are globbed: the engine
(src/engine), the HTTP parser and server layer (src/http), WebSocket
(src/websocket, with zlib and OpenSSL's libcrypto), what those share
(src/common) and the CPython binding (src/binding and its folders, one
per concern: core, shared, http, interp) are compiled into one shared
object. The binding's files include each other's headers by their path
under src/binding ("interp/interp.h"). The engine's symbols are hidden so that only
PyInit__core is exported.
"""

from glob import glob

from setuptools import Extension, setup

C_DIRS = ["src/common", "src/engine", "src/http", "src/websocket", "src/binding"]
BINDING_DIRS = sorted(glob("src/binding/*/"))

sources = sorted(path for d in C_DIRS + BINDING_DIRS for path in glob(f"{d}/*.c"))
headers = sorted(glob("include/*.h") + [h for d in C_DIRS + BINDING_DIRS for h in glob(f"{d}/*.h")])

core = Extension(
    "pyparallel._core",
    sources=sources,
    depends=headers,
    include_dirs=["include"] + C_DIRS,
    libraries=["uring", "pthread", "z", "crypto"],
    extra_compile_args=[
        "-std=c11",
        "-D_GNU_SOURCE",
        "-Wall",
        "-Wextra",
        "-Werror",
        "-O2",
        "-fvisibility=hidden",
    ],
)

setup(ext_modules=[core])
