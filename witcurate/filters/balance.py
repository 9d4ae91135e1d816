"""MetaCLIP's balancing, applied before download so frequent queries do not cost millions of fetches.

A pair matching entries e is kept with probability 1 - prod_e (1 - min(1, t / count_e)), where
count_e is the number of pool captions matching e and t = per_query * oversample. The coin is a
hash of (uid, seed), so the same input gives the same output on any runner and any sharding.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Iterable, Mapping

from witcurate.filters.base import Decision, Drop


def keep_probability(query_ids: Iterable[int], counts: Mapping[int, int], t: float) -> float:
    miss = 1.0
    for q in query_ids:
        c = counts.get(q, 0)
        if c <= t:
            return 1.0
        miss *= 1.0 - t / c
    return 1.0 - miss


def uniform_from_uid(uid: str, seed: int) -> float:
    """A deterministic draw in [0, 1) from the uid and seed."""
    digest = hashlib.blake2b(f"{seed}:{uid}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def balance_decision(uid: str, probability: float, seed: int) -> Decision:
    """Keep with `probability`, by the uid's own coin; a drop records the probability it lost to."""
    if uniform_from_uid(uid, seed) < probability:
        return True
    return Drop("balanced_out", f"p={probability:.6f}")


@dataclass(frozen=True)
class BalanceCoin:
    """The record filter: a row carrying its `keep_probability` keeps or loses its uid's coin."""
    seed: int

    def __call__(self, row) -> Decision:
        return balance_decision(row["uid"], row["keep_probability"], self.seed)
