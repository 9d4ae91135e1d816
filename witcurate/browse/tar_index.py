"""Where a tar's wanted images are (data offset and size), found by walking its headers only.

A report wants a few images from each of many tars, spread through them, so nearly every header
of every tar is walked. tarfile builds a TarInfo per member (tens of microseconds each); this
parses the 512-byte ustar header and steps over the member's data to the next one, several
times faster (the header checksum is verified for the members taken). Reads go through a window
of 1 MiB: one read covers many small members, a member larger than the window is skipped with a
seek, and no more than the window is ever held. A header it does not handle here (pax or GNU
long names, base-256 sizes) hands the whole tar to tarfile, which reads every format.
"""

from __future__ import annotations

import tarfile
from typing import BinaryIO

from witcurate.pipeline.image_source import IMAGE_EXTENSIONS, sample_key

BLOCK = 512
WINDOW = 1 << 20                                          # bytes read at a time while walking
PLAIN_TYPES = (b"0", b"\0", b"7")                       # regular files
SKIPPED_TYPES = (b"1", b"2", b"3", b"4", b"5", b"6")      # links, devices, directories, fifos
IMAGE_SUFFIXES = tuple(f".{ext}" for ext in IMAGE_EXTENSIONS)


class _Unusual(Exception):
    """A header this walker leaves to tarfile."""


def _wanted_key(name: str, keys: set[str]) -> str | None:
    if not name.lower().endswith(IMAGE_SUFFIXES):
        return None
    key, ext = sample_key(name)
    return key if key in keys and ext in IMAGE_EXTENSIONS else None


def _parse(header: bytes) -> tuple[str, int, bytes]:
    """(name, size, type) of one ustar/v7 header; anything else goes to tarfile."""
    kind = header[156:157]
    if (kind not in PLAIN_TYPES and kind not in SKIPPED_TYPES) or header[124] & 0x80:
        raise _Unusual()
    try:
        size = int(header[124:136].split(b"\0", 1)[0].strip() or b"0", 8)
    except ValueError:
        raise _Unusual() from None
    name = header[:100].split(b"\0", 1)[0]
    if header[257:262] == b"ustar" and header[345]:
        name = header[345:500].split(b"\0", 1)[0] + b"/" + name
    return name.decode("utf-8", "surrogateescape"), size, kind


def _check(header: bytes) -> None:
    """The header checksum, verified for the members taken (summing every header would cost
    more than the rest of the walk); a mismatch, old signed checksums included, goes to tarfile,
    which decides whether the tar is damaged."""
    try:
        stored = int(header[148:156].split(b"\0", 1)[0].strip(), 8)
    except ValueError:
        raise _Unusual() from None
    if stored != sum(header[:148]) + 256 + sum(header[156:]):
        raise _Unusual()


class Window:
    """Reads of a file at offsets, served from one window of `size` bytes read at a time: walking
    headers costs a read per window, not two calls per member, and memory holds one window."""

    def __init__(self, handle: BinaryIO, size: int = WINDOW):
        self.handle, self.size = handle, size
        self.start, self.data = 0, b""

    def read(self, offset: int, n: int) -> bytes:
        end = offset + n
        if offset < self.start or end > self.start + len(self.data):
            self.handle.seek(offset)
            self.start, self.data = offset, self.handle.read(max(n, self.size))
        return self.data[offset - self.start:end - self.start]


def _walk(window: Window, keys: set[str]) -> dict[str, tuple[int, int]]:
    found: dict[str, tuple[int, int]] = {}
    offset = 0
    while len(found) < len(keys):
        header = window.read(offset, BLOCK)
        if len(header) < BLOCK or (header[0] == 0 and not header.strip(b"\0")):
            break                                         # end of archive (or a short tail)
        name, size, kind = _parse(header)
        if kind in PLAIN_TYPES:
            key = _wanted_key(name, keys)
            if key is not None and key not in found:
                _check(header)
                found[key] = (offset + BLOCK, size)
            offset += BLOCK + (size + BLOCK - 1) // BLOCK * BLOCK
        else:
            offset += BLOCK
    return found


def _walk_with_tarfile(handle: BinaryIO, keys: set[str]) -> dict[str, tuple[int, int]]:
    found: dict[str, tuple[int, int]] = {}
    handle.seek(0)
    with tarfile.open(fileobj=handle, mode="r:") as tar:
        while len(found) < len(keys):
            member = tar.next()
            if member is None:
                break
            key = _wanted_key(member.name, keys) if member.isfile() else None
            if key is not None and key not in found:
                found[key] = (member.offset_data, member.size)
            tar.members.clear()                           # keep no list of every member
    return found


def index_tar(window: Window, keys: set[str]) -> dict[str, tuple[int, int]]:
    """{key: (data offset, size)} of the image member of each wanted key that the tar holds,
    walking only until all are found. A damaged tar raises tarfile.ReadError (through tarfile)."""
    try:
        return _walk(window, keys)
    except _Unusual:
        return _walk_with_tarfile(window.handle, keys)
