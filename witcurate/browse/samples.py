"""A sample as the report shows it: one image-text pair, where its image is, and why it has none.

Samples are plain dicts, written to the report's data files as JSON. Keys starting with `_` are
the builder's own (where the image lives in the download stage's tars) and never reach a page.
"""

from __future__ import annotations

import math
import re
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from witcurate.pipeline import fs
from witcurate.pipeline.tables import parquet_files
from witcurate.browse.sampling import iter_record_batches

# Stages whose rows were never downloaded: their samples have no image at all.
BEFORE_DOWNLOAD = ("queries", "ingest", "match", "balance")
SURVIVOR = re.compile(r"duplicate of ([0-9A-Za-z_.:-]+)")
ROW_COLUMNS = ["uid", "url", "caption", "shard", "key", "clip_score"]


def make_sample(row: dict[str, Any], stage: str, detail: str = "") -> dict[str, Any]:
    """A sample from a kept row or a reject's record. `_img` is (shard, key) when the download
    stage stored its image; otherwise `note` says why there is none."""
    sample: dict[str, Any] = {"uid": str(row.get("uid") or ""), "caption": _text(row.get("caption")),
                              "url": _text(row.get("url"))}
    if detail:
        sample["detail"] = detail
    score = row.get("clip_score")
    if isinstance(score, (int, float)) and math.isfinite(score):
        sample["score"] = round(float(score), 4)
    if row.get("shard") and row.get("key") is not None:
        sample["_img"] = (str(row["shard"]), str(row["key"]))
    elif stage in BEFORE_DOWNLOAD:
        sample["note"] = "no image: dropped before download"
    elif stage == "download":
        sample["note"] = "no image: the download stage did not store it"
    else:
        sample["note"] = "no image: the row names no image shard"
    return sample


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def public(sample: dict[str, Any]) -> dict[str, Any]:
    """The sample as a page sees it: without the builder's own keys."""
    out = {k: v for k, v in sample.items() if not k.startswith("_")}
    if isinstance(out.get("survivor"), dict):
        out["survivor"] = public(out["survivor"])
    return out


def survivor_uid(detail: str) -> str | None:
    """The survivor a duplicate's detail names ("duplicate of UID (Hamming 2)")."""
    found = SURVIVOR.search(detail or "")
    return found.group(1) if found else None


def rows_by_uid(stage_dir: str, uids: set[str], columns: list[str] = ROW_COLUMNS) -> dict[str, dict[str, Any]]:
    """The kept rows of a stage whose uid is in `uids`, read part by part with only `columns`."""
    if not uids:
        return {}
    wanted = pa.array(sorted(uids), pa.string())
    found: dict[str, dict[str, Any]] = {}
    for path in parquet_files(stage_dir):
        for batch in iter_record_batches(path, columns):
            hits = batch.filter(pc.is_in(batch.column("uid"), value_set=wanted))
            for row in hits.to_pylist():
                found.setdefault(row["uid"], row)
        if len(found) == len(uids):
            break
    return found


def attach_survivors(out_root: str, samples: list[dict[str, Any]]) -> None:
    """Put each duplicate's survivor beside it (read from dedupe's kept rows)."""
    wanted = {uid for s in samples if (uid := survivor_uid(s.get("detail", "")))}
    rows = rows_by_uid(fs.join(out_root, "dedupe"), wanted)
    for s in samples:
        uid = survivor_uid(s.get("detail", ""))
        if uid is None:
            continue
        if uid in rows:
            s["survivor"] = make_sample(rows[uid], "dedupe")
        else:
            s["survivor"] = {"uid": uid, "caption": "", "url": "",
                             "note": "the survivor is not among dedupe's kept rows"}
