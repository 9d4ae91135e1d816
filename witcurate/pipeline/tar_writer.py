"""Deterministic WebDataset tar writing: the same samples give the same bytes, on any machine.

A WebDataset shard is a plain tar whose consecutive members `KEY.EXT` form one sample. Readers
(webdataset, open_clip_train, Hugging Face datasets) split a member name at the first dot of its
base name, so keys must not contain dots. Everything a tar header could pick up from the writing
machine is pinned: mtime 0, uid/gid 0, empty user and group names, mode 0o644, and members are
written in the order given (the caller sorts samples by key; fields within a sample are sorted
by extension). The sha256 and size of the archive are computed while it streams out, so a shard
is never read back to be hashed.
"""

from __future__ import annotations

import hashlib
import tarfile
from dataclasses import dataclass
from typing import BinaryIO, Iterable, Mapping

from witcurate.pipeline import fs

MODE = 0o644


@dataclass(frozen=True)
class TarSummary:
    samples: int
    bytes: int
    sha256: str


# Header fields pinned for every member (ustar layout, POSIX.1-1988): mode, uid, gid, mtime.
_MODE_UID_GID = b"%07o\0" % MODE + b"0000000\0" * 2
_MTIME = b"%011o\0" % 0
_CHECKSUM_BLANK = b" " * 8
# type "0" (regular file), empty linkname, "ustar\000" magic and version, empty uname and gname,
# empty devmajor/devminor, empty prefix, and the block's 12 bytes of padding.
_AFTER_CHECKSUM = (tarfile.REGTYPE + b"\0" * 100 + tarfile.POSIX_MAGIC + b"\0" * 32 * 2
                   + b"\0" * 8 * 2 + b"\0" * 155 + b"\0" * 12)
_MAX_USTAR_SIZE = 8 ** 11 - 1


def member_header(name: str, size: int) -> bytes:
    """The header block(s) of a regular file `name` of `size` bytes with the pinned fields.

    Byte for byte what tarfile writes in PAX format: a plain ustar block when the name is ASCII
    and fits in 100 bytes (every WebDataset key of this project), built here directly because
    tarfile's general path costs about 30 µs per member; anything else goes through tarfile,
    which adds the PAX extended records a long or non-ASCII name needs.
    """
    if name.isascii() and len(name) <= 100 and 0 <= size <= _MAX_USTAR_SIZE:
        block = (name.encode("ascii").ljust(100, b"\0") + _MODE_UID_GID + b"%011o\0" % size
                 + _MTIME + _CHECKSUM_BLANK + _AFTER_CHECKSUM)
        return block[:148] + b"%06o\0 " % sum(block) + block[156:]
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, 0, MODE
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info.tobuf(tarfile.PAX_FORMAT, tarfile.ENCODING, "surrogateescape")


def _padding(size: int) -> bytes:
    return b"\0" * (-size % tarfile.BLOCKSIZE)


def check_key(key: str) -> None:
    """A WebDataset key: non-empty, no dot (readers split at it), no path separator."""
    if not key or "." in key or "/" in key or "\\" in key:
        raise ValueError(f"invalid WebDataset key {key!r}: it must be non-empty, without '.' or '/'")


class TarWriter:
    """Write samples (key, {ext: bytes}) into a tar stream with pinned header fields.

        with fs.open_file(path, "wb") as f:
            w = TarWriter(f)
            w.write_sample("abc", {"jpg": image, "txt": caption.encode()})
            summary = w.close()

    The archive is what tarfile writes in PAX format (tests compare the bytes); each sample goes
    out as one write, hashed on the way.
    """

    def __init__(self, fileobj: BinaryIO):
        self._out = fileobj
        self._digest = hashlib.sha256()
        self._size = 0
        self._samples = 0
        self._closed: TarSummary | None = None

    def _write(self, data: bytes) -> None:
        self._digest.update(data)
        self._out.write(data)
        self._size += len(data)

    def write_sample(self, key: str, fields: Mapping[str, bytes]) -> None:
        check_key(key)
        if not fields:
            raise ValueError(f"sample {key!r} has no fields")
        if self._closed is not None:
            raise ValueError("the tar is closed")
        parts = []
        for ext in sorted(fields):
            if not ext or "/" in ext:
                raise ValueError(f"invalid extension {ext!r} for sample {key!r}")
            data = fields[ext]
            size = memoryview(data).nbytes
            parts += (member_header(f"{key}.{ext}", size), data, _padding(size))
        self._write(b"".join(parts))
        self._samples += 1

    def close(self) -> TarSummary:
        """End the archive as tarfile does: two zero blocks, then zeros to a whole record."""
        if self._closed is None:
            end = 2 * tarfile.BLOCKSIZE
            self._write(b"\0" * (end + (-(self._size + end) % tarfile.RECORDSIZE)))
            self._closed = TarSummary(self._samples, self._size, self._digest.hexdigest())
        return self._closed


def write_tar(path: str, samples: Iterable[tuple[str, Mapping[str, bytes]]]) -> TarSummary:
    """Write `samples` (already in the order wanted) to `path` (any fsspec URL)."""
    with fs.open_file(path, "wb") as f:
        writer = TarWriter(f)
        for key, fields in samples:
            writer.write_sample(key, fields)
        return writer.close()


def sha256_file(path: str, chunk: int = 1 << 20) -> str:
    """sha256 of a file, for checking a manifest against the shards on disk."""
    digest = hashlib.sha256()
    with fs.open_file(path, "rb") as f:
        while True:
            block = f.read(chunk)
            if not block:
                break
            digest.update(block)
    return digest.hexdigest()
