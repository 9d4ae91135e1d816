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
import io
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


class _HashingWriter(io.RawIOBase):
    """A write-only stream that hashes and counts what passes through to `target`."""

    def __init__(self, target: BinaryIO):
        self.target = target
        self.digest = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def tell(self) -> int:          # tarfile asks where it starts
        return self.size

    def write(self, data) -> int:
        view = memoryview(data)
        self.digest.update(view)
        self.target.write(view)
        self.size += len(view)
        return len(view)


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
    """

    def __init__(self, fileobj: BinaryIO):
        self._out = _HashingWriter(fileobj)
        # PAX keeps long or non-ASCII names intact; for the short ASCII names used here it
        # writes plain ustar headers with no extended records (nothing time-dependent).
        self._tar = tarfile.open(fileobj=self._out, mode="w", format=tarfile.PAX_FORMAT)
        self._samples = 0
        self._closed: TarSummary | None = None

    def add(self, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mtime = 0
        info.mode = MODE
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.type = tarfile.REGTYPE
        self._tar.addfile(info, io.BytesIO(data))

    def write_sample(self, key: str, fields: Mapping[str, bytes]) -> None:
        check_key(key)
        if not fields:
            raise ValueError(f"sample {key!r} has no fields")
        for ext in sorted(fields):
            if not ext or "/" in ext:
                raise ValueError(f"invalid extension {ext!r} for sample {key!r}")
            self.add(f"{key}.{ext}", bytes(fields[ext]))
        self._samples += 1

    def close(self) -> TarSummary:
        if self._closed is None:
            self._tar.close()       # end-of-archive blocks, padded to tarfile's record size
            self._closed = TarSummary(self._samples, self._out.size, self._out.digest.hexdigest())
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
