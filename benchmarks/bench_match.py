"""Match: captions/s against a 500,000-entry list on one core, side by side with a naive
per-entry substring scan (MetaCLIP's reference rule, on a sample), the bare pyahocorasick loop
(no normalisation, no whole-token padding), and the whole match stage with its parquet I/O on the
local Beam runner: with the list compiled by the queries stage, and building the automaton itself."""

from __future__ import annotations

import random
import string
import time
from pathlib import Path

import ahocorasick

from witcurate.pipeline.matcher import QueryMatcher


def naive_match(caption: str, entries: list[str]) -> list[int]:
    """The plain per-entry substring scan of MetaCLIP's rule, written out here so the baseline
    runs none of witcurate's code: punctuation spaced out, then " entry " looked up in " caption "."""
    for ch in ",.;:?!\"`":
        caption = caption.replace(ch, f" {ch} ")
    text = " " + caption.replace("\t", " ").replace("\n", " ") + " "
    return [i for i, e in enumerate(entries) if f" {e} " in text]


def stage_rate(entries: list[str], captions: list[str], compiled: bool = True) -> float:
    """Captions/s of the whole match stage (read parquet, match, write kept and rejects). With
    `compiled` the list's automaton lies beside it, as the queries stage leaves it; without, the
    stage builds it (a list of the user's own given with --queries)."""
    import json
    import tempfile

    import pyarrow as pa
    import pyarrow.parquet as pq

    from witcurate import schemas
    from witcurate.config import Config
    from witcurate.pipeline.match import MatchStage
    from witcurate.pipeline.runner import run_stage

    with tempfile.TemporaryDirectory() as tmp:
        raw = json.dumps(entries).encode()
        (Path(tmp) / "queries.json").write_bytes(raw)
        if compiled:
            QueryMatcher(entries).save_compiled(tmp, raw)
        ingest = Path(tmp) / "ingest"
        (ingest / "rejects").mkdir(parents=True)
        rows = [{"uid": f"{i:032x}", "url": f"http://h/{i}.jpg", "caption": c, "source": "bench"}
                for i, c in enumerate(captions)]
        pq.write_table(pa.Table.from_pylist(rows, schemas.CANDIDATES), ingest / "part-00000.parquet")
        t0 = time.perf_counter()
        run_stage(MatchStage(), Config(), f"{tmp}/match",
                  {"in": str(ingest), "queries": f"{tmp}/queries.json"}, progress=lambda s: None)
        return len(captions) / (time.perf_counter() - t0)


def make_world(n_entries: int = 500_000, n_captions: int = 50_000, seed: int = 0):
    rng = random.Random(seed)
    vocab = sorted({"".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 9))) for _ in range(300_000)})
    entries = set(vocab[:n_entries])
    while len(entries) < n_entries:
        entries.add(f"{rng.choice(vocab)} {rng.choice(vocab)}")
    captions = [" ".join(rng.choice(vocab) for _ in range(rng.randint(6, 16))) + rng.choice([".", "!", ""])
                for _ in range(n_captions)]
    return sorted(entries), captions


TRIALS = 5          # loops measured in turns, best of each: single runs here vary by up to 30%


def bare_loop(automaton, captions: list[str]) -> None:
    for c in captions:
        list(automaton.iter(c))


def rate(fn, captions: list[str]) -> float:
    t0 = time.perf_counter()
    fn(captions)
    return len(captions) / (time.perf_counter() - t0)


def run() -> list[dict]:
    entries, captions = make_world()
    t0 = time.perf_counter()
    matcher = QueryMatcher(entries)
    build = time.perf_counter() - t0
    matched = sum(bool(ids) for ids in matcher.match_all(captions))

    bare = ahocorasick.Automaton()
    for i, e in enumerate(entries):
        bare.add_word(e, i)
    bare.make_automaton()
    ours, baseline = 0.0, 0.0
    for _ in range(TRIALS):
        ours = max(ours, rate(matcher.match_all, captions))
        baseline = max(baseline, rate(lambda cs: bare_loop(bare, cs), captions))
    sample = captions[:20]
    t0 = time.perf_counter()
    for c in sample:
        naive_match(c, entries)
    naive = len(sample) / (time.perf_counter() - t0)
    # The stage's fixed costs (Beam start-up, building the automaton on the worker) are paid once
    # per run: measure it on 10x the captions so the rate is the stage's, not its start-up's.
    stage = max(stage_rate(entries, captions * 10) for _ in range(2))
    stage_building = stage_rate(entries, captions * 10, compiled=False)
    print(f"automaton over {len(entries):,} entries built in {build:.1f}s; {matched:,}/{len(captions):,} captions matched")
    print(f"naive substring scan {naive:,.1f}/s, bare loop {baseline:,.0f}/s, matcher {ours:,.0f}/s, "
          f"match stage with I/O {stage:,.0f}/s ({stage_building:,.0f}/s when it builds the automaton)")
    return [
        {"name": "match stage with I/O vs bare loop", "ours": stage, "baseline": baseline,
         "unit": "captions/s", "ratio": stage / baseline, "target": ">= 0.8 of the bare loop"},
        {"name": "match stage building its automaton", "ours": stage_building, "baseline": baseline,
         "unit": "captions/s", "ratio": stage_building / baseline, "target": "(a list without matcher.pkl)"},
        {"name": "match vs naive substring scan", "ours": ours, "baseline": naive,
         "unit": "captions/s", "ratio": ours / naive, "target": "(MetaCLIP's reference rule)"},
        {"name": "match captions/s (500k entries)", "ours": ours, "baseline": baseline,
         "unit": "captions/s", "ratio": ours / baseline, "target": ">= 25,000 captions/s"},
        {"name": "match automaton build", "ours": build, "baseline": 60.0, "unit": "s",
         "ratio": build / 60.0, "target": "< 60 s (ratio < 1)"},
    ]
