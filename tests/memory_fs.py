"""Test support: a Beam FileSystem for fsspec's in-memory filesystem (`memory://`).

The stages read and write parquet through Beam's FileSystems, which know local paths, gs://,
s3:// and hdfs:// but not fsspec's `memory://`. With this FileSystem active, a whole run can live
in memory, in-process (the local FnApiRunner runs its workers as threads of this process, so they
share fsspec's memory store): any stage code that touches a run path with os.path, open(),
os.listdir, pathlib or shutil fails there, as it would on gs://.

Beam finds FileSystems by subclass registration, so merely importing this module would make
`memory://` usable for every later test in the same pytest process, including the one that
checks that an unknown scheme is refused. The scheme is therefore only answered while
`beam_memory_filesystem()` is active; outside it the class matches no path.
"""

from __future__ import annotations

import contextlib
import datetime
import posixpath
from typing import Iterator

import fsspec
from apache_beam.io.filesystem import (BeamIOError, CompressedFile, CompressionTypes, FileMetadata,
                                       FileSystem)

SCHEME = "memory"
_PREFIX = SCHEME + "://"


class MemoryFileSystem(FileSystem):
    """`memory://...` for Beam, backed by `fsspec.filesystem("memory")` (one store per process)."""

    _active = 0

    def __init__(self, pipeline_options=None):
        super().__init__(pipeline_options)
        self._fs = fsspec.filesystem(SCHEME)

    @classmethod
    def scheme(cls):
        # Beam's scheme pattern needs at least one character, so "" matches no path at all.
        return SCHEME if cls._active else ""

    # --- paths --------------------------------------------------------------------------------

    def _key(self, path: str) -> str:
        """The store's key for a URL: memory://a/b and memory:///a/b are both /a/b."""
        return self._fs._strip_protocol(path)

    @staticmethod
    def _url(key: str, like: str) -> str:
        """A store key written the way `like` spells its URLs, so Beam's glob regexes match."""
        prefix = _PREFIX + "/" if like.startswith(_PREFIX + "/") else _PREFIX
        return prefix + key.lstrip("/")

    def join(self, basepath: str, *paths: str) -> str:
        out = basepath
        for part in paths:
            out = out.rstrip("/") + "/" + part.lstrip("/")
        return out

    def split(self, path: str) -> tuple[str, str]:
        if not path.startswith(_PREFIX):
            raise ValueError(f"not a {_PREFIX} path: {path}")
        head, tail = posixpath.split(path[len(_PREFIX):])
        return _PREFIX + head, tail

    def has_dirs(self) -> bool:
        return True

    def mkdirs(self, path: str) -> None:
        if self._fs.exists(self._key(path)):
            raise IOError(f"path already exists: {path}")
        self._fs.makedirs(self._key(path), exist_ok=True)

    # --- listing and metadata ----------------------------------------------------------------

    def _list(self, dir_or_prefix: str) -> Iterator[FileMetadata]:
        """Every file under a directory, recursively (as LocalFileSystem lists with os.walk)."""
        key = self._key(dir_or_prefix)
        if not self._fs.exists(key):
            return
        try:
            found = self._fs.find(key, detail=True)
        except Exception as e:  # noqa: BLE001 - Beam's contract: a listing failure is a BeamIOError
            raise BeamIOError("List operation failed", {dir_or_prefix: e}) from e
        for name, info in sorted(found.items()):
            yield FileMetadata(self._url(name, dir_or_prefix), int(info.get("size") or 0),
                               _timestamp(info.get("created")))

    def exists(self, path: str) -> bool:
        return self._fs.exists(self._key(path))

    def _info(self, path: str, operation: str) -> dict:
        try:
            return self._fs.info(self._key(path))
        except FileNotFoundError as e:
            raise BeamIOError(f"{operation} operation failed", {path: e}) from e

    def size(self, path: str) -> int:
        return int(self._info(path, "Size").get("size") or 0)

    def last_updated(self, path: str) -> float:
        return _timestamp(self._info(path, "Last updated").get("created"))

    def checksum(self, path: str) -> str:
        return str(self.size(path))      # what LocalFileSystem reports too

    def metadata(self, path: str) -> FileMetadata:
        info = self._info(path, "Metadata")
        return FileMetadata(path, int(info.get("size") or 0), _timestamp(info.get("created")))

    # --- reading and writing -----------------------------------------------------------------

    def _open(self, path: str, mode: str, compression_type):
        compression_type = FileSystem._get_compression_type(path, compression_type)
        raw = self._fs.open(self._key(path), mode)
        if compression_type == CompressionTypes.UNCOMPRESSED:
            return raw
        return CompressedFile(raw, compression_type=compression_type)

    def create(self, path, mime_type="application/octet-stream",
               compression_type=CompressionTypes.AUTO):
        return self._open(path, "wb", compression_type)

    def open(self, path, mime_type="application/octet-stream",
             compression_type=CompressionTypes.AUTO):
        return self._open(path, "rb", compression_type)

    # --- bulk operations ----------------------------------------------------------------------

    def _each(self, operation: str, sources: list[str], destinations: list[str], fn) -> None:
        assert len(sources) == len(destinations), \
            "source_file_names and destination_file_names should be equal in length"
        errors = {}
        for src, dst in zip(sources, destinations):
            try:
                if self._fs.exists(self._key(dst)):
                    self._fs.rm(self._key(dst), recursive=True)
                fn(self._key(src), self._key(dst))
            except Exception as e:  # noqa: BLE001 - collected, as Beam's FileSystems do
                errors[(src, dst)] = e
        if errors:
            raise BeamIOError(f"{operation} operation failed", errors)

    def copy(self, source_file_names, destination_file_names):
        self._each("Copy", source_file_names, destination_file_names,
                   lambda s, d: self._fs.copy(s, d, recursive=True))

    def rename(self, source_file_names, destination_file_names):
        self._each("Rename", source_file_names, destination_file_names,
                   lambda s, d: self._fs.mv(s, d, recursive=True))

    def delete(self, paths):
        errors = {}
        for result in self.match(paths):
            if not result.metadata_list:
                errors[result.pattern] = IOError(f"No files found to delete under: {result.pattern}")
            for meta in result.metadata_list:
                try:
                    self._fs.rm(self._key(meta.path), recursive=True)
                except Exception as e:  # noqa: BLE001
                    errors[meta.path] = e
        if errors:
            raise BeamIOError("Delete operation failed", errors)


def _timestamp(created) -> float:
    if isinstance(created, datetime.datetime):
        return created.timestamp()
    return float(created or 0.0)


@contextlib.contextmanager
def beam_memory_filesystem() -> Iterator[None]:
    """While active, Beam's FileSystems (and so every stage's parquet IO) accept memory:// paths."""
    MemoryFileSystem._active += 1
    try:
        yield
    finally:
        MemoryFileSystem._active -= 1


def clear(root: str) -> None:
    """Remove everything under a memory:// root (the store lives as long as the process)."""
    store = fsspec.filesystem(SCHEME)
    key = store._strip_protocol(root)
    if store.exists(key):
        store.rm(key, recursive=True)
