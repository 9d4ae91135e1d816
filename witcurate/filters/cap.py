"""The strict per-query cap after scoring.

A pair counts toward one query: the rarest it matches in the pool (fewest pool captions; ties
to the smaller id), so rare queries are filled first. Within a query the best CLIP scores
survive; equal scores are ordered by a stable hash of the uid, never by arrival order.
"""

from __future__ import annotations

import hashlib
from typing import Iterable, Mapping


def assign_query(query_ids: Iterable[int], pool_counts: Mapping[int, int]) -> int:
    return min(query_ids, key=lambda q: (pool_counts.get(q, 0), q))


def rank_key(row: Mapping) -> tuple[float, str]:
    tiebreak = hashlib.blake2b(row["uid"].encode(), digest_size=8).hexdigest()
    return (-float(row.get("clip_score") or 0.0), tiebreak)


def cap_group(rows: Iterable[Mapping], per_query: int) -> tuple[list, list]:
    """(kept, over_cap) for the rows assigned to one query, all of them in hand: the rule's
    definition. The stage decides each row alone against `cap_cutoff` instead, with the same result."""
    ordered = sorted(rows, key=rank_key)
    return ordered[:per_query], ordered[per_query:]


def cap_cutoff(best_keys: list[tuple[float, str]], per_query: int) -> tuple[float, str] | None:
    """The rank key of a query's last kept pair, from its `per_query` best keys (smallest first),
    or None when the query has fewer pairs than the cap (all are kept)."""
    return max(best_keys) if len(best_keys) >= per_query else None


def within_cap(key: tuple[float, str], cutoff: tuple[float, str] | None) -> bool:
    """Whether a pair with this rank key is among its query's best: keys are unique (the uid's
    hash breaks score ties), so exactly `per_query` pairs of a full query pass."""
    return cutoff is None or key <= cutoff
