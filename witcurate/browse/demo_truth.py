"""Demo mode only: tag each sample with the kind of noise the demo world injected into it.

A run is a demo run when `witcurate run` judged it against the world (OUT/demo_truth.json) or its
saved config says `run.demo: true`. The world's truth file is `--truth PATH`, or
`demo.root/truth/truth.parquet` from the run's saved config. Nothing else in the report reads it,
and outside demo mode the report says nothing about it.
"""

from __future__ import annotations

from typing import Any

import pyarrow.parquet as pq

from witcurate.browse.samples import make_sample
from witcurate.browse.sampling import Smallest, iter_batches, order_key
from witcurate.browse.views import view_id
from witcurate.pipeline import fs
from witcurate.pipeline.tables import parquet_files

CLEAN = "clean"


def is_demo_run(out_root: str, config: dict[str, Any] | None) -> bool:
    if fs.exists(fs.join(out_root, "demo_truth.json")):
        return True
    return bool(config and (config.get("run") or {}).get("demo"))


def truth_path(config: dict[str, Any] | None, given: str | None) -> str | None:
    if given:
        return given
    root = ((config or {}).get("demo") or {}).get("root")
    return fs.join(root, "truth", "truth.parquet") if root else None


def load_kinds(path: str) -> dict[str, str]:
    """url -> injected kind, from the world's truth file."""
    with fs.open_file(path) as f:
        table = pq.read_table(f, columns=["url", "kind"])
    return dict(zip(table.column("url").to_pylist(), table.column("kind").to_pylist()))


def tag_samples(views: list[dict[str, Any]], kinds: dict[str, str]) -> None:
    """Set `tag` on every sample (and survivor) whose URL the truth knows."""
    for view in views:
        for sample in _all_samples(view):
            for s in (sample, sample.get("survivor")):
                if isinstance(s, dict) and s.get("url") in kinds:
                    s["tag"] = f"demo world: {kinds[s['url']]}"


def _all_samples(view: dict[str, Any]):
    yield from view.get("samples", [])
    yield from view.get("kept", [])
    yield from view.get("rejected", [])
    for query in view.get("queries", []):
        yield from query.get("samples", [])


def shipped_by_kind(out_root: str, kinds: dict[str, str], per_kind: int) -> list[dict[str, Any]]:
    """One view per injected kind other than clean: samples of it that the cap stage kept, the
    pairs that go into the dataset's shards."""
    best: dict[str, Smallest] = {}
    totals: dict[str, int] = {}
    for path in parquet_files(fs.join(out_root, "cap")):
        for batch in iter_batches(path, ["uid", "url", "caption", "shard", "key", "clip_score"]):
            for i, url in enumerate(batch.get("url", [])):
                kind = kinds.get(url)
                if kind is None or kind == CLEAN:
                    continue
                totals[kind] = totals.get(kind, 0) + 1
                row = {name: batch[name][i] for name in batch}
                best.setdefault(kind, Smallest(per_kind)).offer(order_key(str(row.get("uid") or "")), row)
    return [{"id": view_id("kind", kind), "type": "samples", "title": f"Kept to the end: injected {kind}",
             "kind": kind, "total": totals[kind], "samples": [make_sample(r, "cap") for r in best[kind].items()],
             "empty": "no sample of this kind reached the dataset"} for kind in sorted(best)]
