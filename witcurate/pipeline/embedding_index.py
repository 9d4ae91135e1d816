"""The broadcast form of the join of kept rows to their saved embeddings (embeddings.py).

When the pool's embeddings are few enough (at most INDEX_MAX_UIDS), every worker gets one index
of where each uid was saved, as a side input, and locates its rows where they were read:

    embeddings' uid column, per slice --CombineGlobally--> UidIndex (sorted by uid hash)
    kept rows (parquet batches) --locate in the index (side input)--> (slice, rows saved there)

That is one shuffle of the rows fewer than the join by uid bucket (two), which every row crosses
twice, pickled and copied each time: at 100,000 pairs the join's steps took 1.5 s of a 10 s stage.
The index holds uids and places, never vectors (52 bytes a 32-character uid: 104 MB at the
bound), so a pool beyond it goes back to the join by bucket, which no worker has to hold whole.

Lookups go by the uid's 64-bit hash (kmeans.sample_key, which the rows need for the k-means
sample anyway), and every hit is checked against the uid itself, so two uids whose hashes collide
are still told apart.
"""

from __future__ import annotations

from dataclasses import dataclass

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from witcurate.filters.kmeans import sample_keys

INDEX_MAX_UIDS = 2_000_000      # saved embeddings up to which the index is sent to every worker


@dataclass
class UidIndex:
    """Where each saved uid is, sorted by (uid hash, slice, row): a uid saved twice is found at
    its first place, as in the join by bucket."""
    keys: np.ndarray            # uint64 uid hashes, ascending
    uids: pa.Array              # the uids, in the same order
    slices: np.ndarray          # int32: the slice (row group) each was saved in
    rows: np.ndarray            # int32: its row there

    def locate(self, uids: pa.Array, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(slice, row) of each uid's first place; -1 for a uid that was never saved."""
        pos = np.searchsorted(self.keys, keys, side="left")
        inside = pos < len(self.keys)
        hit = np.zeros(len(keys), dtype=bool)
        hit[inside] = self.keys[pos[inside]] == keys[inside]
        candidates = np.flatnonzero(hit)
        same = pc.equal(self.uids.take(pa.array(pos[candidates])), uids.take(pa.array(candidates)))
        for i in candidates[~same.to_numpy(zero_copy_only=False)].tolist():
            pos[i], hit[i] = self._scan(uids[i].as_py(), keys[i], int(pos[i]))
        slice_of = np.full(len(keys), -1, dtype=np.int64)
        row_of = np.full(len(keys), -1, dtype=np.int64)
        slice_of[hit], row_of[hit] = self.slices[pos[hit]], self.rows[pos[hit]]
        return slice_of, row_of

    def _scan(self, uid: str, key: np.uint64, start: int) -> tuple[int, bool]:
        """Two uids share a hash (about once in 10^10 pairs at a million uids): look through the
        run of that hash for this uid."""
        at = start
        while at < len(self.keys) and self.keys[at] == key:
            if self.uids[at].as_py() == uid:
                return at, True
            at += 1
        return start, False


def slice_part(index: int, slices) -> tuple[np.ndarray, pa.Array, np.ndarray, np.ndarray]:
    """One slice's share of the index: its uids' hashes, the uids, the slice, their rows."""
    uids = slices[index].read("uid").combine_chunks()
    n = len(uids)
    return (sample_keys(uids.to_pylist()), uids, np.full(n, index, dtype=np.int32),
            np.arange(n, dtype=np.int32))


class BuildIndex(beam.CombineFn):
    """Slice parts -> one UidIndex. The accumulator keeps the parts; they are sorted together once."""

    def create_accumulator(self):
        return []

    def add_input(self, acc, part):
        return acc + [part]

    def merge_accumulators(self, accs):
        return [part for acc in accs for part in acc]

    def extract_output(self, acc):
        if not acc:
            return UidIndex(np.zeros(0, np.uint64), pa.array([], pa.string()), np.zeros(0, np.int32),
                            np.zeros(0, np.int32))
        keys, slices, rows = (np.concatenate([part[i] for part in acc]) for i in (0, 2, 3))
        uids = pa.concat_arrays([part[1] for part in acc])
        order = np.lexsort((rows, slices, keys))
        return UidIndex(keys[order], uids.take(pa.array(order)), slices[order], rows[order])


def uid_index(pipeline: beam.Pipeline, slices) -> beam.PCollection:
    """The pool's UidIndex, one element, for an AsSingleton side input."""
    return (pipeline
            | "Slices" >> beam.Create(range(len(slices)))
            | "SliceUids" >> beam.Map(slice_part, slices)
            | "Index" >> beam.CombineGlobally(BuildIndex()))
