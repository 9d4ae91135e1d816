"""Exact and near-duplicate decisions on plain values: LSH banding over 64-bit perceptual hashes,
and which member of a duplicate group survives (the groups themselves are connected components
found in Beam by witcurate.pipeline.components).

Near-duplicate search without all-pairs comparison: the 64 bits are split into `bands`
contiguous bands; two hashes are candidates only if they agree on a whole band, and candidates
are verified with the exact Hamming distance. By the pigeonhole principle, two hashes at
distance <= k differ in at most k bands, so with bands >= k + 1 they always agree on one: recall
is exact, not probabilistic. Fewer, wider bands make smaller buckets (faster) but can miss pairs
whose differing bits are spread over every band.

A pair agreeing on several bands is reported only from the first band they agree on, so every
verified pair comes out of exactly one bucket (no duplicate edges to collect).
"""

from __future__ import annotations

import functools
from typing import Iterable, Sequence

import numpy as np

EXACT_DUPLICATE = "exact_duplicate"
NEAR_DUPLICATE = "near_duplicate"
EVAL_DUPLICATE = "duplicates_eval_set"

_BLOCK = 1024       # rows per block of pairwise comparisons (bounds memory to BLOCK x n)


def hamming(a: int, b: int) -> int:
    return (int(a) ^ int(b)).bit_count()


@functools.lru_cache(maxsize=None)
def band_layout(bands: int) -> tuple[tuple[int, int], ...]:
    """(shift, width) of each band, covering bits 0..63 with widths differing by at most one."""
    if not 1 <= bands <= 64:
        raise ValueError(f"bands must be between 1 and 64, got {bands}")
    base, extra = divmod(64, bands)
    layout, shift = [], 0
    for i in range(bands):
        width = base + (1 if i < extra else 0)
        layout.append((shift, width))
        shift += width
    return tuple(layout)


def band_keys(h: int, bands: int) -> list[tuple[int, int]]:
    """The (band index, band value) buckets a hash falls in."""
    h = int(h)
    return [(i, (h >> shift) & ((1 << width) - 1)) for i, (shift, width) in enumerate(band_layout(bands))]


def recall_is_exact(max_hamming: int, bands: int) -> bool:
    return bands >= max_hamming + 1


def _first_agreeing_band(xor: np.ndarray, layout: Sequence[tuple[int, int]]) -> np.ndarray:
    """For each XOR of a pair, the index of the first band where the pair agrees (len(layout)
    when none)."""
    first = np.full(xor.shape, len(layout), dtype=np.int64)
    for i in reversed(range(len(layout))):
        shift, width = layout[i]
        zero = ((xor >> np.uint64(shift)) & np.uint64((1 << width) - 1)) == 0
        first[zero] = i
    return first


def verify_distinct(values: np.ndarray, band: int, layout: Sequence[tuple[int, int]],
                    max_hamming: int) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (i < j) of DISTINCT hashes in one bucket of `band` within `max_hamming`, keeping only
    the pairs for which `band` is the first band they agree on. Returns two index arrays."""
    values = np.asarray(values, dtype=np.uint64)
    m = len(values)
    if m < 2:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    out_i, out_j = [], []
    for start in range(0, m - 1, _BLOCK):
        block = values[start:start + _BLOCK]
        rest = values[start:]
        dist = np.bitwise_count(block[:, None] ^ rest[None, :])
        rows, cols = np.nonzero(dist <= max_hamming)
        keep = cols > rows                      # upper triangle: col index is offset by `start`
        rows, cols = rows[keep] + start, cols[keep] + start
        if len(rows) == 0:
            continue
        first = _first_agreeing_band(values[rows] ^ values[cols], layout)
        keep = first == band
        rows, cols = rows[keep], cols[keep]
        out_i.append(rows)
        out_j.append(cols)
    if not out_i:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    return np.concatenate(out_i), np.concatenate(out_j)


def bucket_edges(items: Iterable[tuple[str, int]], band: int, bands: int,
                 max_hamming: int) -> list[tuple[str, str]]:
    """Edges among the (id, phash) items of one LSH bucket (all share band `band`'s value).

    Items with identical hashes are joined in a star from their smallest id, and only in band 0
    (identical hashes agree on every band); distinct hashes within `max_hamming` are joined
    through those representatives. The connected components equal those of all verified pairs.
    """
    by_value: dict[int, list[str]] = {}
    for ident, h in items:
        by_value.setdefault(int(h), []).append(ident)
    edges: list[tuple[str, str]] = []
    reps: list[str] = []
    values: list[int] = []
    for value in sorted(by_value):
        ids = sorted(by_value[value])
        reps.append(ids[0])
        values.append(value)
        if band == 0:
            edges.extend((ids[0], other) for other in ids[1:])
    if len(values) > 1:
        ii, jj = verify_distinct(np.array(values, dtype=np.uint64), band, band_layout(bands), max_hamming)
        edges.extend((reps[i], reps[j]) for i, j in zip(ii.tolist(), jj.tolist()))
    return edges


def near_duplicate_pairs(hashes: np.ndarray, max_hamming: int, bands: int) -> np.ndarray:
    """All-in-memory near-duplicate search over an array of uint64 hashes: an (E, 2) array of
    index edges whose connected components are the near-duplicate groups (distance <=
    max_hamming). The same banding and verification as the Beam stage, on one core."""
    hashes = np.asarray(hashes, dtype=np.uint64)
    layout = band_layout(bands)
    uniq, first_index, inverse = np.unique(hashes, return_index=True, return_inverse=True)
    parts: list[np.ndarray] = []
    # identical hashes: star edges to the first occurrence
    dup = np.flatnonzero(first_index[inverse] != np.arange(len(hashes)))
    if len(dup):
        parts.append(np.stack([first_index[inverse[dup]], dup], axis=1))
    for band, (shift, width) in enumerate(layout):
        keys = (uniq >> np.uint64(shift)) & np.uint64((1 << width) - 1)
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
        cuts = np.flatnonzero(sorted_keys[1:] != sorted_keys[:-1]) + 1
        starts = np.concatenate([[0], cuts])
        ends = np.concatenate([cuts, [len(uniq)]])
        multi = np.flatnonzero(ends - starts > 1)
        for s, e in zip(starts[multi].tolist(), ends[multi].tolist()):
            idx = order[s:e]
            ii, jj = verify_distinct(uniq[idx], band, layout, max_hamming)
            if len(ii):
                parts.append(np.stack([first_index[idx[ii]], first_index[idx[jj]]], axis=1))
    if not parts:
        return np.zeros((0, 2), dtype=np.int64)
    return np.concatenate(parts).astype(np.int64)


def brute_force_pairs(hashes: np.ndarray, max_hamming: int) -> np.ndarray:
    """Every pair (i < j) within `max_hamming`, by comparing all pairs: the reference the banded
    search is checked against, and the benchmark's baseline."""
    hashes = np.asarray(hashes, dtype=np.uint64)
    out = []
    for start in range(0, len(hashes), _BLOCK):
        block = hashes[start:start + _BLOCK]
        dist = np.bitwise_count(block[:, None] ^ hashes[None, :])
        rows, cols = np.nonzero(dist <= max_hamming)
        rows = rows + start
        keep = cols > rows
        out.append(np.stack([rows[keep], cols[keep]], axis=1))
    return np.concatenate(out) if out else np.zeros((0, 2), dtype=np.int64)


# ---------------------------------------------------------------- survivors ------------------

# A node, on the wire and here: (uid, sha256, pixels, phash), pixels being original_width *
# original_height. Plain tuples keep Beam's coders fast.
UID, SHA256, PIXELS, PHASH = range(4)


def survivor_rank(node: tuple) -> tuple[int, str]:
    """Smaller is better: the highest resolution, then the smallest uid. The survivor of a
    duplicate group is its smallest node by this rank, so it does not depend on edge order."""
    return (-node[PIXELS], node[UID])


def duplicate_verdict(member: tuple, survivor: tuple) -> tuple[str, int]:
    """(reason, Hamming distance to the survivor) for a group member that is not the survivor.
    A member with the survivor's sha256 is an exact duplicate, others near ones; a member can
    be further than max_hamming from the survivor when it joined through another member."""
    reason = EXACT_DUPLICATE if member[SHA256] == survivor[SHA256] else NEAR_DUPLICATE
    return reason, hamming(member[PHASH], survivor[PHASH])


class EvalIndex:
    """The hashes of an evaluation set, banded like the pool, to find pool images that
    duplicate one of them (so a model trained on the pool is not tested on its own images)."""

    def __init__(self, items: Iterable[tuple[str, int]], max_hamming: int, bands: int):
        self.max_hamming = max_hamming
        self.bands = bands
        self.size = 0
        self.tables: dict[tuple[int, int], list[tuple[int, str]]] = {}
        for name, h in items:
            self.size += 1
            for key in band_keys(h, bands):
                self.tables.setdefault(key, []).append((int(h), name))

    def match(self, h: int) -> tuple[str, int] | None:
        """The nearest evaluation image within max_hamming as (name, distance), else None;
        ties go to the smallest name."""
        best: tuple[int, str] | None = None
        for key in band_keys(h, self.bands):
            for other, name in self.tables.get(key, ()):
                d = hamming(h, other)
                if d <= self.max_hamming and (best is None or (d, name) < best):
                    best = (d, name)
        return None if best is None else (best[1], best[0])
