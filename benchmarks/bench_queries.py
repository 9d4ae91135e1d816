"""Queries: how fast one core turns a Wikipedia dump into counts, on the real (shortened) enwiki
fixture, against the floor of any reader: a plain bz2 decompress + ElementTree iterparse pass over
the same file (every element cleared at </page>, nothing else done).

Measured, one process, best of a few passes:
- read:  witcurate.queries.dump.iter_pages (streaming bz2, pull parser, Page records);
- full:  read + wikitext.to_text (mwparserfromhell) + counts.PageCounts.add_text on every
         article: the per-page work of the queries stage without Beam.
Throughput is in compressed MB/s (what scales to a full dump) and pages/s, per core; the last
line projects the hours a 23 GB pages-articles dump takes on N cores at the full rate (the
stage splits a multistream dump across workers, so the work is parallel by stream).
- budget: a bigram budget as the stage applies it (`transforms.Admit`, Beam's Top.Of on the
         local runner) on BUDGET_ROWS synthetic scored bigrams, against heapq.nsmallest doing
         the same selection in plain Python; both must pick the same rows. The same rows sent
         through the same pipeline without the budget are timed too: on the local runner
         moving the rows costs most of the time, the budget itself little.

    python -m benchmarks queries
"""

from __future__ import annotations

import bz2
import heapq
import os
import random
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Callable

import benchmarks

FIXTURE = (Path(benchmarks.__file__).resolve().parents[1] / "tests" / "fixtures" / "wikipedia"
           / "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2")
ENWIKI_BYTES = 23e9
CORES = (1, 16, 64, 256)
PASSES = 3
BUDGET_ROWS = 100_000
BUDGET = 30_000                       # about MetaCLIP's ratio of bigram budget to its eligible bigrams


def best_time(fn: Callable[[], int], passes: int = PASSES) -> tuple[float, int]:
    """(fastest wall seconds, what fn returned) over `passes` runs."""
    best, out = float("inf"), 0
    for _ in range(passes):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def floor_pass(path: Path) -> int:
    """Pages seen by a bare decompress + iterparse."""
    pages = 0
    with bz2.open(path, "rb") as f:
        for _, elem in ET.iterparse(f, events=("end",)):
            if elem.tag.endswith("}page") or elem.tag == "page":
                pages += 1
                elem.clear()
    return pages


def read_pass(path: Path) -> int:
    from witcurate.queries.dump import iter_pages
    return sum(1 for _ in iter_pages(str(path)))


def full_pass(path: Path) -> int:
    from witcurate.queries import wikitext
    from witcurate.queries.counts import PageCounts
    from witcurate.queries.dump import is_article, iter_pages
    acc = PageCounts()
    pages = 0
    for page in iter_pages(str(path)):
        pages += 1
        if is_article(page):
            acc.add_text(wikitext.to_text(page.text))
    if not acc.words:
        raise RuntimeError("no words counted: the fixture was not read as articles")
    return pages


def scored_bigrams(n: int) -> list[tuple[str, int, float]]:
    """n distinct ("w1 w2", count, PMI) rows with repeated PMI values, so ties are broken."""
    rng = random.Random(0)
    return [(f"w{i % 997} v{i}", rng.randint(30, 5000), round(rng.uniform(0.0, 27.0), 2))
            for i in range(n)]


def budget_pass(rows: list, budget: int | None) -> list:
    """The stage's bigram budget on the local Beam runner; the admitted rows, best first.
    budget None: the same pipeline without the budget (every row comes back)."""
    import json
    import tempfile

    import apache_beam as beam

    from witcurate.pipeline.beam_io import make_pipeline
    from witcurate.queries.budgets import bigram_rank
    from witcurate.queries.transforms import Admit
    with tempfile.TemporaryDirectory() as tmp:
        with make_pipeline() as p:
            admitted = p | beam.Create(rows)
            if budget is not None:
                admitted = admitted | Admit(budget, bigram_rank)
            _ = (admitted | beam.Map(json.dumps)
                 | beam.io.WriteToText(os.path.join(tmp, "admitted"), num_shards=1))
        with open(next(Path(tmp).glob("admitted*"))) as f:
            got = [tuple(json.loads(line)) for line in f]
    return sorted(got, key=bigram_rank)


def plain_budget(rows: list, budget: int) -> list:
    """The same selection in plain Python: highest PMI first, ties by (first word, second word)."""
    return heapq.nsmallest(budget, rows, key=lambda r: (-r[2], *r[0].split(" ", 1)))


def budget_rows() -> list[dict]:
    rows = scored_bigrams(BUDGET_ROWS)
    t_plain, plain = best_time(lambda: plain_budget(rows, BUDGET))
    t_beam, ours = best_time(lambda: budget_pass(rows, BUDGET), passes=1)
    t_moving, _ = best_time(lambda: budget_pass(rows, None), passes=1)
    if ours != plain:
        raise RuntimeError("the Beam budget and heapq.nsmallest admitted different bigrams")
    print(f"bigram budget {BUDGET:,} of {BUDGET_ROWS:,} scored bigrams: Beam (local runner) "
          f"{t_beam:.2f} s (the same pipeline without the budget {t_moving:.2f} s), "
          f"heapq.nsmallest {t_plain:.2f} s")
    return [{"name": "queries: bigram budget rows/s", "ours": BUDGET_ROWS / t_beam,
             "baseline": BUDGET_ROWS / t_plain, "unit": "rows/s", "ratio": t_plain / t_beam,
             "target": "informational (Beam's Top.Of vs heapq)"}]


def run() -> list[dict]:
    if not FIXTURE.exists():
        raise FileNotFoundError(f"fixture not found: {FIXTURE}")
    mb = FIXTURE.stat().st_size / 1e6
    t_floor, n_floor = best_time(lambda: floor_pass(FIXTURE))
    t_read, n_read = best_time(lambda: read_pass(FIXTURE))
    t_full, n_full = best_time(lambda: full_pass(FIXTURE), passes=2)
    if not (n_floor == n_read == n_full):
        raise RuntimeError(f"page counts differ: floor {n_floor}, read {n_read}, full {n_full}")
    print(f"fixture: {FIXTURE.name} ({mb:.2f} MB compressed, {n_floor} pages), one core")
    for label, t in (("floor (bz2 + iterparse)", t_floor), ("read (iter_pages)", t_read),
                     ("full (read + wikitext + counts)", t_full)):
        print(f"  {label:<32} {t:6.2f} s  {mb / t:6.2f} MB/s  {n_floor / t:7.1f} pages/s")
    rate = mb / t_full
    hours = ", ".join(f"{n} core{'s' if n > 1 else ''}: {ENWIKI_BYTES / 1e6 / rate / n / 3600:,.2f} h"
                      for n in sorted(set(CORES + (os.cpu_count() or 1,))))
    print(f"projected for a 23 GB enwiki pages-articles dump at {rate:.2f} MB/s/core "
          f"(linear in cores, Beam overhead not included): {hours}")
    return [
        {"name": "queries: dump read MB/s/core", "ours": mb / t_read, "baseline": mb / t_floor,
         "unit": "MB/s", "ratio": t_floor / t_read, "target": "floor is bz2+iterparse (ratio <= 1)"},
        {"name": "queries: read+text+count MB/s", "ours": mb / t_full, "baseline": mb / t_floor,
         "unit": "MB/s", "ratio": t_floor / t_full, "target": "informational (vs floor)"},
        {"name": "queries: read+text+count pages/s", "ours": n_full / t_full, "baseline": n_floor / t_floor,
         "unit": "pages/s", "ratio": t_floor / t_full, "target": "informational (vs floor)"},
        *budget_rows(),
    ]


if __name__ == "__main__":
    for row in run():
        print(row)
