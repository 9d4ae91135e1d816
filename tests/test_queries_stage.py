"""The queries stage end to end through the runner: real dump, hand-made corpus, import, errors."""

from __future__ import annotations

import gzip
import json
import math

import pyarrow.parquet as pq
import pytest

from queries_support import (ENWIKI, write_multistream, write_pageviews, write_plain,
                             wordnet_data_dir)
from beam_modes import MULTI_PROCESS
from witcurate.config import Config, load_config
from witcurate.errors import InputError, UserError
from witcurate.pipeline.runner import run_stage
from witcurate.pipeline.tables import read_table
from witcurate.pipeline.stages import get_stage
from witcurate.queries import counts, dump, wikitext
from witcurate.queries.stage import SOURCES_METADATA, QueriesStage


def _run(cfg: Config, out_dir, beam_args: list[str] | None = None) -> dict:
    stage = QueriesStage()
    return run_stage(stage, cfg, str(out_dir), stage.default_inputs(cfg, str(out_dir.parent)),
                     beam_args or [], progress=lambda msg: None)


def _rows(out_dir) -> dict[str, dict]:
    return {r["query"]: r for r in read_table(str(out_dir)).to_pylist()}


def _rejects(out_dir) -> dict[str, str]:
    t = pq.read_table(out_dir / "rejects" / "part-00000.parquet").to_pylist()
    return {json.loads(r["record"])["query"]: r["reason"] for r in t}


def _config(**queries) -> Config:
    cfg = Config()
    cfg.queries.wordnet = False
    for key, value in queries.items():
        setattr(cfg.queries, key, value)
    return cfg


def test_registry_and_declarations():
    stage = get_stage("queries")
    assert isinstance(stage, QueriesStage) and stage.sections == ("queries",)
    cfg = load_config(None, [f"{o.key}={'7' if o.type is int else 'x.xml.bz2'}" for o in stage.options])
    assert cfg.queries.dumps == ["x.xml.bz2"] and cfg.queries.max_queries == 7
    cfg = _config(dumps=["a.bz2", "b/*.bz2"], pageviews=["pv/*.gz"])
    assert stage.default_inputs(cfg, "out") == {"dump0": "a.bz2", "dump1": "b/*.bz2", "pageviews0": "pv/*.gz"}
    cfg.queries.import_json = "m.json"
    assert stage.default_inputs(cfg, "out") == {"import": "m.json"}


# ---------------------------------------------------------------------------------------------
# The real enwiki sample, at Wikipedia's floors (unigrams >= 100, bigrams >= 30, titles >= 70
# views, no PMI floor) with budgets small enough to bite: 472 unigrams and 738 bigrams pass
# their floors on this sample, 6 titles do.

ENWIKI_BUDGETS = dict(max_unigrams=300, max_bigrams=100, max_titles=5)


@pytest.fixture(scope="module")
def enwiki_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("enwiki")
    write_pageviews(tmp / "pageviews-20240101-000000.gz", [
        "en Albedo 60 0", "en.m Albedo 40 0", "en Anarchism 500 0", "en Talk:Anarchism 900 0",
        "en !!! 80 0", "en Autism 10 0", "en this_line_is_broken", "de Albedo 999 0",
        "en Alabama 90 0", "en Achilles 69 0"])
    write_pageviews(tmp / "pageviews-20240101-010000.gz", ["en Autism 65 0", "en Blade_Runner 75 0"])
    cfg = _config(dumps=[str(ENWIKI)], pageviews=[str(tmp / "pageviews-*.gz")], **ENWIKI_BUDGETS)
    assert (cfg.queries.min_unigram_count, cfg.queries.min_bigram_count, cfg.queries.min_pmi,
            cfg.queries.min_title_views) == (100, 30, None, 70)
    out = tmp / "run" / "queries"
    return cfg, out, _run(cfg, out)


@pytest.fixture(scope="module")
def enwiki_counts():
    """The sample counted in process (the reference the Beam counting must agree with)."""
    return counts.count_texts(wikitext.to_text(p.text) for p in dump.iter_pages(str(ENWIKI))
                              if dump.is_article(p))


def test_enwiki_manifest_balances_and_reports_sources(enwiki_run):
    cfg, out, manifest = enwiki_run
    c = manifest["counts"]
    assert c["in"] == c["kept"] + c["rejected"] == 300 + 100 + 5 - 1     # Alabama: title and unigram
    assert c["reasons"] == {"empty_after_normalisation": 1}          # the title "!!!"
    corpus = manifest["corpus"]
    assert (corpus["pages"], corpus["articles"], corpus["redirects"], corpus["other_namespace"]) == (206, 106, 99, 1)
    assert corpus["wikitext_errors"] == 0 and 400_000 < corpus["tokens"] < 550_000
    sources = manifest["sources"]
    assert {s: (r["before_budget"], r["budget"], r["after_budget"]) for s, r in sources.items()} == {
        "wordnet": (0, None, 0), "title": (6, 5, 5), "unigram": (472, 300, 300), "bigram": (738, 100, 100)}
    assert sources["bigram"]["floors"] == {"min_bigram_count": 30, "min_pmi": None}
    assert sources["title"]["last_admitted"] == {"query": "Autism", "views": 75}   # tie: "Blade Runner" cut
    assert sources["unigram"]["last_admitted"] == {"query": "forces", "count": 141}  # tie: "however" cut
    assert sources["title"]["in_list"] == 4 and sources["unigram"]["in_list"] == 300   # not "!!!"
    assert manifest["overlaps"] == {"title&unigram": 1}
    pv = manifest["pageviews"]
    assert pv["files"] == 2 and pv["lines"] == 12 and pv["malformed_fields"] == 1
    assert pv["other_project"] == 1 and pv["other_namespace"] == 1 and pv["titles_over_min"] == 6
    assert manifest["bad_inputs"] == [] and manifest["dumps"][0]["schema"] == "0.10"
    assert manifest["counting"]["pages_per_second"] > 0
    # the same report travels with the list, in the Parquet file's metadata
    meta = pq.read_schema(out / "part-00000.parquet").metadata
    assert json.loads(meta[SOURCES_METADATA.encode()]) == sources


def test_enwiki_outputs(enwiki_run):
    cfg, out, manifest = enwiki_run
    table = read_table(str(out))
    queries = json.loads((out / "queries.json").read_text(encoding="utf-8"))
    assert queries == sorted(queries) == table.column("query").to_pylist()
    assert table.column("query_id").to_pylist() == list(range(len(queries)))
    rows = _rows(out)
    the = rows["the"]
    assert the["sources"] == ["unigram"] and the["unigram_count"] == max(
        r["unigram_count"] or 0 for r in rows.values())
    albedo = rows["Albedo"]
    assert albedo["sources"] == ["title"] and albedo["views"] == 100
    assert albedo["unigram_count"] == 10        # below 100: looked up for the title, no unigram entry
    assert "albedo" not in rows                 # 78 < 100
    assert rows["Autism"]["views"] == 75                              # summed over both files
    assert rows["Alabama"]["sources"] == ["title", "unigram"] and rows["Alabama"]["views"] == 90
    assert rows["Anarchism"]["sources"] == ["title"] and rows["Anarchism"]["unigram_count"] == 26
    assert "Blade Runner" not in rows and "Talk:Anarchism" not in rows        # budget, namespace
    assert "title" not in rows.get("Achilles", {"sources": []})["sources"]   # 69 views: under the floor
    assert _rejects(out) == {"!!!": "empty_after_normalisation"}


def test_enwiki_unigram_floor_and_budget_keep_exactly_the_most_frequent(enwiki_run, enwiki_counts):
    _, out, manifest = enwiki_run
    eligible = sorted(((w, n) for w, n in enwiki_counts.unigrams.items() if n >= 100),
                      key=lambda wn: (-wn[1], wn[0]))                   # most frequent first
    assert len(eligible) == manifest["sources"]["unigram"]["before_budget"] == 472
    got = {q: r["unigram_count"] for q, r in _rows(out).items() if "unigram" in r["sources"]}
    assert got == dict(eligible[:300])
    assert min(got.values()) == 141 == dict(eligible)["however"]        # cut by the tie-break
    assert all(n >= 100 for n in got.values())


def test_enwiki_bigrams_ranked_by_nltk_pmi(enwiki_run, enwiki_counts):
    """The bigram entries are NLTK's own top 100 by BigramAssocMeasures.pmi among the bigrams
    counted >= 30 times, with NLTK's PMI values to the last bit."""
    from nltk import FreqDist
    from nltk.collocations import BigramAssocMeasures, BigramCollocationFinder
    _, out, manifest = enwiki_run
    finder = BigramCollocationFinder(
        FreqDist(dict(enwiki_counts.unigrams)),
        FreqDist({tuple(k.split(" ")): n for k, n in enwiki_counts.bigrams.items()}))
    assert finder.N == enwiki_counts.words == manifest["corpus"]["tokens"]
    finder.apply_freq_filter(30)
    scored = finder.score_ngrams(BigramAssocMeasures.pmi)
    assert len(scored) == manifest["sources"]["bigram"]["before_budget"] == 738
    want = {" ".join(ngram): score for ngram, score in scored[:100]}
    rows = _rows(out)
    got = {q: r["pmi"] for q, r in rows.items() if "bigram" in r["sources"]}
    assert got == want
    assert all(rows[q]["bigram_count"] >= 30 for q in got)
    last = manifest["sources"]["bigram"]["last_admitted"]
    assert (last["query"], last["pmi"]) == (" ".join(scored[99][0]), scored[99][1])
    assert scored[100][1] <= last["pmi"] and " ".join(scored[100][0]) not in rows


# ---------------------------------------------------------------------------------------------
# A hand-made corpus with counts worked out by hand (queries_support.PAGES):
#   Alpha -> "cat sat." / "cat sat." / "dog ran"      (ref, template, comment, category and file
#                                                      links and the table are removed)
#   Beta  -> "cat sat" (heading) / "cat sat on Mouse"
#   Gamma, Delta: redirects; Talk:Alpha: another namespace
# Words: cat 4, sat 4, dog 1, ran 1, on 1, Mouse 1 -> N = 12. Bigrams: "cat sat" 4 (never
# across the full stops or lines), "dog ran", "sat on", "on Mouse" 1 each.
# PMI(cat sat) = log2(4 * 12 / (4 * 4)) = log2(3).
# Titles: Cat 50+30, Hot dog 40+35 (hourly gz + daily bz2), Café 70, Mouse 69+1; Talk:Cat,
# de and the 69-view Dog are not titles.

HAND_THRESHOLDS = dict(min_unigram_count=2, min_bigram_count=2, min_pmi=1.0, min_title_views=70)


def _hand_pageviews(tmp):
    write_pageviews(tmp / "pageviews-20240101-000000.gz", [
        "en Cat 50 0", "en.m Cat 30 0", "en Talk:Cat 500 0", "de Cat 1000 0", "en Hot_dog 40 0",
        "en Mouse 69 0", "en Dog 69 0", "en Caf%C3%A9 70 0", "en bad"])
    write_pageviews(tmp / "pageviews-20240102-user.bz2", [
        "en.wikipedia Hot_dog null desktop 35 A35", "en.wikipedia Mouse 7 mobile-web 1 A1"])
    return [str(tmp / "pageviews-*")]


EXPECTED = {
    "Café": dict(sources=["title"], views=70, unigram_count=None, bigram_count=None),
    "Cat": dict(sources=["title"], views=80, unigram_count=None, bigram_count=None),
    "Hot dog": dict(sources=["title"], views=75, unigram_count=None, bigram_count=None),
    "Mouse": dict(sources=["title"], views=70, unigram_count=1, bigram_count=None),
    "cat": dict(sources=["unigram"], views=None, unigram_count=4, bigram_count=None),
    "cat sat": dict(sources=["bigram"], views=None, unigram_count=None, bigram_count=4),
    "sat": dict(sources=["unigram"], views=None, unigram_count=4, bigram_count=None),
}


def test_handmade_dump_exact_counts_and_multistream_same_as_plain(tmp_path):
    """The plain dump counted in this process, the multistream one in Beam's worker processes:
    the same rows and counts show both that the two formats read alike and that the counting
    runs in worker processes as it does in the driver."""
    pv = _hand_pageviews(tmp_path)
    plain = write_plain(tmp_path / "enwiki-20240101-pages-articles.xml.bz2")
    multi, _ = write_multistream(tmp_path / "enwiki-20240101-pages-articles-multistream.xml.bz2",
                                 per_stream=1)
    results = {}
    for name, path, beam_args in (("plain", plain, []), ("multi", multi, MULTI_PROCESS)):
        cfg = _config(dumps=[str(path)], pageviews=pv, split_mb=1, **HAND_THRESHOLDS)
        manifest = _run(cfg, tmp_path / name / "queries", beam_args)
        results[name] = (manifest, read_table(str(tmp_path / name / "queries")).to_pylist())
    (m_plain, rows_plain), (m_multi, rows_multi) = results["plain"], results["multi"]
    assert rows_plain == rows_multi
    assert m_multi["dumps"][0]["multistream"] and m_multi["dumps"][0]["index"]
    assert not m_plain["dumps"][0]["multistream"]
    assert m_plain["corpus"] == m_multi["corpus"]
    corpus = m_plain["corpus"]
    assert (corpus["pages"], corpus["articles"], corpus["redirects"], corpus["other_namespace"]) == (5, 2, 2, 1)
    assert (corpus["tokens"], corpus["distinct_words"], corpus["distinct_bigrams"]) == (12, 6, 4)

    rows = {r["query"]: r for r in rows_plain}
    assert list(rows) == sorted(EXPECTED)
    for query, want in EXPECTED.items():
        for key, value in want.items():
            assert rows[query][key] == value, (query, key)
    assert rows["cat sat"]["pmi"] == pytest.approx(math.log2(3))
    assert rows["Cat"]["pmi"] is None and rows["cat"]["synsets"] == []
    pv_stats = m_plain["pageviews"]
    assert (pv_stats["lines"], pv_stats["counted_lines"], pv_stats["malformed_fields"],
            pv_stats["other_project"], pv_stats["other_namespace"]) == (11, 8, 1, 1, 1)
    assert "en bad" in pv_stats["malformed_samples"][0]
    assert m_plain["counts"] == {"in": 7, "kept": 7, "rejected": 0, "reasons": {}}


def test_handmade_with_wordnet(tmp_path, tmp_path_factory):
    data_dir = wordnet_data_dir(tmp_path_factory)
    cfg = _config(dumps=[str(write_plain(tmp_path / "d-pages-articles.xml.bz2"))],
                  wordnet=True, wordnet_dir=data_dir, max_queries=86_555, **HAND_THRESHOLDS)
    manifest = _run(cfg, tmp_path / "run" / "queries")
    assert manifest["wordnet"]["names"] == 86_555
    assert {s: r["after_budget"] for s, r in manifest["sources"].items()} == {
        "wordnet": 86_555, "title": 0, "unigram": 2, "bigram": 1}
    assert manifest["sources"]["wordnet"]["in_list"] == 86_554                 # not ""
    assert manifest["overlaps"] == {"wordnet&unigram": 1}            # "cat" ("sat" is no head name)
    rows = _rows(tmp_path / "run" / "queries")
    assert rows["cat"]["sources"] == ["wordnet", "unigram"] and "cat.n.01" in rows["cat"]["synsets"]
    assert rows["dog"]["sources"] == ["wordnet"] and rows["dog"]["unigram_count"] == 1
    c = manifest["counts"]
    # "" (from .22_caliber.a.01) has no word; the bigram, last by priority, is over the limit
    assert c["reasons"] == {"empty_after_normalisation": 1, "over_max_queries": 1}
    assert _rejects(tmp_path / "run" / "queries") == {"": "empty_after_normalisation",
                                                      "cat sat": "over_max_queries"}
    assert c["in"] == 86_555 + 2 == c["kept"] + c["rejected"]        # + "sat", "cat sat"


def test_bad_inputs_fail_by_default_and_are_reported_when_skipped(tmp_path):
    plain = write_plain(tmp_path / "x-pages-articles.xml.bz2")
    # a multistream dump without its index whose footer stream is cut short: the header reads
    # fine, the split holding the footer does not
    multi, _ = write_multistream(tmp_path / "cut-pages-articles-multistream.xml.bz2", with_index=False)
    multi.write_bytes(multi.read_bytes()[:-30])
    gz = gzip.compress(b"".join(b"en Page_%d 5 0\n" % i for i in range(3000)))
    (tmp_path / "pageviews-20240101-000000.gz").write_bytes(gz[: len(gz) // 2])
    cfg = _config(dumps=[str(multi)], **HAND_THRESHOLDS)
    with pytest.raises(InputError, match="1 unreadable input part.*truncated bz2 stream starting at byte") as err:
        _run(cfg, tmp_path / "fail" / "queries")
    assert "skip_bad_inputs" in err.value.hint
    assert not (tmp_path / "fail" / "queries").exists()

    cfg = _config(dumps=[str(multi), str(plain)], pageviews=[str(tmp_path / "pageviews-*.gz")],
                  skip_bad_inputs=True, **{**HAND_THRESHOLDS, "min_pmi": 2.0, "max_bigrams": 1})
    manifest = _run(cfg, tmp_path / "skip" / "queries")
    bad = sorted(manifest["bad_inputs"], key=lambda b: b["kind"])
    assert [b["kind"] for b in bad] == ["dump_split", "pageview_file"]
    assert "truncated bz2 stream" in bad[0]["error"] and bad[0]["pages_read_before_error"] == 5
    assert "cannot read the pageview file" in bad[1]["error"] and bad[1]["lines_read_before_error"] > 0
    # the cut dump lost only its footer: both copies of the corpus were counted (N = 2 x 12),
    # so every word and bigram now reaches the count of 2. PMI: "dog ran" and "on Mouse"
    # log2(2 * 24 / (2 * 2)) = 3.58 pass the optional floor of 2, "cat sat" log2(8 * 24 / (8 * 8))
    # and "sat on" log2(2 * 24 / (8 * 2)) = 1.58 do not; the budget of 1 breaks the tie by the words.
    assert manifest["corpus"]["tokens"] == 24
    rows = _rows(tmp_path / "skip" / "queries")
    assert set(rows) == {"cat", "sat", "dog", "ran", "on", "Mouse", "dog ran"}
    assert rows["dog ran"]["pmi"] == pytest.approx(math.log2(12))
    bigram = manifest["sources"]["bigram"]
    assert (bigram["before_budget"], bigram["after_budget"]) == (2, 1)
    assert bigram["floors"] == {"min_bigram_count": 2, "min_pmi": 2.0}


# ---------------------------------------------------------------------------------------------
# Import and user errors


def test_import_mode(tmp_path):
    path = tmp_path / "metadata.json"
    path.write_text(json.dumps(["dog", "hot dog", "Dog", "dog", "!!!", "hot  dog", "cat", "zebra"]))
    cfg = _config(import_json=str(path), max_queries=4, dumps=["/nonexistent/ignored.xml.bz2"])
    manifest = _run(cfg, tmp_path / "run" / "queries")
    out = tmp_path / "run" / "queries"
    assert json.loads((out / "queries.json").read_text()) == ["Dog", "cat", "dog", "hot dog"]
    assert manifest["counts"] == {"in": 8, "kept": 4, "rejected": 4, "reasons": {
        "duplicate_after_normalisation": 1, "duplicate_in_import": 1,
        "empty_after_normalisation": 1, "over_max_queries": 1}}
    assert _rejects(out)["zebra"] == "over_max_queries"
    assert all(r["sources"] == ["import"] for r in _rows(out).values())
    assert manifest["mode"] == "import" and manifest["inputs"]["import"]["path"] == str(path)
    assert manifest["sources"] == {"import": {"floors": {}, "before_budget": 7, "budget": None,
                                              "after_budget": 7, "last_admitted": None, "in_list": 4}}


@pytest.mark.parametrize("content,message", [
    ('{"dog": 1}', "holds a JSON dict, not an array"),
    ('["dog", 3]', "entry 1 is 3, not a string"),
    ('["dog",', "is not valid JSON"),
])
def test_import_bad_lists_are_user_errors(tmp_path, content, message):
    path = tmp_path / "metadata.json"
    path.write_text(content)
    with pytest.raises(UserError, match=message):
        _run(_config(import_json=str(path)), tmp_path / "run" / "queries")


def test_missing_inputs_are_user_errors(tmp_path, monkeypatch):
    with pytest.raises(UserError, match="query list not found"):
        _run(_config(import_json=str(tmp_path / "none.json")), tmp_path / "a" / "queries")
    with pytest.raises(UserError, match="dump file not found") as err:
        _run(_config(dumps=[str(tmp_path / "enwiki.xml.bz2")]), tmp_path / "b" / "queries")
    assert "--dump" in err.value.hint
    with pytest.raises(UserError, match="no pageview files match"):
        _run(_config(pageviews=[str(tmp_path / "pageviews-*.gz")]), tmp_path / "c" / "queries")
    with pytest.raises(UserError, match="nothing to build the query list from"):
        _run(_config(), tmp_path / "d" / "queries")
    import nltk
    monkeypatch.chdir(tmp_path)                      # no ./.nltk_data from `make wordnet`
    monkeypatch.setenv("NLTK_DATA", str(tmp_path))
    monkeypatch.setattr(nltk.data, "path", [str(tmp_path)])
    with pytest.raises(UserError, match="WordNet data not found") as err:
        _run(_config(wordnet=True, wordnet_dir=str(tmp_path / "nowhere")), tmp_path / "e" / "queries")
    assert "make wordnet" in err.value.hint
