"""robots.txt in the download stage: fetched once per origin per run, before any image, in Beam.

    rows ──origin──> distinct origins ──bucket──> FetchRobots ──> (origin, verdict)  ──> robots table
    (origin, rows) + (origin, verdict) ──CoGroupByKey──> JudgeOrigin ──> robots rejects,
                                                                         ((shard, n_shards), row)

Origins are bucketed by a hash (about ROWS_PER_BUCKET input rows' worth of origins per bucket),
and each bucket's origins are fetched by a thread pool, so tens of millions of hosts spread over
Beam's workers and one slow host costs one thread one timeout. Each bucket's verdicts are kept
in the stage's work directory (`.work-download/robots/bucket-NNNNN.json`, with the text that
was parsed), so a resumed run asks no host twice; the landed stage has the robots table
(`download/robots/part-*.parquet`: origin, verdict, HTTP status, detail, when, bytes, whether
it was cut, its encoding and a digest of the text, not the text).

A fetch goes through the URL-safety guard (filters/urls.py: an origin whose address is refused is
not asked, and its URLs are left to the URL checks, which reject them as `private_address`; a
redirect to a refused address is an unreachable robots.txt), sends our User-Agent, follows
redirects, reads at most ROBOTS_MAX_BYTES and gives up after download.timeout seconds in all.
"""

from __future__ import annotations

import datetime
import math
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterator

import apache_beam as beam
import pyarrow as pa

from witcurate.config import DownloadSection
from witcurate.filters import urls
from witcurate.filters.robots import (NOT_FETCHED, ROBOTS_MAX_BYTES, RULES, RobotsRules,
                                      body_digest, cut_body, decode_body, verdict_for)
from witcurate.pipeline import fs
from witcurate.pipeline.beam_io import KEPT, REJECTED, rejected
from witcurate.pipeline.hosts import host_of, host_pieces, shard_of, stable_hash

ROWS_PER_BUCKET = 100_000
FETCH_THREADS = 32

ROBOTS_SCHEMA = pa.schema([
    ("origin", pa.string()),
    ("verdict", pa.string()),            # rules, allow_all, disallow_all, not_fetched
    ("http_status", pa.int32()),
    ("detail", pa.string()),
    ("fetched_at", pa.timestamp("ms", tz="UTC")),
    ("bytes", pa.int64()),               # body bytes read (at most ROBOTS_MAX_BYTES + 1)
    ("truncated", pa.bool_()),
    ("encoding", pa.string()),
    ("digest", pa.string()),             # sha256 of the text parsed, 32 hex characters
])


def bucket_count(n_rows: int) -> int:
    return max(1, math.ceil(n_rows / ROWS_PER_BUCKET))


def read_capped(response, max_bytes: int, deadline: float) -> bytes:
    """At most max_bytes + 1 bytes of the body (one more tells that it was longer), giving up
    with TimeoutError at `deadline`: a host trickling bytes cannot hold the fetch open."""
    chunks, size = [], 0
    while size <= max_bytes:
        if time.monotonic() > deadline:
            raise TimeoutError("robots.txt read timed out")
        chunk = response.read1(min(65536, max_bytes + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _record(origin: str, verdict: str, status: int | None = None, detail: str = "",
            body: bytes = b"", read: int = 0, truncated: bool = False, encoding: str = "",
            text: str | None = None) -> dict[str, Any]:
    return {"origin": origin, "verdict": verdict, "http_status": status, "detail": detail,
            "fetched_at": time.time(), "bytes": read, "truncated": truncated, "encoding": encoding,
            "digest": body_digest(body) if text is not None else "", "text": text}


def fetch_robots(origin: str, opener: urllib.request.OpenerDirector, user_agent: str,
                 timeout: float, max_bytes: int = ROBOTS_MAX_BYTES) -> dict[str, Any]:
    """Fetch origin/robots.txt and return its verdict record (see ROBOTS_SCHEMA, plus `text`)."""
    request = urllib.request.Request(origin + "/robots.txt", headers={"User-Agent": user_agent})
    deadline = time.monotonic() + timeout
    try:
        with opener.open(request, timeout=timeout) as response:
            status = response.status
            raw = read_capped(response, max_bytes, deadline)
    except urllib.error.HTTPError as e:
        e.close()
        return _record(origin, verdict_for(e.code, None), e.code, f"HTTP {e.code}")
    except (OSError, ValueError, urllib.error.URLError) as e:       # timeouts, resets, refusals
        reason = getattr(e, "reason", None) or e
        return _record(origin, verdict_for(None, str(reason)), None, str(reason)[:500])
    except Exception as e:  # noqa: BLE001 - http.client's own errors: unreachable all the same
        return _record(origin, verdict_for(None, repr(e)), None, repr(e)[:500])
    verdict = verdict_for(status, None)
    body, truncated = cut_body(raw, max_bytes)
    text, encoding = decode_body(body)
    detail = f"HTTP {status}" + (f", cut at {len(body):,} bytes" if truncated else "")
    return _record(origin, verdict, status, detail, body, len(raw), truncated, encoding,
                   text if verdict == RULES else None)


def table_row(record: dict[str, Any]) -> dict[str, Any]:
    row = {k: record.get(k) for k in ROBOTS_SCHEMA.names}
    row["fetched_at"] = datetime.datetime.fromtimestamp(record["fetched_at"], datetime.timezone.utc)
    return row


class FetchRobots(beam.DoFn):
    """(bucket, origins) -> (origin, verdict record) for each, fetched in parallel, cached."""

    def __init__(self, cfg: DownloadSection, work_dir: str, threads: int = FETCH_THREADS):
        self.cfg = cfg
        self.work_dir = work_dir
        self.threads = threads

    def setup(self):
        self.policy = urls.AddressPolicy.from_config(self.cfg.allow_private)
        self.opener = urls.build_opener(self.policy)

    def verdict(self, origin: str) -> dict[str, Any]:
        allowed = urls.check_url(origin + "/robots.txt", self.policy)
        if allowed is not True:
            return _record(origin, NOT_FETCHED, None, f"not asked: {allowed.detail}")
        return fetch_robots(origin, self.opener, self.cfg.user_agent, self.cfg.timeout)

    def process(self, element) -> Iterator[tuple[str, dict[str, Any]]]:
        bucket, origins = element
        origins = sorted(set(origins))
        cache = fs.join(self.work_dir, "robots", f"bucket-{bucket:05d}.json")
        known: dict[str, Any] = {}
        if fs.exists(cache):
            try:
                known = fs.read_json(cache)
            except (OSError, ValueError):
                known = {}                       # a half-written cache from a killed attempt
        missing = [o for o in origins if o not in known]
        if missing:
            with ThreadPoolExecutor(min(self.threads, len(missing))) as pool:
                for record in pool.map(self.verdict, missing):
                    known[record["origin"]] = record
            fs.makedirs(fs.join(self.work_dir, "robots"))
            fs.write_json(cache, known)
        for origin in origins:
            yield origin, known[origin]


class JudgeOrigin(beam.DoFn):
    """(origin, {"rows", "robots"}) -> each row a robots reject, or ((shard, n_shards), row)."""

    def __init__(self, agent: str, urls_per_shard: int, max_host_shards: int, n_shards: int):
        self.agent = agent
        self.urls_per_shard = urls_per_shard
        self.max_host_shards = max_host_shards
        self.n_shards = n_shards

    def process(self, element) -> Iterator:
        origin, grouped = element
        rows = grouped["rows"]
        verdicts = list(grouped["robots"])
        rules = (RobotsRules.from_text(origin, verdicts[0]["verdict"], verdicts[0].get("text"),
                                       verdicts[0].get("detail") or "") if verdicts else None)
        host = host_of(origin)
        pieces = host_pieces(sum(1 for _ in rows), self.urls_per_shard, self.max_host_shards,
                             self.n_shards)
        for row in rows:
            decision = rules.check(str(row.get("url")), self.agent) if rules is not None else True
            if decision is True:
                shard = shard_of(host, row["uid"], pieces, self.n_shards)
                yield beam.pvalue.TaggedOutput(KEPT, ((shard, self.n_shards), row))
            else:
                yield beam.pvalue.TaggedOutput(REJECTED, rejected(row, decision))


class ObeyRobots(beam.PTransform):
    """Balanced rows -> {KEPT: ((shard, n_shards), row), REJECTED: robots rejects, "robots":
    (origin, verdict record)}; with download.obey_robots false nothing is fetched or refused."""

    def __init__(self, cfg: DownloadSection, work_dir: str, n_rows: int):
        super().__init__()
        self.cfg, self.work_dir, self.n_rows = cfg, work_dir, n_rows

    def expand(self, rows):
        from witcurate.pipeline.hosts import origin_of, shard_count
        cfg = self.cfg
        n_buckets = bucket_count(self.n_rows)
        keyed = rows | "KeyByOrigin" >> beam.Map(lambda r: (origin_of(r.get("url")), r))
        if cfg.obey_robots:
            verdicts = (keyed
                        | "Origins" >> beam.Keys()
                        | "DistinctOrigins" >> beam.Distinct()
                        | "Askable" >> beam.Filter(bool)
                        | "BucketOfOrigin" >> beam.Map(lambda o: (stable_hash(o) % n_buckets, o))
                        | "GroupByBucket" >> beam.GroupByKey()
                        | "FetchRobots" >> beam.ParDo(FetchRobots(cfg, self.work_dir)))
        else:
            verdicts = keyed.pipeline | "NoRobots" >> beam.Create([])
        judge = JudgeOrigin(cfg.user_agent_token, cfg.urls_per_shard, cfg.max_host_shards,
                            shard_count(self.n_rows, cfg.urls_per_shard))
        outs = ({"rows": keyed, "robots": verdicts}
                | "JoinRobots" >> beam.CoGroupByKey()
                | "JudgeOrigin" >> beam.ParDo(judge).with_outputs(KEPT, REJECTED))
        return {KEPT: outs[KEPT], REJECTED: outs[REJECTED], "robots": verdicts}
