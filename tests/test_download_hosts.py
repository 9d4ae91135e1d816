"""Hosts in the download: origins, the cut of shards by host and its bound, the fetch order,
the per-host counts in Beam, and the card's top-hosts table."""

from __future__ import annotations

import collections
import json

import apache_beam as beam
import pytest

from witcurate.config import Config
from witcurate.pipeline import fs
from witcurate.pipeline.beam_io import reject
from witcurate.pipeline.card.hosts import top_hosts as card_top_hosts
from witcurate.pipeline.card.manifests import CardData
from witcurate.pipeline.download_hosts import CountHosts, read_host_counts
from witcurate.pipeline.hosts import (host_of, host_pieces, interleave_by_host, origin_of,
                                      outcome_of, shard_count, shard_of)


@pytest.mark.parametrize("url, origin, host", [
    ("http://Example.ORG/a.jpg", "http://example.org:80", "example.org"),
    ("https://example.org/a.jpg", "https://example.org:443", "example.org"),
    ("http://example.org:8080/a", "http://example.org:8080", "example.org"),
    ("http://[::1]:81/a", "http://[::1]:81", "::1"),
    ("ftp://example.org/a", "", "example.org"),
    ("not a url", "", ""), (None, "", ""), ("http://[oops/a", "", ""),
])
def test_origins_and_hosts(url, origin, host):
    assert origin_of(url) == origin and host_of(url) == host


def _cut(rows_by_host: dict[str, int], urls_per_shard: int, max_host_shards: int) -> dict[str, set]:
    n_rows = sum(rows_by_host.values())
    n_shards = shard_count(n_rows, urls_per_shard)
    shards = collections.defaultdict(set)
    for host, n in rows_by_host.items():
        pieces = host_pieces(n, urls_per_shard, max_host_shards, n_shards)
        for i in range(n):
            shards[host].add(shard_of(host, f"{host}-{i:06d}", pieces, n_shards))
    return shards


def test_a_host_lands_in_a_bounded_number_of_shards():
    hosts = {"big.example": 50_000, "mid.example": 3_000, **{f"h{i}.example": 40 for i in range(2_000)}}
    shards = _cut(hosts, urls_per_shard=1_000, max_host_shards=4)
    assert len(shards["big.example"]) == 4                  # split, but over 4 shards at most
    assert len(shards["mid.example"]) == 3
    assert all(len(s) == 1 for h, s in shards.items() if h.startswith("h"))
    # the same rows cut the same way in any process
    assert _cut(hosts, 1_000, 4) == shards


def test_small_hosts_spread_over_the_shards():
    hosts = {f"h{i}.example": 10 for i in range(5_000)}
    n_shards = shard_count(50_000, 1_000)
    load = collections.Counter(next(iter(s)) for s in _cut(hosts, 1_000, 4).values())
    assert len(load) == n_shards and max(load.values()) < 2 * 5_000 / n_shards


def test_rows_without_a_host_are_cut_by_uid():
    assert {shard_of("", f"u{i}", 1, 7) for i in range(200)} == set(range(7))


def test_fetch_order_interleaves_hosts():
    rows = [{"url": f"http://a/{i}"} for i in range(4)] + [{"url": f"http://b/{i}"} for i in range(2)]
    order = [r["url"] for r in interleave_by_host(rows)]
    assert order == ["http://a/0", "http://b/0", "http://a/1", "http://b/1", "http://a/2", "http://a/3"]
    assert interleave_by_host([]) == []


def test_outcomes():
    assert [outcome_of(r) for r in (None, "robots_disallowed", "robots_unavailable", "rate_limited",
                                     "http_404")] == ["fetched", "disallowed", "robots_unavailable",
                                                      "rate_limited", "failed"]


def test_host_counts_in_beam(tmp_path):
    kept = [{"uid": f"k{i}", "url": f"http://big.example/{i}.jpg"} for i in range(5)]
    rejects = [reject({"uid": "r1", "url": "http://big.example/x.jpg"}, "http_404"),
               reject({"uid": "r2", "url": "http://shy.example/x.jpg"}, "robots_disallowed"),
               reject({"uid": "r3", "url": "http://busy.example/x.jpg"}, "rate_limited"),
               reject({"uid": "r4"}, "missing_uid")]
    robots = [("http://big.example:80", {"verdict": "rules"}), ("http://shy.example:80", {"verdict": "rules"}),
              ("http://busy.example:80", {"verdict": "allow_all"})]
    prefix = fs.join(str(tmp_path), "hosts")
    from apache_beam.testing.test_pipeline import TestPipeline
    with TestPipeline() as p:
        ({"kept": p | "K" >> beam.Create(kept), "rejects": p | "R" >> beam.Create(rejects),
          "robots": p | "V" >> beam.Create(robots)} | CountHosts()
         | beam.io.WriteToText(prefix, file_name_suffix=".jsonl"))
    counts = read_host_counts(prefix)
    assert counts["distinct"] == 4 and counts["robots"] == {"rules": 2, "allow_all": 1}
    top = counts["top"]
    assert [h["host"] for h in top] == ["big.example", "(no host)", "busy.example", "shy.example"]
    assert top[0] == {"host": "big.example", "urls": 6, "fetched": 5, "disallowed": 0,
                      "robots_unavailable": 0, "rate_limited": 0, "failed": 1}
    assert top[2]["rate_limited"] == 1 and top[3]["disallowed"] == 1


def test_card_table(tmp_path):
    hosts = {"distinct": 3, "robots": {"rules": 2, "disallow_all": 1},
             "top": [{"host": "big.example", "urls": 10, "fetched": 7, "disallowed": 1,
                      "robots_unavailable": 0, "rate_limited": 1, "failed": 1}]}
    section = card_top_hosts("OUT", CardData(manifests={"download": {"hosts": hosts}}), Config(), str(tmp_path))
    assert "| big.example | 10 | 7 | 1 | 0 | 1 | 1 |" in section.extra
    assert "3 hosts" in section.note and "disallow all 1" in section.note
    assert "At most 2 requests open to one host" in section.note
    empty = card_top_hosts("OUT", CardData(manifests={}), Config(), str(tmp_path))
    assert empty.note.startswith("Skipped") and not empty.extra
    json.dumps(hosts)                                   # what the manifest stores is JSON
