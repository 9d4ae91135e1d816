"""Every path goes through fsspec, so `gs://bucket/run` behaves like a local directory."""

from __future__ import annotations

import json
import os
import posixpath
import threading
from typing import Any

import fsspec
from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem


def normalize(path: str) -> str:
    """`file:///x/y` -> `/x/y`; any other path unchanged.

    fsspec accepts both spellings of a local path, Beam's FileSystems (which the stages' parquet
    IO uses) only the plain one, so run directories are normalised before stages see them.
    """
    return path[len("file://"):] if path.startswith("file://") else path


def fs_for(path: str) -> tuple[fsspec.AbstractFileSystem, str]:
    return url_to_fs(path)


def join(base: str, *parts: str) -> str:
    return posixpath.join(base.rstrip("/") if base != "/" else base, *parts)


def _with_protocol(fs: fsspec.AbstractFileSystem, original: str, path: str) -> str:
    if "://" in original:
        proto = original.split("://", 1)[0]
        return path if "://" in path else f"{proto}://{path}"
    return path


def exists(path: str) -> bool:
    fs, p = fs_for(path)
    return fs.exists(p)


def isdir(path: str) -> bool:
    fs, p = fs_for(path)
    return fs.isdir(p)


def listdir(path: str) -> list[str]:
    """Sorted names (not paths) of the entries directly inside a directory."""
    fs, p = fs_for(path)
    return sorted(posixpath.basename(e.rstrip("/")) for e in fs.ls(p, detail=False))


def files_under(path: str) -> dict[str, int]:
    """Every file below a directory, as {path relative to it: size in bytes}."""
    fs, p = fs_for(path)
    root = p.rstrip("/") + "/"
    found = fs.find(p, detail=True)
    return {name[len(root):]: int(info.get("size") or 0) for name, info in sorted(found.items())
            if info.get("type") == "file" and name.startswith(root)}


def makedirs(path: str) -> None:
    fs, p = fs_for(path)
    fs.makedirs(p, exist_ok=True)


def rm(path: str) -> None:
    fs, p = fs_for(path)
    if fs.exists(p):
        fs.rm(p, recursive=True)


def move(src: str, dst: str) -> None:
    fs, s = fs_for(src)
    _, d = fs_for(dst)
    fs.mv(s, d, recursive=True)


def glob(pattern: str) -> list[str]:
    """Sorted matches of a glob, with the protocol kept (gs://...)."""
    fs, p = fs_for(pattern)
    return sorted(_with_protocol(fs, pattern, m) for m in fs.glob(p))


def expand(patterns: list[str]) -> list[str]:
    out: list[str] = []
    for pat in patterns:
        if any(c in pat for c in "*?["):
            out.extend(glob(pat))
        elif exists(pat):
            out.append(pat)
    return sorted(dict.fromkeys(out))


def open_file(path: str, mode: str = "rb", **kw: Any):
    return fsspec.open(path, mode, **kw).open()


def read_bytes(path: str) -> bytes:
    with fsspec.open(path, "rb") as f:
        return f.read()


def read_json(path: str) -> Any:
    with fsspec.open(path, "r", encoding="utf-8") as f:
        return json.load(f)


def write_json(path: str, obj: Any) -> None:
    """Write a JSON file that readers see whole or not at all.

    Markers such as a shard's DONE.json and a stage's _SUCCESS.json are read while other
    processes write them (and a kill can land mid-write), so a local file is written beside its
    destination and renamed over it; an object store's upload already appears only on close.
    """
    text = json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n"
    fs, p = fs_for(path)
    if not isinstance(fs, LocalFileSystem):
        with fsspec.open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return
    tmp = f"{p}.partial-{os.getpid()}-{threading.get_ident()}"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, p)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def size_and_mtime(path: str) -> tuple[int, str]:
    fs, p = fs_for(path)
    info = fs.info(p)
    # local: mtime; gcsfs: updated; s3fs: LastModified; fsspec's memory filesystem: created
    mtime = (info.get("mtime") or info.get("updated") or info.get("LastModified")
             or info.get("created") or "")
    return int(info.get("size") or 0), str(mtime)
