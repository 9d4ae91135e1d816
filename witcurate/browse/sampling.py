"""Deterministic samples of a stage's rejects, one sample per reason, read part by part.

A sample is the `k` rows of a reason with the smallest hash of their uid: the same run always
shows the same rows, whatever order the parts were written in, and memory holds `k` rows per
reason, never a whole rejects table.
"""

from __future__ import annotations

import hashlib
import heapq
import json
from typing import Any, Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from witcurate.pipeline import fs
from witcurate.pipeline.tables import parquet_files

BATCH_ROWS = 65_536
REJECT_COLUMNS = ["uid", "reason", "detail", "record"]


def order_key(uid: str) -> int:
    """The sampling order of a row: a hash of its uid, so samples do not follow uid order."""
    return int.from_bytes(hashlib.blake2b(uid.encode("utf-8"), digest_size=8).digest(), "big")


class Smallest:
    """The `k` items with the smallest keys seen so far (equal keys: the first seen wins)."""

    def __init__(self, k: int):
        self.k = k
        self._heap: list[tuple[int, int, Any]] = []       # a max-heap through negated keys
        self._seen = 0

    def would_take(self, key: int) -> bool:
        return len(self._heap) < self.k or -key > self._heap[0][0]

    def offer(self, key: int, item: Any) -> None:
        self._seen += 1
        entry = (-key, -self._seen, item)
        if len(self._heap) < self.k:
            heapq.heappush(self._heap, entry)
        elif entry[0] > self._heap[0][0]:
            heapq.heapreplace(self._heap, entry)

    def items(self) -> list[Any]:
        """Smallest key first."""
        return [item for _, _, item in sorted(self._heap, reverse=True)]


def iter_record_batches(path: str, columns: list[str]) -> Iterator[pa.RecordBatch]:
    """One parquet part in Arrow batches, only the columns it has of `columns`."""
    with fs.open_file(path) as f:
        pf = pq.ParquetFile(f)
        present = [c for c in columns if c in pf.schema_arrow.names]
        yield from pf.iter_batches(columns=present, batch_size=BATCH_ROWS)


def iter_batches(path: str, columns: list[str]) -> Iterator[dict[str, list]]:
    """One parquet part in batches of plain lists, only the columns it has of `columns`."""
    for batch in iter_record_batches(path, columns):
        yield {name: batch.column(i).to_pylist() for i, name in enumerate(batch.schema.names)}


def parse_record(text: str | None) -> dict[str, Any]:
    """A reject's `record` column: the rejected row as JSON (an empty dict if it is not)."""
    try:
        record = json.loads(text) if text else {}
    except ValueError:
        return {}
    return record if isinstance(record, dict) else {}


def sample_rejects(stage_dir: str, per_reason: int) -> dict[str, list[dict[str, Any]]]:
    """{reason: up to `per_reason` reject rows (uid, reason, detail, record parsed)}, every
    reason found in the stage's rejects files. A part that does not read raises InputError
    through the caller's handling (see collect.py)."""
    best: dict[str, Smallest] = {}
    for path in parquet_files(fs.join(stage_dir, "rejects")):
        for batch in iter_batches(path, REJECT_COLUMNS):
            uids, reasons = batch.get("uid", []), batch.get("reason", [])
            details = batch.get("detail") or [""] * len(uids)
            records = batch.get("record") or [None] * len(uids)
            for uid, reason, detail, record in zip(uids, reasons, details, records):
                reason = reason or "(no reason)"
                bucket = best.setdefault(reason, Smallest(per_reason))
                key = order_key(uid or "")
                if bucket.would_take(key):
                    bucket.offer(key, {"uid": uid or "", "reason": reason, "detail": detail or "",
                                       "record": parse_record(record)})
    return {reason: bucket.items() for reason, bucket in sorted(best.items())}


def sample_rows(rows: Iterable[dict[str, Any]], k: int) -> list[dict[str, Any]]:
    """The `k` rows with the smallest uid hash, of rows already in memory."""
    best = Smallest(k)
    for row in rows:
        best.offer(order_key(str(row.get("uid") or "")), row)
    return best.items()
