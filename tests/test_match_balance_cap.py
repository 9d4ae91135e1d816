"""Matching (MetaCLIP's rule as the floor), balancing and the strict per-query cap."""

import collections
import json
import pathlib
import pickle
import random
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from witcurate import schemas
from witcurate.config import Config
from witcurate.errors import InputError
from witcurate.filters.balance import keep_probability, uniform_from_uid
from witcurate.filters.cap import assign_query, cap_group
from witcurate.pipeline.balance import BalanceStage
from witcurate.pipeline.cap import CapStage
from witcurate.pipeline.match import MatchStage
from witcurate.pipeline import matcher as matcher_module
from witcurate.pipeline.matcher import QueryMatcher, metaclip_reference_match
from witcurate.pipeline.runner import run_stage
from witcurate.pipeline.tables import read_table
from witcurate.queries.tokenize import tokens, words_and_bigrams

quiet = dict(progress=lambda s: None)
ENTRIES = ["red", "red circle", "circle", "New York", "U.S.", "dog", "hot dog", "blue", "star",
           "Star", "a", "night sky", "C++", "rock 'n' roll"]
WORDS = ["red", "circle", "New", "York", "U.S.", "dog", "hot", "blue", "star", "Star", "a", "night",
         "sky", ",", ".", "!", "(dog)", "C++", "rock", "'n'", "roll", "the", "\t", "  "]


def _random_caption(rng: random.Random) -> str:
    """Words and punctuation, a third of them glued to the token before ("red," "dog.")."""
    caption = rng.choice(WORDS)
    for _ in range(rng.randint(0, 8)):
        caption += rng.choice([" ", " ", ""]) + rng.choice(WORDS)
    return caption


def test_matcher_finds_every_metaclip_match():
    rng = random.Random(0)
    matcher = QueryMatcher(ENTRIES)
    glued = 0
    for _ in range(2000):
        caption = _random_caption(rng)
        glued += bool(re.search(r"[a-z][,.!]", caption))
        ours = set(matcher.match(caption))
        assert set(metaclip_reference_match(caption, ENTRIES)) <= ours, caption
    assert glued > 100          # punctuation glued to words is tried, not only spaced out


def test_a_comma_glued_to_a_word_is_its_own_token():
    """`red, blue`: both words match, the comma is a token, and no bigram spans it."""
    assert tokens("red, blue") == ["red", ",", "blue"]
    assert words_and_bigrams("red, blue") == (["red", "blue"], [])
    assert words_and_bigrams("red blue") == (["red", "blue"], [("red", "blue")])
    matcher = QueryMatcher(["red", "blue", "red blue"])
    assert matcher.match("red, blue") == [0, 1]               # not "red blue" across the comma
    assert matcher.match("red blue") == [0, 1, 2]


def test_matcher_fixes_metaclip_blind_spots():
    matcher = QueryMatcher(ENTRIES)
    q = lambda c: {ENTRIES[i] for i in matcher.match(c)}
    assert "U.S." in q("made in the U.S. in 1990")           # entry with punctuation
    assert "dog" in q("a photo (dog) on grass")               # brackets glue words
    assert "New York" in q("New   York at night")             # runs of spaces
    assert "circle" not in q("two red circles")               # whole tokens only
    assert "Star" not in q("a star") and "star" in q("a star")  # case-sensitive
    assert ENTRIES.index("U.S.") not in metaclip_reference_match("made in the U.S. in 1990", ENTRIES)


def _stage_dir(path, rows, schema):
    path.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema), path / "part-00000.parquet")
    (path / "rejects").mkdir()
    return str(path)


def _candidates(captions):
    return [{"uid": f"u{i:04d}", "url": f"http://h/{i}.jpg", "caption": c, "source": "s"}
            for i, c in enumerate(captions)]


def test_match_stage(tmp_path):
    queries = sorted(["red", "circle", "blue star"])
    (tmp_path / "queries.json").write_text(json.dumps(queries))
    inp = _stage_dir(tmp_path / "ingest", _candidates(
        ["a red circle", "blue star at night", "nothing here", "a blue  star!"]), schemas.CANDIDATES)
    m = run_stage(MatchStage(), Config(), str(tmp_path / "match"),
                  {"in": inp, "queries": str(tmp_path / "queries.json")}, **quiet)
    assert m["counts"] == {"in": 4, "kept": 3, "rejected": 1, "reasons": {"no_query_match": 1}}
    got = {r["caption"]: [queries[i] for i in r["query_ids"]] for r in read_table(str(tmp_path / "match")).to_pylist()}
    assert got == {"a red circle": ["circle", "red"], "blue star at night": ["blue star"], "a blue  star!": ["blue star"]}


def _compiled_list(directory, queries) -> str:
    """A list file with its compiled matcher beside it, as the queries stage leaves them."""
    raw = json.dumps(queries).encode()
    (directory / "queries.json").write_bytes(raw)
    QueryMatcher(queries).save_compiled(str(directory), raw)
    return str(directory / "queries.json")


def test_a_compiled_list_is_loaded_not_rebuilt(tmp_path, monkeypatch):
    path = _compiled_list(tmp_path, ENTRIES)
    captions = [_random_caption(random.Random(seed)) for seed in range(300)]
    expected = [QueryMatcher(ENTRIES).match(c) for c in captions]

    def no_build(entry):
        raise AssertionError("the matcher was built, not loaded")
    monkeypatch.setattr(matcher_module, "entry_key", no_build)
    assert QueryMatcher.for_list(path).match_all(captions) == expected
    assert QueryMatcher.for_list(str(tmp_path)).match("a red circle") == sorted(
        ENTRIES.index(e) for e in ("a", "circle", "red", "red circle"))


def test_a_compiled_matcher_of_other_bytes_is_rebuilt(tmp_path):
    path = _compiled_list(tmp_path, ["red"])
    (tmp_path / "queries.json").write_text(json.dumps(["blue", "red"]))
    assert QueryMatcher.for_list(path).match("red blue") == [0, 1]


class _Touch:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.path),))


def test_a_compiled_matcher_runs_no_code_from_the_run_directory(tmp_path):
    """matcher.pkl lives in a run directory others may write: only an automaton comes out of it."""
    raw = json.dumps(["red"]).encode()
    (tmp_path / "queries.json").write_bytes(raw)
    marker = tmp_path / "ran"
    with open(tmp_path / matcher_module.COMPILED_NAME, "wb") as f:
        pickle.dump(matcher_module._compiled_header(raw), f)
        pickle.dump(_Touch(marker), f)
    assert QueryMatcher.for_list(str(tmp_path)).match("a red dog") == [0]
    assert not marker.exists()
    (tmp_path / matcher_module.COMPILED_NAME).write_bytes(b"not a pickle")
    assert QueryMatcher.for_list(str(tmp_path)).match("red") == [0]


def test_a_compiled_matcher_naming_ids_beyond_its_list_is_rebuilt(tmp_path):
    """A matcher.pkl whose header matches but whose key table does not fit the list (a damaged
    or hand-made file) is rebuilt, never trusted to index the list."""
    raw = json.dumps(["red", "blue"]).encode()
    (tmp_path / "queries.json").write_bytes(raw)
    automaton = QueryMatcher(["red", "blue"]).automaton
    with open(tmp_path / matcher_module.COMPILED_NAME, "wb") as f:
        for part in (matcher_module._compiled_header(raw), automaton,
                     np.array([0, 1, 2], np.int64).tobytes(), np.array([0, 7], np.int64).tobytes()):
            pickle.dump(part, f)
    assert QueryMatcher.for_list(str(tmp_path)).match("red blue") == [0, 1]


def test_keep_probability_formula():
    counts = {0: 100, 1: 10, 2: 400}
    assert keep_probability([1], counts, t=20) == 1.0
    assert keep_probability([0], counts, t=20) == pytest.approx(0.2)
    assert keep_probability([0, 2], counts, t=20) == pytest.approx(1 - 0.8 * 0.95)


def _matched(n_common=2000, n_rare=30):
    rows = []
    for i in range(n_common):
        rows.append({"uid": f"c{i:05d}", "url": f"http://h/c{i}.jpg", "caption": "red", "source": "s", "query_ids": [0]})
    for i in range(n_rare):
        rows.append({"uid": f"r{i:05d}", "url": f"http://h/r{i}.jpg", "caption": "red circle", "source": "s", "query_ids": [0, 1]})
    return rows


def test_balance_stage_is_deterministic_and_bounds_frequent_queries(tmp_path):
    inp = _stage_dir(tmp_path / "match", _matched(), schemas.MATCHED)
    cfg = Config()
    cfg.balance.per_query, cfg.balance.oversample = 100, 2.0
    m = run_stage(BalanceStage(), cfg, str(tmp_path / "balance"), {"in": inp}, **quiet)
    kept = read_table(str(tmp_path / "balance")).to_pylist()
    assert m["counts"]["in"] == 2030 == m["counts"]["kept"] + m["counts"]["rejected"]
    assert set(m["counts"]["reasons"]) == {"balanced_out"}
    assert sum(r["uid"].startswith("r") for r in kept) == 30        # rare query: everything kept
    common = sum(r["uid"].startswith("c") for r in kept)
    assert 150 <= common <= 260                                      # ~ t = 200 of 2030
    # the per-query counts it balanced by are saved for cap, and the manifest says where
    counts = pq.read_table(tmp_path / "balance" / "query_counts.parquet").to_pylist()
    assert sorted((r["query_id"], r["pool_count"]) for r in counts) == [(0, 2030), (1, 30)]
    assert m["query_counts"] == {"file": "query_counts.parquet", "queries": 2}
    rejected = read_table(str(tmp_path / "balance" / "rejects")).to_pylist()
    assert all(r["detail"].startswith("p=0.") for r in rejected)     # the probability it lost to
    run_stage(BalanceStage(), cfg, str(tmp_path / "balance2"), {"in": inp}, force=True, **quiet)
    assert sorted(r["uid"] for r in read_table(str(tmp_path / "balance2")).to_pylist()) == sorted(r["uid"] for r in kept)
    assert 0 <= uniform_from_uid("x", 0) < 1 and uniform_from_uid("x", 0) != uniform_from_uid("x", 1)


def test_cap_assigns_rarest_query_and_keeps_best_scores():
    assert assign_query([0, 1, 2], {0: 50, 1: 3, 2: 3}) == 1
    rows = [{"uid": f"u{i}", "clip_score": s} for i, s in enumerate([0.3, 0.9, 0.5, 0.9])]
    kept, over = cap_group(rows, 2)
    assert [r["clip_score"] for r in kept] == [0.9, 0.9] and len(over) == 2
    assert cap_group(list(reversed(rows)), 2)[0] == kept             # order of arrival does not matter


def test_cap_stage(tmp_path):
    queries = ["circle", "red"]
    (tmp_path / "queries.json").write_text(json.dumps(queries))
    pool = _stage_dir(tmp_path / "match", [
        {"uid": f"p{i}", "url": "u", "caption": "c", "source": "s", "query_ids": [1] if i < 50 else [0, 1]}
        for i in range(60)], schemas.MATCHED)
    # the pool's per-query counts reach cap through balance's query_counts.parquet
    run_stage(BalanceStage(), Config(), str(tmp_path / "balance"), {"in": pool}, **quiet)
    scored = []
    for i in range(30):
        ids = [1] if i < 20 else [0, 1]
        scored.append({"uid": f"s{i:03d}", "url": "u", "caption": "c", "source": "s", "query_ids": ids,
                       "keep_probability": 1.0, "shard": "images/00000.tar", "key": str(i), "width": 64,
                       "height": 64, "original_width": 64, "original_height": 64, "sha256": "x", "phash": i,
                       "clip_score": i / 100, "clip_model": "m"})
    inp = _stage_dir(tmp_path / "score", scored, schemas.SCORED)
    cfg = Config()
    cfg.cap.per_query = 5
    inputs = {"in": inp, "query_counts": str(tmp_path / "balance"), "queries": str(tmp_path / "queries.json")}
    assert CapStage().default_inputs(Config(), str(tmp_path))["query_counts"] == inputs["query_counts"]
    m = run_stage(CapStage(), cfg, str(tmp_path / "cap"), inputs, **quiet)
    kept = read_table(str(tmp_path / "cap")).to_pylist()
    assert m["counts"] == {"in": 30, "kept": 10, "rejected": 20, "reasons": {"over_query_cap": 20}}
    by_query = {}
    for r in kept:
        by_query.setdefault(r["query"], []).append(r["clip_score"])
    assert {q: len(v) for q, v in by_query.items()} == {"circle": 5, "red": 5}
    assert sorted(by_query["circle"]) == pytest.approx([0.25, 0.26, 0.27, 0.28, 0.29])
    assert sorted(by_query["red"]) == pytest.approx([0.15, 0.16, 0.17, 0.18, 0.19])
    # a balance output without the counts (an older run) says what to rerun
    (tmp_path / "balance" / "query_counts.parquet").unlink()
    with pytest.raises(InputError, match="rerun balance"):
        run_stage(CapStage(), cfg, str(tmp_path / "cap2"), inputs, **quiet)


@pytest.mark.parametrize("entries,caption,expected", [
    (["Ünïcode café"], "the Ünïcode café!", ["Ünïcode café"]),
    (["start", "end"], "start middle end", ["end", "start"]),
    (["new", "new york", "york city", "new york city"], "new york city", ["new", "new york", "new york city", "york city"]),
    (["Apple"], "apple pie", []),
    (["x-ray"], "an x-ray image", ["x-ray"]),
    (["ray"], "an x-ray image", []),
])
def test_matching_edge_cases(entries, caption, expected):
    assert [entries[i] for i in QueryMatcher(entries).match(caption)] == sorted(expected, key=entries.index)


def test_balance_is_identical_across_shardings(tmp_path):
    rows = _matched(600, 20)
    whole = _stage_dir(tmp_path / "one" / "match", rows, schemas.MATCHED)
    split = tmp_path / "three" / "match"
    split.mkdir(parents=True)
    (split / "rejects").mkdir()
    for i in range(3):   # other files, other order
        pq.write_table(pa.Table.from_pylist(rows[i::3][::-1], schemas.MATCHED), split / f"part-0000{i}.parquet")
    cfg = Config()
    cfg.balance.per_query = 50
    run_stage(BalanceStage(), cfg, str(tmp_path / "one" / "balance"), {"in": whole}, **quiet)
    run_stage(BalanceStage(), cfg, str(tmp_path / "three" / "balance"), {"in": str(split)},
              beam_args=["--direct_num_workers=2"], **quiet)
    a = sorted(r["uid"] for r in read_table(str(tmp_path / "one" / "balance")).to_pylist())
    b = sorted(r["uid"] for r in read_table(str(tmp_path / "three" / "balance")).to_pylist())
    assert a == b and 0 < len(a) < len(rows)


def test_cap_is_exact_for_a_query_with_three_times_the_cap():
    rows = [{"uid": f"u{i:03d}", "clip_score": round(0.5 + (i % 7) / 100, 2)} for i in range(30)]
    kept, over = cap_group(rows, 10)
    assert len(kept) == 10 and len(over) == 20
    assert min(r["clip_score"] for r in kept) >= max(r["clip_score"] for r in over)
    shuffled = rows[:]
    random.Random(1).shuffle(shuffled)
    assert [r["uid"] for r in cap_group(shuffled, 10)[0]] == [r["uid"] for r in kept]


def test_cap_stage_decides_each_row_as_sorting_each_whole_query_would(tmp_path):
    # The stage never groups rows by query (a combiner keeps each query's best rank keys, then
    # each row is decided alone against its query's cutoff): it must keep exactly what sorting
    # each whole query keeps, here with queries under, at and far over the cap, tied scores,
    # and pairs matching several queries (each counts toward its rarest).
    rng = random.Random(7)
    sizes = {0: 3, 1: 10, 2: 25, 3: 80}
    counts = {0: 5, 1: 40, 2: 300, 3: 900}            # the pool's counts: 0 is the rarest
    scored, i = [], 0
    for qid, n in sizes.items():
        for _ in range(n):
            others = [q for q in counts if q > qid and rng.random() < 0.3]
            scored.append({"uid": f"c{i:04d}", "url": "u", "caption": "c", "source": "s",
                           "query_ids": [qid, *others], "keep_probability": 1.0, "shard": "images/00000.tar",
                           "key": str(i), "width": 64, "height": 64, "original_width": 64,
                           "original_height": 64, "sha256": "x", "phash": i,
                           "clip_score": rng.choice([0.2, 0.25, 0.3, 0.3, 0.35]), "clip_model": "m"})
            i += 1
    rng.shuffle(scored)
    inp = _stage_dir(tmp_path / "score", scored, schemas.SCORED)
    pq.write_table(pa.Table.from_pylist([{"query_id": q, "pool_count": c} for q, c in counts.items()],
                                        schemas.QUERY_COUNTS), tmp_path / "query_counts.parquet")
    (tmp_path / "queries.json").write_text(json.dumps(["a", "b", "c", "d"]))
    cfg = Config()
    cfg.cap.per_query = 10
    inputs = {"in": inp, "query_counts": str(tmp_path / "query_counts.parquet"),
              "queries": str(tmp_path / "queries.json")}
    m = run_stage(CapStage(), cfg, str(tmp_path / "cap"), inputs, beam_args=["--direct_num_workers=2"], **quiet)

    expected_kept, expected_over = set(), set()
    for qid in sizes:
        group = [r for r in scored if assign_query(r["query_ids"], counts) == qid]
        kept, over = cap_group(group, 10)
        expected_kept |= {r["uid"] for r in kept}
        expected_over |= {r["uid"] for r in over}
    kept_rows = read_table(str(tmp_path / "cap")).to_pylist()
    rejects = read_table(str(tmp_path / "cap" / "rejects")).to_pylist()
    assert {r["uid"] for r in kept_rows} == expected_kept
    assert {r["uid"] for r in rejects} == expected_over
    assert m["counts"] == {"in": 118, "kept": len(expected_kept), "rejected": len(expected_over),
                           "reasons": {"over_query_cap": len(expected_over)}}
    assert collections.Counter(r["query_id"] for r in kept_rows) == {0: 3, 1: 10, 2: 10, 3: 10}
    assert all(re.fullmatch(r"query '[abcd]' already has 10 better-scored pairs \(score 0\.\d{4}; "
                            r"its last kept 0\.\d{4}\)", r["detail"]) for r in rejects)


def test_normalize_is_the_documented_rule_on_any_text():
    """Spaces around each PUNCT character, every whitespace run (str.isspace) one space, one space
    each side: checked against that rule written out, on text of punctuation, Unicode spaces
    and letters."""
    from witcurate.queries.tokenize import PUNCT, normalize
    spaces = [chr(c) for c in range(0x3001) if chr(c).isspace()]
    alphabet = list(PUNCT) + spaces + list("ab\u00e9\u4e2d1_-+")
    rng = random.Random(3)
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
        padded = "".join(f" {c} " if c in PUNCT else c for c in text)
        rule = " ".join(padded.split())
        assert normalize(text) == (f" {rule} " if rule else " "), repr(text)


def test_a_batch_of_captions_matches_as_each_caption_alone():
    """The stage matches a batch walked as one string; each caption's ids must be its own
    whatever its neighbours: non-ASCII text (characters are not bytes), empty and missing
    captions, keys shared by several entries, and a batch that is a slice of a larger array."""
    entries = ENTRIES + ["U. S.", "caf\u00e9", "\u4e2d\u6587", "red  circle"]
    matcher = QueryMatcher(entries)
    rng = random.Random(11)
    words = WORDS + ["caf\u00e9", "\u4e2d\u6587", "\U0001f600", "\u00a0", "U. S."]
    captions = [None, "", " "] + ["".join(rng.choice([" ", ""]) + rng.choice(words) for _ in range(rng.randint(0, 9)))
                                  for _ in range(400)]
    whole = pa.array(["red"] * 7 + captions, pa.string()).slice(7)
    alone = [matcher.match_column(pa.array([c], pa.string())).to_pylist()[0] for c in captions]
    assert matcher.match_column(whole).to_pylist() == alone
    assert matcher.match_column(pa.chunked_array([whole.slice(0, 100), whole.slice(100)])).to_pylist() == alone
    assert alone[:3] == [[], [], []]
    shared = {entries.index("U.S."), entries.index("U. S.")}
    assert shared <= set(matcher.match("made in the U.S. today"))
    assert any(set(ids) >= shared for ids in alone)
    for caption, ids in zip(captions, alone):
        assert set(metaclip_reference_match(caption or "", entries)) <= set(ids), caption


def test_normalize_column_is_normalize():
    """The stage normalises captions a column at a time with Arrow's RE2; RE2's `\\s` is ASCII,
    so the column rule lists Python's whitespace itself: the list, and the rule on any text."""
    from witcurate.queries.tokenize import PUNCT, SPACES, normalize, normalize_column
    assert SPACES == "".join(c for c in map(chr, range(0x110000)) if c.isspace())
    alphabet = list(PUNCT) + list(SPACES) + list("ab\u00e9\u4e2d1_-+\U0001f600")
    rng = random.Random(4)
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12))) for _ in range(3000)]
    assert normalize_column(pa.array(texts + [None])).to_pylist() == [normalize(t) for t in texts] + [" "]
