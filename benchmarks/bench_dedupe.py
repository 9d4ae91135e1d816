"""Dedupe: near-duplicate search over 1,000,000 64-bit perceptual hashes on one core.

Ours: the LSH-banded search of witcurate.filters.dedupe (bands = max_hamming + 1, so it finds every
pair within the distance), in two forms:
  * `near_duplicate_pairs`, the whole-array search;
  * the stage's path without Beam: (band, value) buckets grouped in a dict, then `bucket_edges`
    per bucket, as the stage's GroupByKey and FlatMap do.
Baseline: brute-force all-pairs Hamming distances in plain numpy (XOR, popcount, blocked; written
out here, no witcurate code), timed on a 20,000-hash subset and scaled by the number of pairs to
the full set. The search must find the planted pairs. Both sides are numpy element-wise work,
which runs on one thread.
"""

from __future__ import annotations

import time

import numpy as np

from witcurate.filters import dedupe as rules

N = 1_000_000
PLANTED = 20_000
MAX_HAMMING = 4
SUBSET = 20_000


def make_hashes(n: int = N, planted: int = PLANTED, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n hashes: n - planted random ones and `planted` copies of random ones with 0-4 bits
    flipped. Returns (hashes, index pairs of the planted duplicates)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 2**64, size=n - planted, dtype=np.uint64)
    src = rng.integers(0, n - planted, size=planted)
    near = base[src].copy()
    flips = rng.integers(0, MAX_HAMMING + 1, size=planted)
    for i in range(planted):
        for bit in rng.choice(64, size=flips[i], replace=False):
            near[i] ^= np.uint64(1) << np.uint64(bit)
    pairs = np.stack([src, np.arange(n - planted, n)], axis=1)
    return np.concatenate([base, near]), pairs


def brute_force_pairs(hashes: np.ndarray, max_hamming: int, block: int = 1024) -> int:
    """How many pairs (i < j) lie within `max_hamming`, comparing every pair."""
    found = 0
    for start in range(0, len(hashes), block):
        dist = np.bitwise_count(hashes[start:start + block, None] ^ hashes[None, :])
        rows, cols = np.nonzero(dist <= max_hamming)
        found += int(np.count_nonzero(cols > rows + start))
    return found


def stage_path(hashes: np.ndarray, bands: int) -> int:
    buckets: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for i, h in enumerate(hashes.tolist()):
        for key in rules.band_keys(h, bands):
            buckets.setdefault(key, []).append((i, h))
    edges = 0
    for (band, _), items in buckets.items():
        if len(items) > 1:
            edges += len(rules.bucket_edges(items, band, bands, MAX_HAMMING))
    return edges


def run() -> list[dict]:
    bands = MAX_HAMMING + 1
    hashes, planted = make_hashes()
    t0 = time.perf_counter()
    edges = rules.near_duplicate_pairs(hashes, MAX_HAMMING, bands)
    ours_s = time.perf_counter() - t0
    uf = rules.UnionFind()
    for a, b in edges.tolist():
        uf.union(a, b)
    found = sum(uf.find(int(a)) == uf.find(int(b)) for a, b in planted.tolist())
    assert found == len(planted), f"missed {len(planted) - found} planted pairs"

    sub = hashes[:SUBSET]
    t0 = time.perf_counter()
    brute_force_pairs(sub, MAX_HAMMING)
    brute_sub_s = time.perf_counter() - t0
    brute_s = brute_sub_s * (N * (N - 1)) / (SUBSET * (SUBSET - 1))

    t0 = time.perf_counter()
    stage_edges = stage_path(hashes, bands)
    stage_s = time.perf_counter() - t0
    assert stage_edges >= len(planted)

    per_min = lambda seconds: N / seconds * 60  # noqa: E731
    print(f"near_duplicate_pairs: {N:,} hashes in {ours_s:.2f}s ({per_min(ours_s):,.0f}/min), "
          f"{len(edges):,} edges, all {len(planted):,} planted pairs found")
    print(f"stage path (dict buckets + bucket_edges): {N:,} hashes in {stage_s:.2f}s ({per_min(stage_s):,.0f}/min)")
    print(f"brute force: {SUBSET:,} hashes in {brute_sub_s:.2f}s, scaled to {N:,}: {brute_s:,.0f}s "
          f"({per_min(brute_s):,.0f}/min)")
    return [
        {"name": "dedupe near-dup search (1M)", "ours": per_min(ours_s), "baseline": per_min(brute_s),
         "unit": "hashes/min", "ratio": brute_s / ours_s, "target": ">=1M hashes/min on one core"},
        {"name": "dedupe stage path (no Beam)", "ours": per_min(stage_s), "baseline": per_min(brute_s),
         "unit": "hashes/min", "ratio": brute_s / stage_s, "target": ">=1M hashes/min on one core"},
    ]


if __name__ == "__main__":
    for r in run():
        print(f"{r['name']}: {r['ours']:,.0f} vs {r['baseline']:,.0f} {r['unit']} (x{r['ratio']:,.0f}); target {r['target']}")
