"""Image bytes by shard: read each image shard once, front to back, for the rows that need it.

Image bytes never travel through a shuffle (docs/ARCHITECTURE.md): later stages move metadata rows that name
a `shard` (relative to the images directory) and a `key` inside it, group them by shard, and read
the bytes here. A shard is either a WebDataset tar (KEY.jpg, KEY.txt, KEY.json, ...) as written by
the download stage and by img2dataset's `webdataset` output, or an img2dataset `parquet` output
file whose image column (jpg/png/webp) holds the bytes. Tars are read as a stream (`r|*`), so a
shard on gs:// is read sequentially once and never seeked.

This module also lists a plain img2dataset output folder (NNNNN.tar + NNNNN.parquet, or
NNNNN.parquet with image bytes) as rows, for the standalone scoring job.
"""

from __future__ import annotations

import collections
import hashlib
import posixpath
import re
import tarfile
from typing import Any, Iterable, Iterator, NamedTuple

import pyarrow.parquet as pq

from witcurate.pipeline import fs

# Image file extensions recognised inside a sample (in order of preference where a caller ranks
# them; read_shard, which streams, takes a key's first image member in the shard).
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")

# Why an image could not be read (the `error` of an ImageRead).
SHARD_UNREADABLE = "shard_unreadable"
MISSING_IN_SHARD = "missing_in_shard"


class ImageRead(NamedTuple):
    """One row's image: `data` holds the bytes, or is None and `error` says why."""
    row: dict[str, Any]
    data: bytes | None
    ext: str            # "jpg", "png", ... ("" when data is None)
    error: str          # "" when data is present; otherwise "shard_unreadable: ..." etc.


def sample_key(member_name: str) -> tuple[str, str]:
    """WebDataset's split of a tar member name into (key, extension): the key is everything up
    to the first dot of the file name (directories included), the extension the rest."""
    name = member_name[2:] if member_name.startswith("./") else member_name
    directory, base = posixpath.split(name)
    if "." not in base:
        return name, ""
    stem, ext = base.split(".", 1)
    return (posixpath.join(directory, stem) if directory else stem), ext.lower()


def read_shard(images_dir: str, shard: str, rows: Iterable[dict[str, Any]]) -> Iterator[ImageRead]:
    """Yield an ImageRead for every row of one shard, reading the shard once, sequentially.

    Rows are matched by their `key`. Found images come out in shard order; rows whose key is not
    in the shard, or that a broken shard never reached, come out last with `data=None` and an
    error, so every row given comes back exactly once.
    """
    wanted: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for row in rows:
        wanted[str(row["key"])].append(row)
    if not wanted:
        return
    path = fs.join(images_dir, shard)
    error = ""
    try:
        if shard.endswith(".parquet"):
            yield from _read_parquet_shard(path, wanted)
        else:
            yield from _read_tar_shard(path, wanted)
    except FileNotFoundError:
        error = f"{SHARD_UNREADABLE}: {shard} does not exist under {images_dir}"
    except (OSError, tarfile.TarError, EOFError, ValueError) as e:
        # A truncated or corrupt shard: what was read so far has been yielded already.
        error = f"{SHARD_UNREADABLE}: {shard}: {type(e).__name__}: {str(e)[:200]}"
    for key, left in wanted.items():
        for row in left:
            yield ImageRead(row, None, "", error or f"{MISSING_IN_SHARD}: no image for key {key!r} in {shard}")


def _read_tar_shard(path: str, wanted: dict[str, list[dict[str, Any]]]) -> Iterator[ImageRead]:
    with fs.open_file(path) as f, tarfile.open(fileobj=f, mode="r|*") as tar:
        for member in tar:
            if not wanted:
                break
            if not member.isfile():
                continue
            key, ext = sample_key(member.name)
            if key not in wanted or ext not in IMAGE_EXTENSIONS:
                continue
            extracted = tar.extractfile(member)
            data = extracted.read() if extracted is not None else b""
            for row in wanted.pop(key):
                yield ImageRead(row, data, ext, "")


def _read_parquet_shard(path: str, wanted: dict[str, list[dict[str, Any]]]) -> Iterator[ImageRead]:
    with fs.open_file(path) as f:
        pf = pq.ParquetFile(f)
        names = set(pf.schema_arrow.names)
        ext = next((e for e in IMAGE_EXTENSIONS if e in names), None)
        if ext is None or "key" not in names:
            raise ValueError("parquet shard has no key and image (jpg/png/webp) columns")
        for batch in pf.iter_batches(columns=["key", ext], batch_size=256):
            for key, data in zip(batch.column(0).to_pylist(), batch.column(1).to_pylist()):
                if key is None or data is None or str(key) not in wanted:
                    continue
                for row in wanted.pop(str(key)):
                    yield ImageRead(row, data, ext, "")
            if not wanted:
                break


def iter_images(images_dir: str, rows: Iterable[dict[str, Any]]) -> Iterator[ImageRead]:
    """Every row's image, for rows from several shards: rows are grouped by their `shard`
    (metadata only, in memory) and each shard is read once, in first-seen order.
    In Beam, group by shard with a GroupByKey instead and call `read_shard` per group."""
    by_shard: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_shard.setdefault(str(row["shard"]), []).append(row)
    for shard, shard_rows in by_shard.items():
        yield from read_shard(images_dir, shard, shard_rows)


# --- plain img2dataset output folders --------------------------------------------------------

_SHARD_PARQUET = re.compile(r"^\d+\.parquet$")
IMG2DATASET_COLUMNS = ("key", "status", "url", "caption")


def img2dataset_parquets(folder: str) -> list[str]:
    """The NNNNN.parquet files of an img2dataset output folder (empty if it is not one)."""
    return [p for p in fs.glob(fs.join(folder, "*.parquet"))
            if _SHARD_PARQUET.match(posixpath.basename(p))]


def img2dataset_shard(parquet_path: str) -> str:
    """The image shard a metadata parquet describes: NNNNN.tar beside it (webdataset output),
    or the parquet itself when it carries the image bytes (parquet output)."""
    base = posixpath.basename(parquet_path)
    with fs.open_file(parquet_path) as f:
        names = set(pq.ParquetFile(f).schema_arrow.names)
    if any(e in names for e in IMAGE_EXTENSIONS):
        return base
    return base[: -len(".parquet")] + ".tar"


def standalone_uid(url: str, caption: str) -> str:
    """A uid for a sample that arrived without one: sha1 of url, tab, caption."""
    return hashlib.sha1(f"{url}\t{caption}".encode("utf-8")).hexdigest()


def img2dataset_rows(parquet_path: str) -> Iterator[dict[str, Any]]:
    """The successfully downloaded samples of one img2dataset shard, as rows with `shard`, `key`
    and `uid` (taken from a `uid` column when there is one), and no image bytes."""
    shard = img2dataset_shard(parquet_path)
    with fs.open_file(parquet_path) as f:
        pf = pq.ParquetFile(f)
        columns = [n for n in pf.schema_arrow.names if n not in IMAGE_EXTENSIONS]
        for batch in pf.iter_batches(columns=columns, batch_size=1024):
            for rec in batch.to_pylist():
                if rec.get("status") != "success":
                    continue
                url = rec.get("url") or ""
                caption = rec.get("caption") or ""
                row = dict(rec)
                row["url"], row["caption"], row["shard"] = url, caption, shard
                row["key"] = str(rec["key"])
                if not row.get("uid"):
                    row["uid"] = standalone_uid(url, caption)
                yield row


def count_img2dataset_successes(parquets: list[str]) -> int:
    total = 0
    for path in parquets:
        with fs.open_file(path) as f:
            status = pq.read_table(f, columns=["status"]).column("status")
        total += sum(1 for s in status.to_pylist() if s == "success")
    return total
