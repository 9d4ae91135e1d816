"""What the card says, read back from what the run wrote.

Each stage's `_SUCCESS.json` (counts, reject reasons, wall time, throughput), the score and cap
stages' tables (scores, per-query counts before the cap) and the shards' own sidecars and
manifest. A stage directory that is missing (a standalone `witcurate shards` run, a run that
skipped a stage) reads as None, and the card says so instead of guessing.
"""

from __future__ import annotations

import collections
import json
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from witcurate.pipeline import fs
from witcurate.pipeline.runner import MANIFEST
from witcurate.pipeline.tables import parquet_files, read_table, reject_counts

# Stages whose counts are records flowing toward the shards (the waterfall), in run order.
RECORD_STAGES = ("ingest", "match", "balance", "download", "dedupe", "score", "semdedup", "target",
                 "cap", "shards")
TABLE_STAGES = ("queries", "ingest", "match", "balance", "download", "dedupe", "scorer", "score",
                "semdedup", "target", "cap", "shards")
# At most this many reject records are parsed for the score histogram (it is a histogram).
MAX_REJECT_RECORDS = 500_000


@dataclass
class CardData:
    """A run as the card sees it: each stage's manifest (None where absent) and the shards'."""
    manifests: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    sidecars: pa.Table | None = None
    shards_manifest: dict[str, Any] | None = None


def _stage_manifest(out_root: str, name: str) -> dict[str, Any] | None:
    path = fs.join(out_root, name, MANIFEST)
    try:
        return fs.read_json(path) if fs.exists(path) else None
    except (OSError, ValueError):
        return None


def _shards_manifest_as_stage(shards_dir: str, manifest: dict[str, Any] | None) -> dict[str, Any] | None:
    """The shards row while the stage is still running (its _SUCCESS.json comes after the card)."""
    landed_path = fs.join(shards_dir, MANIFEST)      # present when the card is rebuilt later
    if fs.exists(landed_path):
        return fs.read_json(landed_path)
    if manifest is None:
        return None
    reasons = reject_counts(shards_dir)
    kept = manifest["totals"]["samples"]
    rejected = sum(reasons.values())
    return {"stage": "shards", "counts": {"in": kept + rejected, "kept": kept, "rejected": rejected,
                                          "reasons": reasons},
            "wall_seconds": None, "throughput": {"units": "samples", "per_second": None}}


# What the card plots from the sidecars; not the text columns, which would hold every caption
# and URL of the dataset in memory.
SIDECAR_COLUMNS = ["query_id", "query", "clip_score", "width", "height", "original_width", "original_height"]


def _read_sidecars(shards_dir: str) -> pa.Table | None:
    tables = []
    for path in parquet_files(shards_dir, "[0-9]*.parquet"):
        with fs.open_file(path) as f:
            tables.append(pq.read_table(f, columns=SIDECAR_COLUMNS, read_dictionary=["query"]))
    return pa.concat_tables(tables, promote_options="default") if tables else None


def collect(out_root: str, shards_dir: str) -> CardData:
    data = CardData()
    manifest_path = fs.join(shards_dir, "manifest.json")
    data.shards_manifest = fs.read_json(manifest_path) if fs.exists(manifest_path) else None
    for name in TABLE_STAGES:
        if name == "shards":
            data.manifests[name] = _shards_manifest_as_stage(shards_dir, data.shards_manifest)
        else:
            data.manifests[name] = _stage_manifest(out_root, name)
    data.sidecars = _read_sidecars(shards_dir)
    return data


def _reject_records(stage_dir: str, limit: int = MAX_REJECT_RECORDS):
    seen = 0
    for path in parquet_files(fs.join(stage_dir, "rejects")):
        with fs.open_file(path) as f:
            col = pq.read_table(f, columns=["record"]).column("record")
        for text in col.to_pylist():
            if seen >= limit:
                return
            seen += 1
            try:
                yield json.loads(text or "{}")
            except ValueError:
                continue


def query_counts(out_root: str, data: CardData) -> tuple[dict[int, int], dict[int, int], str] | None:
    """(before, after, how `before` was counted) per query id, or None if nothing to count.

    Before the cap a pair counts toward its assigned query when the cap stage recorded it (its
    kept rows and its rejects' records carry `query_id`); otherwise toward every query it matches
    among the score stage's kept rows (an upper bound, said so on the plot).
    """
    after: collections.Counter[int] = collections.Counter()
    if data.sidecars is not None:
        after.update(q for q in data.sidecars.column("query_id").to_pylist() if q is not None)
    cap_dir = fs.join(out_root, "cap")
    if data.manifests.get("cap") is not None:
        kept = read_table(cap_dir, columns=["query_id"])
        before: collections.Counter[int] = collections.Counter()
        if kept is not None:
            before.update(q for q in kept.column("query_id").to_pylist() if q is not None)
        complete = True
        for record in _reject_records(cap_dir, limit=10**12):
            qid = record.get("query_id")
            if qid is None:
                complete = False
                break
            before[int(qid)] += 1
        if complete:
            return dict(before), dict(after), "pairs assigned to the query (its rarest match), entering the cap"
    score_dir = fs.join(out_root, "score")
    if data.manifests.get("score") is not None:
        kept = read_table(score_dir, columns=["query_ids"])
        before = collections.Counter()
        if kept is not None:
            for ids in kept.column("query_ids").to_pylist():
                before.update(ids or [])
        return dict(before), dict(after), "pairs matching the query after scoring (a pair counts for each query it matches)"
    if after:
        return {}, dict(after), "no cap or score stage in this run: after-cap counts only"
    return None


def query_names(out_root: str, data: CardData) -> dict[int, str]:
    names: dict[int, str] = {}
    if data.manifests.get("queries") is not None:
        table = read_table(fs.join(out_root, "queries"), columns=["query_id", "query"])
        if table is not None:
            names.update(zip(table.column("query_id").to_pylist(), table.column("query").to_pylist()))
    if data.sidecars is not None:
        names.update(zip(data.sidecars.column("query_id").to_pylist(), data.sidecars.column("query").to_pylist()))
    return names


def score_values(out_root: str, data: CardData) -> tuple[list[float], list[float], float | None]:
    """(scores the score stage kept, scores it rejected, the threshold it used)."""
    kept: list[float] = []
    rejected: list[float] = []
    threshold = None
    manifest = data.manifests.get("score")
    if manifest is not None:
        table = read_table(fs.join(out_root, "score"), columns=["clip_score"])
        if table is not None:
            kept = [v for v in table.column("clip_score").to_pylist() if v is not None]
        for record in _reject_records(fs.join(out_root, "score")):
            v = record.get("clip_score")
            if isinstance(v, (int, float)):
                rejected.append(float(v))
        # The score stage records the threshold it applied (for a top fraction: the lowest kept
        # score); older or foreign manifests may only have the configured one.
        for value in (manifest.get("threshold_used"), manifest.get("threshold"),
                      (manifest.get("config", {}).get("score") or {}).get("threshold")):
            if isinstance(value, (int, float)):
                threshold = float(value)
                break
    return kept, rejected, threshold
