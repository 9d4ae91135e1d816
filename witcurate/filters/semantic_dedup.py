"""Semantic duplicates (SemDeDup, Abbas et al. 2023) on plain values: inside one cluster of image
embeddings, pairs with cosine >= threshold are duplicates, their connected groups are found, and
one member of each group survives.

The survivor is the member with the best CLIP score (ties: the smallest uid). Members of a group
show nearly the same image, so what differs between them is mostly the caption; the best-scored
one keeps the caption that describes the image best. (SemDeDup keeps the one nearest to or
farthest from the centroid; among near-identical vectors that choice is decided by noise.)

A member can join its group through another member (a ~ b ~ c while a and c are further apart),
as in any single-link grouping; its reject then names the survivor and its own, lower, cosine to
it.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from witcurate.filters.base import Drop

SEMANTIC_DUPLICATE = "semantic_duplicate"
INVALID_EMBEDDING = "invalid_embedding"

# rows x columns of one similarity block: bounds memory to ~8 MB. Rows are taken 512 at a time
# so that blocks left of the diagonal, which hold no new pair, are skipped in a group of a
# thousand or two (measured: 15% to 25% faster than blocks of 1,024 rows).
ROW_BLOCK = 512
COLUMN_BLOCK = 4096


def embedding_problem(vector: np.ndarray | None, dim: int | None = None) -> str | None:
    """Why an embedding cannot be compared (None when it can): missing, of another size than
    the pool's, NaN or infinite values, or all zeros."""
    if vector is None or len(vector) == 0:
        return "no image embedding"
    if dim is not None and len(vector) != dim:
        return f"embedding of size {len(vector)}, the pool's is {dim}"
    values = np.asarray(vector, dtype=np.float32)
    if not np.isfinite(values).all():
        return "embedding holds NaN or infinite values"
    if not np.any(values):
        return "embedding is all zeros"
    return None


def _roots(parent: np.ndarray) -> np.ndarray:
    """Every element's root (parent pointers followed to the end), compressing in place."""
    while True:
        grand = parent[parent]
        if np.array_equal(grand, parent):
            return parent
        parent[:] = grand


def _union(parent: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
    """Join the sets of each pair (a[i], b[i]); a root always hooks under a smaller index, so
    every group's root is its smallest member."""
    while len(a):
        _roots(parent)
        ra, rb = parent[a], parent[b]
        apart = ra != rb
        lo, hi = np.minimum(ra[apart], rb[apart]), np.maximum(ra[apart], rb[apart])
        if not len(lo):
            return
        np.minimum.at(parent, hi, lo)
        a, b = lo, hi


def duplicate_groups(vectors: np.ndarray, threshold: float) -> np.ndarray:
    """For each vector, the smallest index of its connected group, where two vectors are joined
    when their cosine is >= threshold (vectors unit length). Blocked: the full similarity
    matrix is never held."""
    x = np.asarray(vectors, dtype=np.float32)
    n = len(x)
    parent = np.arange(n, dtype=np.int64)
    for r0 in range(0, n, ROW_BLOCK):
        rows = x[r0:r0 + ROW_BLOCK]
        for c0 in range(r0, n, COLUMN_BLOCK):
            sims = rows @ x[c0:c0 + COLUMN_BLOCK].T
            if c0 == r0:                        # each row's cosine to itself is no pair
                mine = np.arange(min(sims.shape))
                sims[mine, mine] = -np.inf
            # Few rows have a duplicate: find them with one reduction, and look for the pairs
            # only there (nonzero over the whole block's mask was a fifth of the comparison).
            hit = np.flatnonzero(sims.max(axis=1) >= threshold)
            if not len(hit):
                continue
            ii, jj = np.nonzero(sims[hit] >= threshold)
            ii, jj = hit[ii] + r0, jj + c0
            upper = jj > ii
            if upper.any():
                _union(parent, ii[upper], jj[upper])
    return _roots(parent).copy()


def survivor_order(uids: Sequence[str], scores: Sequence[float | None]) -> list[int]:
    """Indices best first: highest CLIP score (a missing or NaN score last), then smallest uid."""
    def rank(i: int):
        s = scores[i]
        good = s is not None and not math.isnan(s)
        return (0 if good else 1, -(s if good else 0.0), uids[i])
    return sorted(range(len(uids)), key=rank)


def resolve_duplicates(uids: Sequence[str], scores: Sequence[float | None], vectors: np.ndarray,
                       threshold: float) -> dict[int, tuple[int, float]]:
    """{index of each non-survivor: (index of its group's survivor, its cosine to it)}."""
    x = np.asarray(vectors, dtype=np.float32)
    labels = duplicate_groups(x, threshold)
    if len(np.unique(labels)) == len(labels):
        return {}
    best_of: dict[int, int] = {}
    for i in survivor_order(uids, scores):
        best_of.setdefault(int(labels[i]), i)
    out = {}
    for i, label in enumerate(labels.tolist()):
        survivor = best_of[label]
        if survivor != i:
            out[i] = (survivor, float(x[i] @ x[survivor]))
    return out


def duplicate_drop(survivor_uid: str, cosine: float, threshold: float, cluster: str) -> Drop:
    """The Drop of a non-survivor, its detail naming the survivor."""
    via = "" if cosine >= threshold else " (joined through another member of the group)"
    return Drop(SEMANTIC_DUPLICATE, f"semantic duplicate of {survivor_uid}: cosine {cosine:.4f}, "
                                    f"threshold {threshold:g}, cluster {cluster}{via}")
