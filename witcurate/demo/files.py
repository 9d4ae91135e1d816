"""Small writers the demo world's parts share (local paths: the world lives on local disk)."""

from __future__ import annotations

import io
import json
import tarfile


def tar_add(tar: tarfile.TarFile, name: str, blob: bytes) -> None:
    """A member with fixed metadata, so the same bytes give the same tar."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(blob), 1_700_000_000, 0o644
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(blob))


def write_json(path: str, obj) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=isinstance(obj, dict))
        f.write("\n")
