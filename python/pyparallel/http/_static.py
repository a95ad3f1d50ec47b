"""Static files: mapping a request path to a file under a root directory,
safely, and the HTML listing of a directory without an index.html.

Nothing outside the root is ever served. The raw path is percent-decoded
exactly once; an encoded slash (%2F) or a NUL anywhere is refused, and so is
any ".." segment (clients normalise dot segments before sending, so only an
attack sends one). The remaining path is joined to the root, every symlink
resolved (os.path.realpath; a path without one is already real, which one
lstat per segment shows), and the result must still lie under the root's
own real path (os.path.commonpath): a symlink leaving the root is refused
like a missing file. Refusals look exactly like a missing file (404), so a
client learns nothing about what lies outside.

The file itself is sent by the C layer (sendfile, ETag, ranges); this module
only decides which file, or which redirect or listing.
"""

from __future__ import annotations

import html
import mimetypes
import os
import posixpath
import stat
from urllib.parse import quote

from ._request import unquote_to_bytes

# Loaded once, before any worker can race to initialise the tables lazily.
mimetypes.init()

# Compressed files are served as what they are, not as their contents'
# type with an encoding the client would undo (http.server does the same).
_COMPRESSED = {
    ".gz": "application/gzip",
    ".bz2": "application/x-bzip2",
    ".xz": "application/x-xz",
    ".z": "application/x-compress",
}
_content_types: dict[str, str] = {}

INDEX_NAME = "index.html"

# What resolve() found.
FILE = "file"
DIRECTORY = "directory"
REDIRECT = "redirect"


def content_type(path: str) -> str:
    """The Content-Type for a file name, from mimetypes (by extension);
    application/octet-stream when unknown."""
    extension = posixpath.splitext(path)[1].lower()
    found = _content_types.get(extension)
    if found is None:
        found = _COMPRESSED.get(extension) or mimetypes.guess_type(path)[0] or "application/octet-stream"
        if extension:
            _content_types[extension] = found
    return found


def real_root(root: str | os.PathLike[str]) -> str:
    """The real path of a root directory, or ValueError when it is not one."""
    real = os.path.realpath(os.fspath(root))
    if not os.path.isdir(real):
        raise ValueError(f"static root {root!r} is not a directory")
    return real


def _inside(root: str, path: str) -> bool:
    return path == root or os.path.commonpath((root, path)) == root


def _walk(root: str, segments: list[bytes]) -> tuple[str, int | None] | tuple[None, None]:
    """(path, mode) of root/segments when no segment is a symbolic link:
    root is real and resolve() refuses "..", so the path is then real and
    under root as it is, and one lstat per segment replaces realpath's lstat
    of every component from "/" plus a stat (mode None: it does not exist).
    (None, None) when a segment is a link: realpath must resolve it."""
    path = root
    mode = None
    for segment in segments:
        path = os.path.join(path, os.fsdecode(segment))
        try:
            mode = os.lstat(path).st_mode
        except OSError:
            return path, None
        if stat.S_ISLNK(mode):
            return None, None
    if mode is None:
        mode = os.stat(root).st_mode
    return path, mode


def resolve(root: str, raw_path: str) -> tuple[str, str] | None:
    """Where a raw (not decoded) request path leads under root (a real
    path, from real_root). Returns one of
        (FILE, real_path)        a regular file to send
        (DIRECTORY, real_path)   a directory without index.html: list it
        (REDIRECT, raw_path/)    a directory asked for without its slash
        None                     nothing to serve: answer 404
    """
    if not raw_path.startswith("/"):
        return None
    if "%" in raw_path:
        if "%2f" in raw_path.lower():
            return None
        decoded = unquote_to_bytes(raw_path)
    else:
        decoded = raw_path.encode("utf-8", "surrogateescape")
    if b"\0" in decoded:
        return None
    segments = []
    for segment in decoded.split(b"/"):
        if segment == b"..":
            return None
        if segment and segment != b".":
            segments.append(segment)
    real, mode = _walk(root, segments)
    if real is None:
        candidate = os.path.join(root, os.fsdecode(b"/".join(segments))) if segments else root
        real = os.path.realpath(candidate)
        if not _inside(root, real):
            return None
        try:
            mode = os.stat(real).st_mode
        except OSError:
            return None
    elif mode is None:
        return None
    if stat.S_ISREG(mode):
        # "/file.txt/" names a directory that does not exist.
        return None if raw_path.endswith("/") else (FILE, real)
    if not stat.S_ISDIR(mode):
        return None
    if not raw_path.endswith("/"):
        return (REDIRECT, raw_path + "/")
    index = os.path.realpath(os.path.join(real, INDEX_NAME))
    if _inside(root, index) and os.path.isfile(index):
        return (FILE, index)
    return (DIRECTORY, real)


def listing(directory: str, display_path: str) -> bytes | None:
    """The HTML listing of directory (bytes, UTF-8), titled with
    display_path (the decoded request path); None when it cannot be read."""
    try:
        with os.scandir(directory) as scan:
            entries = []
            for entry in scan:
                name = entry.name
                try:
                    is_dir = entry.is_dir()
                except OSError:
                    is_dir = False
                href = name + "/" if is_dir else name
                shown = name + "@" if entry.is_symlink() else href
                entries.append((name.lower(), href, shown))
    except OSError:
        return None
    entries.sort()
    title = html.escape(f"Directory listing for {display_path}")
    lines = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        '<head><meta charset="utf-8">',
        f"<title>{title}</title></head>",
        f"<body>\n<h1>{title}</h1>",
        "<hr>\n<ul>",
    ]
    for _, href, shown in entries:
        lines.append(f'<li><a href="{quote(href, errors="surrogateescape")}">{html.escape(shown)}</a></li>')
    lines.append("</ul>\n<hr>\n</body>\n</html>\n")
    return "\n".join(lines).encode("utf-8", "surrogateescape")
