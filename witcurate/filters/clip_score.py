"""CLIP-score keep rules, on plain values.

Two rules, exactly one of which a run uses:
- threshold (LAION): keep a pair when its score >= the threshold (e.g. 0.28 for ViT-B/32).
- top_fraction (DataComp): keep the best `fraction` of all scored pairs. This needs every score
  first: the cutoff is the k-th best pair, k = round(fraction * n), ranking by score, highest
  first, and among equal scores by a stable hash of the uid, so that exactly k pairs survive
  and the same ones on every run.

Scores are compared as the float32 values that are stored in `clip_score`, so a kept row's
stored score always satisfies the rule it was kept by.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from witcurate.errors import ConfigError
from witcurate.filters.base import Decision, Drop

REASON_BELOW = "clip_score_below"
REASON_UNREADABLE = "image_unreadable"


@dataclass(frozen=True)
class KeepRule:
    kind: str            # "threshold", "top_fraction" or "per_query_top_fraction"
    value: float

    def describe(self) -> str:
        return f"{self.kind} {self.value:g}"


def keep_rule(threshold: float | None, top_fraction: float | None,
              per_query_top_fraction: float | None = None) -> KeepRule:
    """The one keep rule a config asks for; a ConfigError unless exactly one is set. (Their
    ranges are checked when the config loads: witcurate.config_checks.)"""
    given = {"threshold": threshold, "top_fraction": top_fraction,
             "per_query_top_fraction": per_query_top_fraction}
    chosen = [(kind, value) for kind, value in given.items() if value is not None]
    if len(chosen) != 1:
        which = {0: "neither is set", 2: "both are set"}.get(len(chosen), "all three are set")
        raise ConfigError(f"score: set exactly one of threshold and top_fraction (or per_query_top_fraction) ({which})",
                          "e.g. --threshold 0.28 (LAION, ViT-B/32) or --top-fraction 0.3 (DataComp)")
    kind, value = chosen[0]
    return KeepRule(kind, float(value))


def as_stored(score: float) -> float:
    """The score as `clip_score` stores it (float32), back as a Python float."""
    return float(np.float32(score))


def keep_by_threshold(score: float, threshold: float) -> Decision:
    """True, or Drop("clip_score_below")."""
    return True if as_stored(score) >= threshold else Drop(REASON_BELOW)


def tie_hash(uid: str) -> int:
    """A stable 64-bit hash of a uid: the tie-break among equal scores."""
    return int.from_bytes(hashlib.sha1(uid.encode("utf-8")).digest()[:8], "big")


def top_count(n: int, fraction: float) -> int:
    """How many of n scored pairs the top `fraction` keeps: round(fraction * n), halves up.
    (The small epsilon absorbs float noise such as 0.3 * 10 = 3.0000000000000004.)"""
    return max(0, min(n, int(math.floor(fraction * n + 0.5 + 1e-9))))


@dataclass(frozen=True)
class Cutoff:
    """The last pair a top_fraction keeps: its score and tie hash. Pairs ranking at or above
    it (higher score, or the same score and a tie hash no greater) are kept."""
    score: float
    tie: int
    kept: int            # how many pairs rank at or above it
    total: int


def top_fraction_cutoff(scores: Sequence[float], ties: Sequence[int], fraction: float) -> Cutoff | None:
    """The cutoff for keeping the top `fraction` of the given (score, tie hash) pairs; None when
    it keeps nothing (no pairs, or a fraction too small to keep one)."""
    s = np.asarray(scores, dtype=np.float32).astype(np.float64)
    t = np.asarray(ties, dtype=np.uint64)
    n = int(s.shape[0])
    k = top_count(n, fraction)
    if k == 0:
        return None
    order = np.lexsort((t, -s))          # last key is primary: score descending, then tie ascending
    last = order[k - 1]
    return Cutoff(score=float(s[last]), tie=int(t[last]), kept=k, total=n)


# The same cutoff in two passes over data too large to gather in one place: a histogram of the
# scores over 2**20 bins (bins ordered like the scores), then only the pairs of the one bin
# that holds the cutoff are gathered and ranked. The answer is exactly top_fraction_cutoff's.
BIN_BITS = 20


def score_bin(score: float) -> int:
    """A bin number that grows with the stored (float32) score: its order-preserving bits' top
    BIN_BITS."""
    bits = int(np.float32(score).view(np.uint32))
    key = (~bits & 0xFFFFFFFF) if bits & 0x80000000 else bits | 0x80000000
    return key >> (32 - BIN_BITS)


def locate_cutoff(histogram: np.ndarray, fraction: float) -> dict[str, int] | None:
    """Which bin holds the last kept pair and its rank (1-based) inside that bin, counting from
    the top; None when the fraction keeps nothing."""
    n = int(histogram.sum())
    k = top_count(n, fraction)
    if k == 0:
        return None
    above = 0
    for b in np.flatnonzero(histogram)[::-1]:          # highest scores first
        if above + int(histogram[b]) >= k:
            return {"bin": int(b), "rank": k - above, "kept": k, "total": n}
        above += int(histogram[b])
    raise AssertionError("a histogram's counts sum to n")


def cutoff_in_bin(pairs: Sequence[tuple[float, int]], where: dict[str, int] | None) -> Cutoff | None:
    """The cutoff from the (score, tie hash) pairs of the bin `locate_cutoff` named."""
    if where is None:
        return None
    s = np.asarray([p[0] for p in pairs], dtype=np.float32).astype(np.float64)
    t = np.asarray([p[1] for p in pairs], dtype=np.uint64)
    last = np.lexsort((t, -s))[where["rank"] - 1]
    return Cutoff(score=float(s[last]), tie=int(t[last]), kept=where["kept"], total=where["total"])


def keep_by_cutoff(score: float, tie: int, cutoff: Cutoff | None) -> Decision:
    """True when a pair ranks at or above the cutoff, else Drop("clip_score_below")."""
    if cutoff is None:
        return Drop(REASON_BELOW)
    s = as_stored(score)
    if s > cutoff.score or (s == cutoff.score and tie <= cutoff.tie):
        return True
    return Drop(REASON_BELOW)


def below_detail(score: float, rule: KeepRule, threshold_used: float | None, query: str = "") -> str:
    """The rejects' `detail`: the pair's score and the threshold it missed (for a per-query rule,
    the cutoff of the query the pair counts toward)."""
    s = as_stored(score)
    if rule.kind == "threshold":
        return f"clip_score {s:.4f} < threshold {rule.value:.4f}"
    whose = f"{rule.kind} {rule.value:g}" + (f" in query {query}" if query else "")
    if threshold_used is None:
        return f"clip_score {s:.4f}; {whose} keeps no pair"
    relation = "<" if s < threshold_used else "= (lost the tie-break at)"
    return f"clip_score {s:.4f} {relation} threshold {threshold_used:.4f} (the cutoff of {whose})"
