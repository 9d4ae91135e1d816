"""The queries view: pairs per query, the queries at their cap, and a few samples of each.

Read from the cap stage's kept rows (each pair counts toward one query there), batch by batch:
memory holds a counter per query and `per_query` samples per query, and the view lists at most
`max_queries` queries (the most pairs first) with at most `max_samples` samples in all, so its
size is bounded whatever the run's size.
"""

from __future__ import annotations

import collections
from typing import Any

from witcurate.browse.run_state import StageState
from witcurate.browse.samples import make_sample
from witcurate.browse.sampling import Smallest, iter_batches, order_key
from witcurate.pipeline import fs
from witcurate.pipeline.tables import parquet_files

COLUMNS = ["uid", "url", "caption", "shard", "key", "clip_score", "query_id", "query"]


def _query_names(batch: dict[str, list]) -> list[str]:
    n = len(batch.get("uid", []))
    names = batch.get("query") or [None] * n
    ids = batch.get("query_id") or [None] * n
    return [str(q) if q is not None else f"query {i}" for q, i in zip(names, ids)]


def _scan(cap_dir: str, per_query: int) -> tuple[collections.Counter, dict[str, Smallest]]:
    counts: collections.Counter[str] = collections.Counter()
    best: dict[str, Smallest] = {}
    for path in parquet_files(cap_dir):
        for batch in iter_batches(path, COLUMNS):
            names = _query_names(batch)
            counts.update(names)
            for i, (uid, name) in enumerate(zip(batch["uid"], names)):
                bucket = best.get(name) or best.setdefault(name, Smallest(per_query))
                key = order_key(uid or "")
                if bucket.would_take(key):
                    bucket.offer(key, {column: values[i] for column, values in batch.items()})
    return counts, best


def samples_each(n_listed: int, per_query: int, max_samples: int) -> int:
    """Samples kept per listed query: `per_query`, fewer when that many queries would pass
    `max_samples` in all, and at least one (the first `max_samples` queries then have one)."""
    if n_listed == 0:
        return per_query
    return max(1, min(per_query, max_samples // n_listed))


def queries_view(out_root: str, cap: StageState, per_query: int, max_queries: int,
                 max_samples: int) -> dict[str, Any]:
    """{"queries": [{"q", "n", "at_cap", "samples"}...]} for the cap stage's kept pairs, the
    queries with the most pairs first, at most `max_queries` of them and `max_samples` samples."""
    cap_limit = (cap.manifest.get("config", {}).get("cap", {}) or {}).get("per_query")
    counts, best = _scan(fs.join(out_root, cap.name), per_query)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:max_queries]
    each = samples_each(len(ranked), per_query, max_samples)
    listed = []
    for rank, (name, n) in enumerate(ranked):
        rows = best[name].items()[:each] if rank * each < max_samples else []
        listed.append({"q": name, "n": n, "at_cap": bool(cap_limit) and n >= cap_limit,
                       "samples": [make_sample(row, cap.name) for row in rows]})
    return {"id": "queries", "type": "queries", "title": "Queries", "per_query_cap": cap_limit,
            "total_queries": len(counts), "total_pairs": sum(counts.values()),
            "at_cap": sum(1 for n in counts.values() if cap_limit and n >= cap_limit),
            "not_listed": max(0, len(counts) - max_queries), "queries": listed}
