"""The target-distribution filter (DataComp's image-based filtering, Gadre et al. 2023) on plain
values: the pool's image embeddings are clustered, and only the clusters near a target set's
image embeddings are kept.

Two rules choose the clusters:
  * DataComp's (keep_fraction None): every target embedding marks its nearest pool centroid;
    the marked clusters are kept. How many survive follows from the target set itself.
  * keep_fraction f: clusters are ranked by their distance to the target set (1 - the largest
    cosine between the centroid and any target embedding) and the nearest ceil(f * k) are kept,
    ties to the lower cluster index: a knob to trade pool size against closeness.
Both need only the centroids and per-cluster statistics of the targets, `TargetStats`, which
merge across chunks of targets (so a target set is never held whole by one worker either).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from witcurate.filters.base import Decision, Drop
from witcurate.filters.kmeans import nearest

OFF_TARGET_CLUSTER = "off_target_cluster"


@dataclass
class TargetStats:
    """Per pool cluster: how many target embeddings have it as their nearest centroid, and the
    largest cosine between its centroid and any target embedding."""
    votes: np.ndarray          # (k,) int64
    best_cosine: np.ndarray    # (k,) float32, -inf where no target was seen yet

    @classmethod
    def empty(cls, k: int) -> "TargetStats":
        return cls(np.zeros(k, dtype=np.int64), np.full(k, -np.inf, dtype=np.float32))

    def merge(self, other: "TargetStats") -> "TargetStats":
        return TargetStats(self.votes + other.votes, np.maximum(self.best_cosine, other.best_cosine))

    @property
    def targets(self) -> int:
        return int(self.votes.sum())


def target_stats(targets: np.ndarray, centroids: np.ndarray) -> TargetStats:
    """The TargetStats of one chunk of (unit-length) target embeddings."""
    c = np.asarray(centroids, dtype=np.float32)
    k = len(c)
    t = np.asarray(targets, dtype=np.float32)
    if not len(t):
        return TargetStats.empty(k)
    index, _ = nearest(t, c)
    votes = np.bincount(index, minlength=k).astype(np.int64)
    best, _ = nearest(c, t)                     # each centroid's nearest target
    best_cosine = np.einsum("kd,kd->k", c, t[best]).astype(np.float32)
    return TargetStats(votes, best_cosine)


@dataclass(frozen=True)
class ClusterChoice:
    """Which clusters are kept, each cluster's distance to the target set, and the rule used."""
    kept: tuple[bool, ...]
    distance: tuple[float, ...]     # 1 - best cosine to a target embedding
    votes: tuple[int, ...]
    rule: str                       # "nearest centroid of a target" or "nearest 30% of clusters"

    @property
    def kept_count(self) -> int:
        return sum(self.kept)

    @property
    def farthest_kept(self) -> float:
        return max((d for d, k in zip(self.distance, self.kept) if k), default=float("nan"))


def choose_clusters(stats: TargetStats, keep_fraction: float | None) -> ClusterChoice:
    """The clusters kept under DataComp's rule (keep_fraction None) or the nearest fraction."""
    distance = (1.0 - stats.best_cosine.astype(np.float64)).tolist()
    k = len(distance)
    if keep_fraction is None:
        kept = (stats.votes > 0).tolist()
        rule = "nearest centroid of a target embedding"
    else:
        count = min(k, max(1, math.ceil(keep_fraction * k - 1e-9)))
        order = sorted(range(k), key=lambda i: (distance[i], i))[:count]
        kept = [False] * k
        for i in order:
            kept[i] = True
        rule = f"nearest {keep_fraction:.0%} of clusters to the target set"
    return ClusterChoice(tuple(kept), tuple(round(d, 6) for d in distance),
                         tuple(int(v) for v in stats.votes.tolist()), rule)


def on_target(cluster: int, choice: ClusterChoice) -> Decision:
    """True for a vector in a kept cluster; else an `off_target_cluster` Drop naming the
    cluster and its distance to the target set."""
    if choice.kept[cluster]:
        return True
    return Drop(OFF_TARGET_CLUSTER,
                f"cluster {cluster} of {len(choice.kept)}: distance {choice.distance[cluster]:.4f} "
                f"to the target set, {choice.votes[cluster]} target embeddings nearest to it; kept: "
                f"{choice.kept_count} clusters ({choice.rule}), the farthest at "
                f"{choice.farthest_kept:.4f}")
