"""The union of the sources: provenance, normalisation rejects, max_queries priority, import."""

from __future__ import annotations

from witcurate.queries import union
from witcurate.queries.union import Entry, SourceData


def _data() -> SourceData:
    return SourceData(
        unigrams={"dog": 500, "the": 90_000, "York": 300, "cat": 200},
        bigrams={"New York": (250, 9.5), "hot dog": (40, 12.0), "of the": (5000, 1.5)},
        titles={"New York": 900, "Dog": 80, "AC/DC": 75, "AC / DC": 71, "!!!": 300},
        wordnet={"dog": ("dog.n.01", "dog.n.03"), "hot dog": ("hotdog.n.02",), "": (".22_caliber.a.01",)},
        unigram_counts={"dog": 500, "the": 90_000, "York": 300, "cat": 200, "Dog": 12},
        bigram_counts={"New York": (250, 9.5), "hot dog": (40, 12.0), "of the": (5000, 1.5)},
    )


def test_union_is_exact_and_case_sensitive_with_provenance():
    entries = union.union(_data())
    assert set(entries) == {"dog", "the", "York", "cat", "New York", "hot dog", "of the", "Dog",
                            "AC/DC", "AC / DC", "!!!", ""}
    dog = entries["dog"]
    assert dog.sources == ["wordnet", "unigram"] and dog.unigram_count == 500
    assert dog.synsets == ["dog.n.01", "dog.n.03"] and dog.views is None
    ny = entries["New York"]
    assert ny.sources == ["title", "bigram"]
    assert (ny.views, ny.bigram_count, ny.pmi) == (900, 250, 9.5)
    # a title that is also a (rare) word gets its corpus count without becoming a unigram entry
    assert entries["Dog"].sources == ["title"] and entries["Dog"].unigram_count == 12
    assert entries["hot dog"].sources == ["wordnet", "bigram"] and entries["hot dog"].pmi == 12.0


def test_select_rejects_and_balances():
    entries = union.union(_data())
    sel = union.select(entries.values(), max_queries=1000)
    reasons = {r.entry.query: r.reason for r in sel.rejected}
    assert reasons == {"!!!": "empty_after_normalisation", "": "empty_after_normalisation",
                       "AC / DC": "duplicate_after_normalisation"}
    dup = next(r for r in sel.rejected if r.entry.query == "AC / DC")
    assert "'AC/DC'" in dup.detail                           # survivor: the more viewed title
    assert sel.n_in == len(entries) == len(sel.kept) + len(sel.rejected)
    assert [e.query for e in sel.kept] == sorted(e.query for e in sel.kept)
    assert sel.per_source == {"bigram": 3, "title": 5, "unigram": 4, "wordnet": 3}
    assert sel.overlaps == {"title&bigram": 1, "wordnet&bigram": 1, "wordnet&unigram": 1}


def test_max_queries_priority_wordnet_titles_unigrams_bigrams():
    entries = union.union(_data())
    ranked = sorted((e for e in entries.values() if e.query not in ("!!!", "", "AC / DC")),
                    key=union.priority)
    assert [e.query for e in ranked] == [
        "dog", "hot dog",                                    # WordNet (and another source)
        "New York", "Dog", "AC/DC",                          # titles: more sources, then views
        "the", "York", "cat",                                # unigrams by count
        "of the",                                            # bigrams by PMI
    ]
    sel = union.select(entries.values(), max_queries=6)
    assert [e.query for e in sel.kept] == sorted(["dog", "hot dog", "New York", "AC/DC", "Dog", "the"])
    over = [r for r in sel.rejected if r.reason == "over_max_queries"]
    assert [r.entry.query for r in over] == ["York", "cat", "of the"]
    assert "priority rank 7 > max_queries 6 (best source: unigram)" == over[0].detail
    assert len(sel.kept) + len(sel.rejected) == sel.n_in


def test_import_dedupes_and_keeps_file_order_for_the_limit():
    entries, repeats = union.from_import(["b", "a", "b", "  ", "a  ", "c"])
    assert [r.reason for r in repeats] == ["duplicate_in_import"]
    sel = union.select(entries, max_queries=2, pre_rejected=repeats)
    assert [e.query for e in sel.kept] == ["a", "b"]
    assert sorted((r.entry.query, r.reason) for r in sel.rejected) == [
        ("  ", "empty_after_normalisation"), ("a  ", "duplicate_after_normalisation"),
        ("b", "duplicate_in_import"), ("c", "over_max_queries")]
    assert sel.n_in == 6 and all(e.sources == ["import"] for e in sel.kept)


def test_entry_record_is_json_ready():
    rec = Entry("dog", ["wordnet"], synsets=["dog.n.01"]).record()
    assert rec == {"query": "dog", "sources": ["wordnet"], "unigram_count": None,
                   "bigram_count": None, "pmi": None, "views": None, "synsets": ["dog.n.01"]}
