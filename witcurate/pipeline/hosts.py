"""Hosts in the download: which origin's robots.txt a URL answers to, which shard a URL goes to,
the order a shard's URLs are fetched in, and what each host's URLs came to.

Sharding by host is what makes a per-host limit hold across Beam workers. Shard `index` of
`n_shards` (n_shards = ceil(URLs / download.urls_per_shard)) gets:

  * every URL of a host with at most urls_per_shard URLs: shard hash(host) mod n_shards;
  * a bigger host's URLs split by hash(uid) over k = min(ceil(URLs / urls_per_shard),
    download.max_host_shards, n_shards) consecutive shards from hash(host).

A host's URLs are therefore in at most max_host_shards shards, and with each shard's workers
holding at most per_host_connections requests to it, no more than per_host_connections x
max_host_shards requests reach one host at once, however many workers the runner starts.
A URL without a host (it fails the URL checks later) goes to shard hash(uid) mod n_shards.
Hashes are sha256, so the same rows give the same shards in every process and every run.
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from typing import Any, Iterable
from urllib.parse import urlsplit

from witcurate.filters.retry_after import RATE_LIMITED
from witcurate.filters.robots import ROBOTS_DISALLOWED, ROBOTS_UNAVAILABLE

# What a host's URL came to, for the card's top-hosts table.
OUTCOMES = ("fetched", "disallowed", "robots_unavailable", "rate_limited", "failed")
_OUTCOME_OF_REASON = {ROBOTS_DISALLOWED: "disallowed", ROBOTS_UNAVAILABLE: "robots_unavailable",
                      RATE_LIMITED: "rate_limited"}


def host_of(url: Any) -> str:
    """The lower-cased host name of a URL ("" when it has none)."""
    try:
        return (urlsplit(str(url or "")).hostname or "").lower()
    except ValueError:
        return ""


def origin_of(url: Any) -> str:
    """scheme://host:port, the origin whose /robots.txt governs the URL ("" for a URL that is
    not http(s) or has no host: the URL checks reject it later)."""
    try:
        parts = urlsplit(str(url or ""))
        scheme, host, port = parts.scheme.lower(), parts.hostname, parts.port
    except ValueError:
        return ""
    if scheme not in ("http", "https") or not host:
        return ""
    port = port or (443 if scheme == "https" else 80)
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown.lower()}:{port}"


def stable_hash(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()[:8], "big")


def shard_count(n_rows: int, urls_per_shard: int) -> int:
    return max(1, math.ceil(n_rows / urls_per_shard))


def host_pieces(n_urls: int, urls_per_shard: int, max_host_shards: int, n_shards: int) -> int:
    """How many shards one host's `n_urls` URLs are spread over."""
    return max(1, min(math.ceil(n_urls / urls_per_shard), max_host_shards, n_shards))


def shard_of(host: str, uid: str, pieces: int, n_shards: int) -> int:
    if not host:
        return stable_hash(uid) % n_shards
    piece = stable_hash(uid) % pieces if pieces > 1 else 0
    return (stable_hash(host) + piece) % n_shards


def interleave_by_host(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`rows` reordered round-robin over their hosts (each host's rows keep their order), so the
    fetch threads, which take URLs in list order, work on many hosts at once instead of queueing
    behind one host's connection slots."""
    by_host: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_host[host_of(row.get("url"))].append(row)
    queues = [by_host[h] for h in sorted(by_host)]
    out: list[dict[str, Any]] = []
    for i in range(max((len(q) for q in queues), default=0)):
        out.extend(q[i] for q in queues if i < len(q))
    return out


def outcome_of(reason: str | None) -> str:
    """A row's outcome: None (kept) is fetched; robots and rate-limit reasons are their own."""
    if reason is None:
        return "fetched"
    return _OUTCOME_OF_REASON.get(reason, "failed")


def top_hosts(counts: Iterable[tuple[str, dict[str, int]]], k: int) -> list[dict[str, Any]]:
    """The `k` hosts with the most URLs: {"host", "urls", and a count per outcome}."""
    rows = [{"host": host or "(no host)", "urls": sum(c.values()),
             **{o: int(c.get(o, 0)) for o in OUTCOMES}} for host, c in counts]
    rows.sort(key=lambda r: (-r["urls"], r["host"]))
    return rows[:k]
