"""Our checks of every image img2dataset stores in a shard: sha256, perceptual hash, size, or the
reason it cannot be used, in `NNNNN.checks.parquet` beside img2dataset's `NNNNN.parquet`.

`CheckingWriter` wraps img2dataset's sample writer in the download worker: each image is checked
on a background thread as it is written, while the worker's other images are still being fetched
and resized, so the shard's checks are ready when its last image is. (Read back from the finished
tar instead, they cost a pass over every image after img2dataset was done: 15 of the 70 s of an
8,000-image download.) The bytes checked are the bytes the writer stores; an image whose pixels
img2dataset's resizer has just encoded is hashed from those pixels, on the writer's own thread,
without decoding it again (encoded_pixels.py).
"""

from __future__ import annotations

import collections
import concurrent.futures
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from witcurate.filters import images
from witcurate.pipeline import encoded_pixels, fs

CHECKS_SCHEMA = pa.schema([
    ("key", pa.string()),
    ("sha256", pa.string()),       # of the stored (resized, re-encoded) bytes
    ("phash", pa.uint64()),
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("reason", pa.string()),       # "" when the stored image decodes and hashes
])

MAX_PENDING = 256                  # images waiting for their check before write() waits too


def shard_name(shard_id: int, oom_shard_count: int) -> str:
    """img2dataset's file stem for a shard: the id zero-padded to oom_shard_count digits."""
    return f"{shard_id:0{oom_shard_count}d}"


def check_row(key: str, data: bytes, max_pixels: int, grey=None) -> dict[str, Any]:
    """One row of CHECKS_SCHEMA for a stored image, hashed from `grey` (its greyscale pixels)
    when given, else decoded from `data`."""
    if grey is None:
        facts = images.inspect_image(data, max_pixels)
    else:
        facts = images.inspect_pixels(data, grey, max_pixels)
    if isinstance(facts, images.ImageFacts):
        return {"key": key, "sha256": facts.sha256, "phash": facts.phash, "width": facts.width,
                "height": facts.height, "reason": ""}
    return {"key": key, "sha256": images.sha256_hex(data), "phash": None, "width": None, "height": None,
            "reason": facts.reason}


def _done(row: dict[str, Any]) -> concurrent.futures.Future:
    """A row computed in place, queued behind the pending checks so rows keep the write order."""
    future: concurrent.futures.Future = concurrent.futures.Future()
    future.set_result(row)
    return future


def write_checks(path: str, rows: list[dict[str, Any]]) -> None:
    with fs.open_file(path, "wb") as f:
        pq.write_table(pa.Table.from_pylist(rows, CHECKS_SCHEMA), f)


class CheckingWriter:
    """img2dataset's sample writer, plus a check of every image it stores (see the module doc).
    Built as img2dataset builds its writer: (shard_id, output_folder, save_caption,
    oom_shard_count, schema, encode_format)."""

    def __init__(self, inner_class, max_pixels: int, shard_id: int, output_folder: str, save_caption: bool,
                 oom_shard_count: int, schema, encode_format: str):
        self.inner = inner_class(shard_id, output_folder, save_caption, oom_shard_count, schema, encode_format)
        self.max_pixels = max_pixels
        self.path = f"{output_folder}/{shard_name(shard_id, oom_shard_count)}.checks.parquet"
        self.pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="witcurate-checks")
        self.pending: collections.deque = collections.deque()
        self.rows: list[dict[str, Any]] = []

    def write(self, img_str, key, caption, meta) -> None:
        self.inner.write(img_str, key, caption, meta)
        grey = encoded_pixels.take(img_str)     # empties the slot, whether or not an image was stored
        if img_str is None:
            return
        if grey is None:
            self.pending.append(self.pool.submit(check_row, key, img_str, self.max_pixels))
        else:
            self.pending.append(_done(check_row(key, img_str, self.max_pixels, grey)))
        while len(self.pending) > MAX_PENDING:
            self.rows.append(self.pending.popleft().result())

    def close(self) -> None:
        self.inner.close()
        while self.pending:
            self.rows.append(self.pending.popleft().result())
        self.pool.shutdown()
        write_checks(self.path, self.rows)


class CheckingWriterClass:
    """Stands in for the Downloader's sample_writer_class (picklable, unlike a closure)."""

    def __init__(self, inner_class, max_pixels: int):
        self.inner_class = inner_class
        self.max_pixels = max_pixels

    def __call__(self, *args) -> CheckingWriter:
        return CheckingWriter(self.inner_class, self.max_pixels, *args)
