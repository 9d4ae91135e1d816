"""CLIP-score keep rules on plain values: threshold, top fraction with ties, choosing the rule."""

from __future__ import annotations

import numpy as np
import pytest

from witcurate.errors import UserError
from witcurate.filters import clip_score as rules
from witcurate.filters.base import Drop


def test_exactly_one_rule_must_be_set():
    assert rules.keep_rule(0.28, None) == rules.KeepRule("threshold", 0.28)
    assert rules.keep_rule(None, 0.3) == rules.KeepRule("top_fraction", 0.3)
    for threshold, fraction in [(None, None), (0.28, 0.3)]:
        with pytest.raises(UserError, match="exactly one"):
            rules.keep_rule(threshold, fraction)
    # the ranges of both are checked when the config loads (tests/test_config.py)


def test_threshold_keeps_scores_at_or_above_it():
    assert rules.keep_by_threshold(0.30, 0.28) is True
    assert rules.keep_by_threshold(0.28, 0.28) is True
    assert rules.keep_by_threshold(0.2799, 0.28) == Drop("clip_score_below")
    assert rules.keep_by_threshold(-0.5, -1.0) is True


@pytest.mark.parametrize("threshold", [0.25, 0.5, -0.125, 0.3125, float(np.float32(0.28))])
def test_a_score_exactly_at_the_threshold_is_kept(threshold):
    """Values float32 holds exactly: the stored score equals the threshold, so only `>=` keeps
    it (0.28 itself rounds up in float32 and cannot tell `>=` from `>`)."""
    assert float(np.float32(threshold)) == threshold
    assert rules.keep_by_threshold(threshold, threshold) is True
    below = float(np.nextafter(np.float32(threshold), np.float32(-1)))
    assert rules.keep_by_threshold(below, threshold) == Drop("clip_score_below")


def test_threshold_is_applied_to_the_stored_float32_score():
    # 0.28 rounds up in float32; a stored clip_score of 0.28 must pass a 0.28 threshold.
    assert float(np.float32(0.28)) > 0.28
    assert rules.keep_by_threshold(float(np.float32(0.28)), 0.28) is True


def test_top_count_rounds_to_the_nearest_pair():
    assert rules.top_count(10, 0.3) == 3           # 0.3 * 10 = 3.0000000000000004 in floats
    assert rules.top_count(5, 0.3) == 2            # 1.5 rounds half up
    assert rules.top_count(7, 0.3) == 2            # 2.1
    assert rules.top_count(3, 0.1) == 0            # 0.3: keeps nothing
    assert rules.top_count(4, 1.0) == 4
    assert rules.top_count(0, 0.5) == 0


def _kept(scores, uids, fraction):
    ties = [rules.tie_hash(u) for u in uids]
    cutoff = rules.top_fraction_cutoff(scores, ties, fraction)
    return [u for s, t, u in zip(scores, ties, uids) if rules.keep_by_cutoff(s, t, cutoff) is True], cutoff


def test_top_fraction_keeps_exactly_the_best_scores():
    scores = [0.10, 0.50, 0.30, 0.90, 0.70, 0.20, 0.60, 0.40, 0.80, 0.00]
    uids = [f"u{i}" for i in range(10)]
    kept, cutoff = _kept(scores, uids, 0.3)
    assert sorted(kept) == ["u3", "u4", "u8"]      # 0.9, 0.8, 0.7
    assert cutoff.score == pytest.approx(0.7) and cutoff.kept == 3 and cutoff.total == 10
    assert rules.keep_by_cutoff(0.6, rules.tie_hash("u6"), cutoff) == Drop("clip_score_below")


def test_top_fraction_breaks_ties_by_a_stable_hash_of_uid():
    uids = [f"pair-{i}" for i in range(8)]
    scores = [0.5] * 8
    kept, _ = _kept(scores, uids, 0.5)
    assert len(kept) == 4
    assert sorted(kept) == sorted(sorted(uids, key=rules.tie_hash)[:4])
    # The same pairs in another order: the same survivors.
    kept_again, _ = _kept(scores[::-1], uids[::-1], 0.5)
    assert sorted(kept_again) == sorted(kept)
    assert rules.tie_hash("pair-0") == rules.tie_hash("pair-0") != rules.tie_hash("pair-1")


def test_top_fraction_with_a_tie_at_the_cutoff_keeps_exactly_k():
    scores = [0.9, 0.5, 0.5, 0.5, 0.1]
    uids = ["a", "b", "c", "d", "e"]
    kept, cutoff = _kept(scores, uids, 0.4)           # k = 2: "a" and one of the 0.5s
    assert len(kept) == 2 and "a" in kept
    assert kept[1] == min(["b", "c", "d"], key=rules.tie_hash)
    assert cutoff.score == pytest.approx(0.5)


def test_top_fraction_that_keeps_nothing_rejects_everything():
    assert rules.top_fraction_cutoff([], [], 0.3) is None
    cutoff = rules.top_fraction_cutoff([0.9, 0.8], [1, 2], 0.1)
    assert cutoff is None
    assert rules.keep_by_cutoff(0.9, 1, None) == Drop("clip_score_below")


def test_reject_details_name_the_score_and_the_threshold_used():
    rule = rules.KeepRule("threshold", 0.28)
    assert rules.below_detail(0.1234, rule, 0.28) == "clip_score 0.1234 < threshold 0.2800"
    top = rules.KeepRule("top_fraction", 0.3)
    assert rules.below_detail(0.1, top, 0.25) == "clip_score 0.1000 < threshold 0.2500 (the cutoff of top_fraction 0.3)"
    assert "tie-break" in rules.below_detail(0.25, top, float(np.float32(0.25)))
    assert "keeps no pair" in rules.below_detail(0.5, top, None)


def test_score_bins_grow_with_the_score():
    values = np.sort(np.random.default_rng(0).uniform(-1, 1, 5000).astype(np.float32))
    bins = [rules.score_bin(v) for v in [-1.0, *values, 0.0, 1.0]]
    assert bins[1:-2] == sorted(bins[1:-2]) and bins[0] <= bins[1] and bins[-2] <= bins[-1]
    assert rules.score_bin(-0.5) < rules.score_bin(-0.25) < rules.score_bin(0.25) < rules.score_bin(0.5)


FRACTIONS = [0.0, 0.001, 0.3, 0.5, 0.999, 1.0]


def _case(fraction: float, size: int = 3500):
    """Scores with ties and negative values (size of them: 6/7 around 0.25, 3/35 tied at 0.3,
    the rest anywhere in [-1, 1]), their uids and tie hashes, and the one-pass cutoff."""
    rng = np.random.default_rng(int(fraction * 1000))
    normal, tied = size * 6 // 7, size * 3 // 35
    scores = np.concatenate([rng.normal(0.25, 0.05, normal), np.full(tied, 0.3),
                             rng.uniform(-1, 1, size - normal - tied)])
    scores = [float(np.float32(s)) for s in scores]
    uids = [f"u{i}" for i in range(len(scores))]
    ties = [rules.tie_hash(u) for u in uids]
    return scores, uids, ties, rules.top_fraction_cutoff(scores, ties, fraction)


@pytest.mark.parametrize("fraction", FRACTIONS)
def test_two_pass_cutoff_equals_the_one_pass_cutoff(fraction):
    """Histogram, then only the cutoff's bin ranked: exactly top_fraction_cutoff, ties and
    negative scores included."""
    scores, _, ties, expected = _case(fraction)
    histogram = np.zeros(1 << rules.BIN_BITS, dtype=np.int64)
    for s in scores:
        histogram[rules.score_bin(s)] += 1
    where = rules.locate_cutoff(histogram, fraction)
    in_bin = [(s, t) for s, t in zip(scores, ties) if where and rules.score_bin(s) == where["bin"]]
    assert rules.cutoff_in_bin(in_bin, where) == expected


def test_the_pipeline_transform_finds_the_one_pass_cutoff_for_every_fraction():
    """The whole pipeline transform on the same kind of data, every fraction in one pipeline (one
    Beam start-up instead of six), 700 rows each: a row costs the local runner about 0.4 ms."""
    import apache_beam as beam
    from apache_beam.testing.test_pipeline import TestPipeline
    from apache_beam.testing.util import assert_that, equal_to

    from witcurate.pipeline.score import TopFractionCutoff

    with TestPipeline() as p:
        for fraction in FRACTIONS:
            scores, uids, _, expected = _case(fraction, size=700)
            rows = [{"uid": u, "clip_score": s} for u, s in zip(uids, scores)]
            cutoff = p | f"Rows {fraction}" >> beam.Create(rows) | f"Cutoff {fraction}" >> TopFractionCutoff(fraction)
            assert_that(cutoff, equal_to([expected]), label=f"Equals {fraction}")


def test_keep_rule_is_exactly_one_of_three():
    assert rules.keep_rule(None, None, 0.5) == rules.KeepRule("per_query_top_fraction", 0.5)
    with pytest.raises(UserError, match="both are set"):
        rules.keep_rule(None, 0.3, 0.5)
    with pytest.raises(UserError, match="all three are set"):
        rules.keep_rule(0.2, 0.3, 0.5)


def _per_query_world():
    """Three queries of different sizes; q2 is rare, so a pair matching q1 and q2 counts toward q2."""
    rng = np.random.default_rng(11)
    counts = {1: 500, 2: 7, 3: 40}                 # balance's pool counts
    rows, members = [], {1: [], 2: [], 3: []}
    for i in range(60):
        query_ids = [1] if i < 30 else ([1, 2] if i < 36 else [3])
        row = {"uid": f"u{i:03d}", "clip_score": float(np.float32(rng.uniform(0.0, 0.4))
                                                     + (0.3 if query_ids == [3] else 0.0)),
               "query_ids": query_ids}
        rows.append(row)
        members[2 if 2 in query_ids else query_ids[0]].append(row)
    return rows, counts, members


def test_per_query_top_fraction_keeps_the_best_of_every_query():
    """Each query keeps round(f x its pairs), its best-scored ones, whatever the other queries
    score (q3 scores higher across the board and keeps no more); a pair counts toward its rarest
    query; a reject says which query's cutoff it missed."""
    import apache_beam as beam
    from apache_beam.testing.test_pipeline import TestPipeline
    from apache_beam.testing.util import assert_that, equal_to

    from witcurate.pipeline.beam_io import KEPT, REJECTED
    from witcurate.pipeline.score_keep import ApplyKeepRule, PerQueryCutoffs

    rows, counts, members = _per_query_world()
    fraction = 0.5
    expected_kept, expected_details = [], []
    for query, group in members.items():
        ranked = sorted(group, key=lambda r: (-r["clip_score"], rules.tie_hash(r["uid"])))
        k = rules.top_count(len(group), fraction)
        expected_kept += [r["uid"] for r in ranked[:k]]
        expected_details += [(r["uid"], f"query id {query}") for r in ranked[k:]]
    assert len(expected_kept) == 15 + 3 + 12
    rule = rules.keep_rule(None, None, fraction)
    with TestPipeline() as p:
        scored = p | beam.Create(rows)
        side = beam.pvalue.AsDict(p | "Counts" >> beam.Create(sorted(counts.items())))
        cutoffs = scored | PerQueryCutoffs(fraction, side)
        out = scored | beam.ParDo(ApplyKeepRule(rule), cutoffs=beam.pvalue.AsDict(cutoffs),
                                  counts=side).with_outputs(REJECTED, main=KEPT)
        assert_that(out[KEPT] | beam.Map(lambda r: r["uid"]), equal_to(expected_kept), label="Kept")
        details = out[REJECTED] | beam.Map(lambda r: (r["uid"], "query id " + r["detail"].rsplit("query id ", 1)[1][:-1]))
        assert_that(details, equal_to(expected_details), label="Rejects")
