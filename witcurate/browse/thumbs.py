"""Thumbnails: small JPEGs written once from the download stage's tars, within a budget.

A tar is indexed by walking its headers (tar_index: a seek over each member's data) only until
every wanted key is found; each image is then read by seeking to its offset and reading its
bytes, so no tar is ever read whole. The JPEG settings are fixed and nothing time-dependent goes in, so the
same images give the same thumbnail files, byte for byte.
"""

from __future__ import annotations

import hashlib
import io
import re
import tarfile
from typing import Any, Iterable

from PIL import Image

from witcurate.browse.site import write_bytes
from witcurate.browse.tar_index import Window, index_tar
from witcurate.pipeline import fs

SIZE = 128                      # longest side, pixels
QUALITY = 80
MAX_PIXELS = 64_000_000         # refuse to decode more than this (the download stage caps lower)
HEX_UID = re.compile(r"^[0-9a-f]{8,64}$")


def thumb_name(uid: str) -> str:
    """The thumbnail's path inside the report: the uid where it is a plain hex id."""
    stem = uid if HEX_UID.match(uid) else hashlib.sha256(uid.encode("utf-8")).hexdigest()[:32]
    return f"thumbs/{stem}.jpg"


def make_thumbnail(data: bytes) -> bytes:
    """A JPEG of at most SIZE x SIZE; raises on an image that does not decode."""
    with Image.open(io.BytesIO(data)) as img:
        if img.width * img.height > MAX_PIXELS:
            raise ValueError(f"{img.width}x{img.height} is too many pixels")
        img.draft("RGB", (SIZE * 2, SIZE * 2))        # JPEG: decode at a reduced scale
        img.load()
        if img.mode in ("RGBA", "LA", "P", "PA"):
            rgba = img.convert("RGBA")
            flat = Image.new("RGB", rgba.size, (255, 255, 255))
            flat.paste(rgba, mask=rgba.getchannel("A"))
        else:
            flat = img.convert("RGB")
    flat.thumbnail((SIZE, SIZE), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    flat.save(out, "JPEG", quality=QUALITY, optimize=False, progressive=False, subsampling="4:2:0")
    return out.getvalue()


def _read_at(window: Window, offset: int, size: int) -> bytes:
    data = window.read(offset, size)
    if len(data) != size:
        raise OSError(f"short read: {len(data)} of {size} bytes")
    return data


def _write_tar_thumbs(images_dir: str, shard: str, wanted: dict[str, list[str]], dest: str) -> dict[str, str]:
    """Thumbnails of one tar's wanted keys; returns {uid: problem} for those that failed."""
    problems: dict[str, str] = {}
    try:
        with fs.open_file(fs.join(images_dir, shard)) as handle:
            window = Window(handle)
            where = index_tar(window, set(wanted))
            for key in sorted(wanted, key=lambda k: where.get(k, (0, 0))):      # in file order
                if key not in where:
                    problems.update({uid: f"image not found in {shard}" for uid in wanted[key]})
                    continue
                try:
                    thumb = make_thumbnail(_read_at(window, *where[key]))
                except Exception as e:          # any undecodable image becomes a placeholder
                    problems.update({uid: f"image does not decode ({type(e).__name__})" for uid in wanted[key]})
                    continue
                for uid in wanted[key]:
                    write_bytes(fs.join(dest, thumb_name(uid)), thumb)
    except FileNotFoundError:
        problems.update({uid: f"image not found: {shard} does not exist" for uids in wanted.values() for uid in uids})
    except (OSError, tarfile.TarError, EOFError) as e:
        done = {uid for uids in wanted.values() for uid in uids} - set(problems)
        problems.update({uid: f"image not readable: {shard} is damaged ({type(e).__name__})" for uid in done
                         if not fs.exists(fs.join(dest, thumb_name(uid)))})
    return problems


def write_thumbnails(images_dir: str, wanted: dict[str, tuple[str, str]], dest: str) -> dict[str, str]:
    """Write a thumbnail for each {uid: (shard, key)} under dest/thumbs/, one tar at a time.
    Returns {uid: problem} for every uid without one."""
    fs.makedirs(fs.join(dest, "thumbs"))
    by_shard: dict[str, dict[str, list[str]]] = {}
    for uid, (shard, key) in sorted(wanted.items()):
        by_shard.setdefault(shard, {}).setdefault(key, []).append(uid)
    problems: dict[str, str] = {}
    for shard in sorted(by_shard):
        problems.update(_write_tar_thumbs(images_dir, shard, by_shard[shard], dest))
    return problems


def choose(groups: Iterable[tuple[list[dict[str, Any]], int]], budget: int) -> dict[str, tuple[str, str]]:
    """Which samples get a thumbnail: groups in priority order, each (samples, at most n of them),
    until `budget` distinct images; a sample shown twice shares one file. Samples past the
    budget get a note saying so."""
    chosen: dict[str, tuple[str, str]] = {}
    for samples, limit in groups:
        taken = 0
        for s in samples:
            for sample in (s, s.get("survivor")):
                if not isinstance(sample, dict) or "_img" not in sample:
                    continue
                uid = sample["uid"]
                if uid in chosen or (taken < limit and len(chosen) < budget):
                    if uid not in chosen:
                        chosen[uid] = sample["_img"]
                    taken += 1
                else:
                    sample["note"] = "no thumbnail: past the report's thumbnail budget"
    return chosen


def apply(groups: Iterable[list[dict[str, Any]]], chosen: dict[str, Any], problems: dict[str, str]) -> None:
    """Point each sample at its thumbnail, or say why it has none."""
    for samples in groups:
        for s in samples:
            for sample in (s, s.get("survivor")):
                if not isinstance(sample, dict) or sample.get("uid") not in chosen:
                    continue
                if sample["uid"] in problems:
                    sample["image_error"] = problems[sample["uid"]]
                    sample.pop("note", None)
                else:
                    sample["thumb"] = thumb_name(sample["uid"])
                    sample.pop("note", None)
