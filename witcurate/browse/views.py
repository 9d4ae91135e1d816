"""The report's data views: each stage x reason's rejects, and the two sides of the CLIP threshold.

A view is a dict written to `data/<id>.js`; its `samples` are built by samples.make_sample.
"""

from __future__ import annotations

import hashlib
import math
import re
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from witcurate.browse.run_state import StageState
from witcurate.browse.samples import attach_survivors, make_sample
from witcurate.browse.sampling import iter_record_batches, parse_record, sample_rejects
from witcurate.errors import InputError
from witcurate.pipeline import fs
from witcurate.pipeline.tables import parquet_files

SAFE_ID = re.compile(r"^[A-Za-z0-9_.-]{1,80}$")
SCORE_IN_RECORD = r'"clip_score":\s*(?P<score>-?[0-9][0-9.eE+-]*)'
DUPLICATE_STAGE = "dedupe"


def view_id(*parts: str) -> str:
    """A file- and URL-safe id: the parts joined by '-', or a hash where a part is not safe."""
    safe = [p if SAFE_ID.match(p) else "h" + hashlib.sha1(p.encode("utf-8")).hexdigest()[:12] for p in parts]
    return "-".join(safe)


def reject_views(out_root: str, state: StageState, per_reason: int) -> tuple[list[dict[str, Any]], str]:
    """One view per reason of a finished stage (the manifest's reasons and any the files hold),
    and a problem in words when the rejects files do not read."""
    stage_dir = fs.join(out_root, state.name)
    problem = ""
    try:
        found = sample_rejects(stage_dir, per_reason)
    except (InputError, OSError, ValueError) as e:
        found, problem = {}, f"its rejects files do not read ({type(e).__name__}: {str(e)[:160]})"
    counted = state.counts.get("reasons") if isinstance(state.counts.get("reasons"), dict) else {}
    views = []
    for reason in sorted(set(counted) | set(found)):
        rows = found.get(reason, [])
        samples = [make_sample(r["record"] | {"uid": r["uid"]}, state.name, r["detail"]) for r in rows]
        views.append({"id": view_id("rejects", state.name, reason), "type": "samples",
                      "title": f"{state.name}: {reason}", "stage": state.name, "reason": reason,
                      "total": _count(counted.get(reason), len(rows)), "samples": samples,
                      "empty": problem or "the rejects files hold no row with this reason"})
    threshold = _threshold(state.manifest)
    if threshold is not None:                         # the CLIP filter's rejects: scores against it
        for view in views:
            view["threshold"] = threshold
    if state.name == DUPLICATE_STAGE:                  # one read of dedupe's kept rows for all reasons
        attach_survivors(out_root, [s for view in views for s in view["samples"]])
    return views, problem


def _threshold(manifest: dict[str, Any]) -> float | None:
    """The score stage's threshold (set, or the cutoff of a top fraction), if its manifest has one."""
    value = manifest.get("threshold_used")
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _count(value: Any, default: int) -> int:
    return value if isinstance(value, int) else default


def _lowest_kept(score_dir: str, k: int) -> list[dict[str, Any]]:
    columns = ["uid", "url", "caption", "shard", "key", "clip_score"]
    best: list[pa.Table] = []
    for path in parquet_files(score_dir):
        for batch in iter_record_batches(path, columns):
            scores = pc.cast(batch.column("clip_score"), pa.float64())
            table = pa.Table.from_batches([batch]).filter(pc.and_kleene(pc.is_valid(scores), pc.is_finite(scores)))
            best.append(table.take(pc.select_k_unstable(
                table, k, sort_keys=[("clip_score", "ascending"), ("uid", "ascending")])))
    if not best:
        return []
    merged = pa.concat_tables(best, promote_options="default")
    merged = merged.take(pc.sort_indices(merged, sort_keys=[("clip_score", "ascending"), ("uid", "ascending")]))
    return merged.slice(0, k).to_pylist()


def _highest_rejected(score_dir: str, k: int) -> list[dict[str, Any]]:
    """Score's rejects that carry a score, highest first: the score is found in the record's
    JSON text without parsing every record, then the chosen few are parsed."""
    best: list[tuple[float, str, str, str]] = []
    for path in parquet_files(fs.join(score_dir, "rejects")):
        for batch in iter_record_batches(path, ["uid", "detail", "record"]):
            found = pc.extract_regex(batch.column("record"), SCORE_IN_RECORD)
            scores = pc.cast(pc.struct_field(found, [0]), pa.float64(), safe=False)
            table = pa.table({"score": scores, "uid": batch.column("uid"), "detail": batch.column("detail"),
                              "record": batch.column("record")}).filter(pc.is_valid(scores))
            top = table.take(pc.select_k_unstable(table, k, sort_keys=[("score", "descending"), ("uid", "ascending")]))
            best.extend(zip(top["score"].to_pylist(), top["uid"].to_pylist(), top["detail"].to_pylist(),
                            top["record"].to_pylist()))
    best.sort(key=lambda t: (-t[0], t[1]))
    return [parse_record(record) | {"uid": uid, "detail": detail or ""} for _, uid, detail, record in best[:k]]


def score_view(out_root: str, state: StageState, per_side: int) -> dict[str, Any]:
    """The kept pairs with the lowest CLIP scores and the rejected with the highest."""
    score_dir = fs.join(out_root, state.name)
    manifest = state.manifest
    kept = [make_sample(r, "score") for r in _lowest_kept(score_dir, per_side)]
    rejected = [make_sample(r, "score", r.get("detail", "")) for r in _highest_rejected(score_dir, per_side)]
    rule = manifest.get("keep_rule") if isinstance(manifest.get("keep_rule"), dict) else {}
    return {"id": "score", "type": "score", "title": "Both sides of the CLIP-score threshold",
            "threshold": _threshold(manifest),
            "rule": rule, "model": str(manifest.get("model", "")),
            "kept_total": _count(state.counts.get("kept"), len(kept)),
            "rejected_total": _count(state.counts.get("rejected"), len(rejected)),
            "kept": kept, "rejected": rejected}
