"""A download shard's work on disk, and what each row's fetch came to.

Each shard's work lives in the download stage's work directory, under a name that includes a
fingerprint of its uids and the download config: `shards/NNNNN-FINGERPRINT/attempt-XXXX/` holds
img2dataset's output (`i2d/`), the shard's kept and rejected rows, and `DONE.json` beside it
marks the shard finished. `decide` joins one input row with img2dataset's result for it and the
checks of its stored image: the image facts it is kept with, or the Drop that rejects it.
"""

from __future__ import annotations

import hashlib
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from witcurate.config import DownloadSection
from witcurate.filters import images
from witcurate.filters.base import Drop
from witcurate.filters.retry_after import RATE_LIMITED, RATE_LIMITED_MARKER
from witcurate.pipeline import fs

DONE = "DONE.json"

# Reasons decided in the download stage (others come from witcurate.filters.images / urls).
NO_RESULT = "no_result"
MISSING_UID = "missing_uid"
DUPLICATE_UID = "duplicate_uid"

Results = dict[str, dict[str, Any]]                  # img2dataset's per-sample result, by uid
Checks = dict[tuple[int, str], dict[str, Any]]       # our checks of a stored image, by (sub, key)

_RESULT_COLUMNS = ["uid", "key", "status", "error_message", "width", "height",
                   "original_width", "original_height"]


def shard_fingerprint(config_hash: str, uids: Iterable[str]) -> str:
    """Names a shard's work: the same uids under the same download config, the same work."""
    h = hashlib.sha256(config_hash.encode())
    for uid in uids:
        h.update(b"\n" + uid.encode())
    return h.hexdigest()[:12]


def shard_dir(work_dir: str, index: int, fingerprint: str) -> str:
    return fs.join(work_dir, "shards", f"{index:05d}-{fingerprint}")


def final_tar_name(index: int, sub: int, processes: int) -> str:
    """Shard `index` is fetched as up to `processes` img2dataset shards (one per worker
    process, so a shard's URLs are fetched in parallel); each becomes images/NNNNN.tar."""
    return f"images/{index * processes + sub:05d}.tar"


def read_done(directory: str) -> dict[str, Any] | None:
    """A shard's DONE.json if the shard is finished and its image tars are all still there (a run
    killed while moving tars into the stage directory leaves a shard that must be fetched again)."""
    path = fs.join(directory, DONE)
    if not fs.exists(path):
        return None
    try:
        done = fs.read_json(path)
    except (OSError, ValueError):
        return None
    attempt = fs.join(directory, done.get("attempt", ""))
    needed = ["kept.parquet", "rejects.parquet", *done.get("tars", {})]
    if not all(fs.exists(fs.join(attempt, name)) for name in needed):
        return None
    return done


def read_results(out_dir: str) -> tuple[Results, Checks]:
    """img2dataset's per-sample results by uid (with the sub-shard they are in), and our checks
    of the stored images by (sub-shard, key)."""
    results: Results = {}
    checks: Checks = {}
    for path in fs.glob(fs.join(out_dir, "*.parquet")):
        name = path.rsplit("/", 1)[-1]
        stem = name.split(".", 1)[0]
        if not stem.isdigit():
            continue
        sub = int(stem)
        with fs.open_file(path) as f:
            table = pq.read_table(f)
        if name.endswith(".checks.parquet"):
            for rec in table.to_pylist():
                checks[(sub, rec["key"])] = rec
            continue
        for rec in table.select([c for c in _RESULT_COLUMNS if c in table.column_names]).to_pylist():
            rec["_sub"] = sub
            results[str(rec.get("uid"))] = rec
    return results, checks


def decide(row: dict[str, Any], result: dict[str, Any] | None, checks: Checks,
           cfg: DownloadSection) -> dict[str, Any] | Drop:
    """The image facts of a kept row, or the Drop that makes it a reject."""
    if result is None:
        return Drop(NO_RESULT, "img2dataset returned no result for this URL (its shard failed)")
    if result.get("status") != "success":
        message = result.get("error_message") or f"status {result.get('status')}"
        if message.startswith(RATE_LIMITED_MARKER):
            return Drop(RATE_LIMITED, message)
        return Drop(images.classify_error(result.get("status"), message), message)
    ow, oh = result.get("original_width"), result.get("original_height")
    size = images.size_ok(ow, oh, cfg.min_side, cfg.max_aspect_ratio, cfg.max_pixels)
    if size is not True:
        return size.explained(f"original size {ow}x{oh}")
    check = checks.get((result["_sub"], result["key"]))
    if check is None:
        return Drop(NO_RESULT, f"image {result['key']} is missing from its tar")
    if check["reason"]:
        return Drop(check["reason"], f"the stored image {result['key']} failed: {check['reason']}")
    return {"_sub": result["_sub"], "key": result["key"],
            "width": result.get("width") or check["width"],
            "height": result.get("height") or check["height"],
            "original_width": ow, "original_height": oh,
            "sha256": check["sha256"], "phash": check["phash"]}


def write_parquet(path: str, rows: list[dict[str, Any]], schema: pa.Schema) -> None:
    table = pa.Table.from_pylist(rows, schema)
    with fs.open_file(path, "wb") as f:
        pq.write_table(table, f)
