"""Per-source budgets: the rankings, the Beam transform that admits the top entries, the report,
the configs, and the demo world's query list under configs/demo.yaml."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to

from witcurate.config import QueriesSection, load_config
from witcurate.pipeline.beam_io import make_pipeline
from witcurate.pipeline.runner import run_stage
from witcurate.pipeline.tables import read_table
from witcurate.queries import budgets
from witcurate.queries.stage import QueriesStage
from witcurate.queries.transforms import Admit

REPO = Path(__file__).resolve().parents[1]


def test_rankings_order_by_the_source_figure_then_the_string():
    unigrams = [("cat", 5), ("dog", 9), ("ant", 5), ("bee", 7)]
    assert sorted(unigrams, key=budgets.unigram_rank) == [("dog", 9), ("bee", 7), ("ant", 5), ("cat", 5)]
    titles = [("Zebra", 80), ("Aardvark", 80), ("Moon", 900)]
    assert sorted(titles, key=budgets.title_rank) == [("Moon", 900), ("Aardvark", 80), ("Zebra", 80)]
    # bigrams: PMI, then (first word, second word) as NLTK's score_ngrams breaks ties; the
    # count plays no part
    bigrams = [("hot dog", 40, 7.5), ("New York", 250, 9.0), ("big cat", 31, 7.5), ("big apple", 30, 7.5)]
    assert [k for k, *_ in sorted(bigrams, key=budgets.bigram_rank)] == [
        "New York", "big apple", "big cat", "hot dog"]


def test_admit_keeps_the_top_of_each_budget_on_beam():
    rows = [("the", 900), ("of", 700), ("dog", 120), ("cat", 120), ("ant", 100), ("bee", 99)]
    with make_pipeline() as p:
        words = p | beam.Create(rows)
        top3 = words | "Top3" >> Admit(3, budgets.unigram_rank)
        everything = words | "NoBudget" >> Admit(-1, budgets.unigram_rank)
        roomy = words | "Roomy" >> Admit(100, budgets.unigram_rank)
        none = words | "Zero" >> Admit(0, budgets.unigram_rank)
        assert_that(top3, equal_to([("the", 900), ("of", 700), ("cat", 120)]), label="Top3Check")
        assert_that(everything, equal_to(rows), label="NoBudgetCheck")
        assert_that(roomy, equal_to(rows), label="RoomyCheck")
        assert_that(none, equal_to([]), label="ZeroCheck")


def test_report_counts_before_and_after_each_budget():
    cfg = QueriesSection(max_unigrams=2, max_bigrams=-1, max_titles=5)
    admitted = {"unigram": [["the", 900], ["of", 700]],
                "bigram": [["hot dog", 40, 7.5], ["New York", 250, 9.0]],
                "title": []}
    report = budgets.report(cfg, {"unigram": 6, "bigram": 2, "title": 0}, admitted, 3,
                            Counter({"wordnet": 2, "unigram": 2, "bigram": 1}))
    assert report["unigram"] == {"floors": {"min_unigram_count": 100}, "before_budget": 6,
                                 "budget": 2, "after_budget": 2, "in_list": 2,
                                 "last_admitted": {"query": "of", "count": 700}}
    assert report["bigram"]["budget"] is None                      # -1: no budget
    assert report["bigram"]["last_admitted"] == {"query": "hot dog", "count": 40, "pmi": 7.5}
    assert report["bigram"]["floors"] == {"min_bigram_count": 30, "min_pmi": None}
    assert report["title"]["last_admitted"] is None and report["title"]["after_budget"] == 0
    assert report["wordnet"] == {"floors": {}, "before_budget": 3, "budget": None, "after_budget": 3,
                                 "last_admitted": None, "in_list": 2}


def test_defaults_are_metaclip_sizes_and_the_wikipedia_config_says_so():
    q = QueriesSection()
    metaclip = (100, 251_465, 30, None, 100_646, 70, 61_235, True, 500_000)

    def sizes(q):
        return (q.min_unigram_count, q.max_unigrams, q.min_bigram_count, q.min_pmi, q.max_bigrams,
                q.min_title_views, q.max_titles, q.wordnet, q.max_queries)
    assert sizes(q) == metaclip
    assert sizes(load_config(str(REPO / "configs" / "wikipedia.yaml")).queries) == metaclip
    demo = load_config(str(REPO / "configs" / "demo.yaml")).queries
    assert (demo.max_unigrams, demo.max_bigrams, demo.max_titles, demo.min_pmi) == (1000, 1500, 200, None)
    assert load_config(None, ["queries.min_pmi=8.5"]).queries.min_pmi == 8.5


# ---------------------------------------------------------------------------------------------
# The demo world's dump and pageviews under configs/demo.yaml (WordNet left out: it has no budget)


@pytest.fixture(scope="module")
def demo_queries(tmp_path_factory):
    from witcurate.demo import pageviews, wiki
    root = tmp_path_factory.mktemp("demo_queries")
    pages = wiki.build_pages(0)
    dump = wiki.write_dump(str(root / "dump"), pages)["dump"]
    views = pageviews.plan_views([p.title for p in pages if p.ns == 0], wiki.demo_titles(), 0)
    pageviews.write_pageviews(str(root / "pageviews"), views, 0)
    cfg = load_config(str(REPO / "configs" / "demo.yaml"), [
        f"queries.dumps=[{dump}]", f"queries.pageviews=['{root}/pageviews/pageviews-*.gz']",
        "queries.wordnet=false"])
    stage, out = QueriesStage(), root / "run" / "queries"
    manifest = run_stage(stage, cfg, str(out), stage.default_inputs(cfg, str(out.parent)),
                         progress=lambda msg: None)
    return manifest, {r["query"]: r for r in read_table(str(out)).to_pylist()}


def test_demo_bigram_budget_bites_and_keeps_the_demo_vocabulary(demo_queries):
    from witcurate.demo import pageviews
    from witcurate.demo.vocab import COLOURS, SHAPES, caption_words
    manifest, rows = demo_queries
    sources = manifest["sources"]
    bigram = sources["bigram"]
    assert bigram["before_budget"] == 4100 and bigram["after_budget"] == 1500 == bigram["budget"]
    # the last bigram admitted is still well associated (the old demo floor was PMI >= 3)
    assert 4.0 < bigram["last_admitted"]["pmi"] < 4.5
    assert all(r["pmi"] >= bigram["last_admitted"]["pmi"] for r in rows.values() if "bigram" in r["sources"])
    for colour in COLOURS:
        for shape, plural in SHAPES.items():
            for word in (shape, plural):
                assert "bigram" in rows[f"{colour} {word}"]["sources"], (colour, word)
    assert all("unigram" in rows[w]["sources"] for w in caption_words())
    # the unigram and title budgets leave room: everything over the floor is in
    assert (sources["unigram"]["before_budget"], sources["unigram"]["after_budget"]) == (583, 583)
    assert (sources["title"]["before_budget"], sources["title"]["after_budget"]) == (137, 137)
    assert rows[pageviews.AT_THRESHOLD]["views"] == 70
    assert "title" not in rows.get(pageviews.BELOW_THRESHOLD, {"sources": []})["sources"]
    c = manifest["counts"]
    assert c["in"] == c["kept"] + c["rejected"] and len(rows) == c["kept"]
