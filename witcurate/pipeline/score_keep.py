"""The score stage's keep rules in Beam: a threshold in one pass, the top fraction by score
through a global cutoff (a histogram combine, then only the cutoff's bin ranked) as a side input,
or the top fraction of each query's pairs (a cutoff per query, from its pairs' scores alone).

Per query, a pair counts toward one query, the rarest it matches in the pool (balance's
counts), as in the cap stage: so the pairs each query keeps after score are what cap fills from.
One global threshold treats easy and hard queries alike (a query whose images are diagrams
scores lower than one of cats); a per-query fraction keeps the best of every query."""

from __future__ import annotations

from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow.parquet as pq

from witcurate.filters import clip_score as rules
from witcurate.filters.cap import assign_query
from witcurate.pipeline import fs
from witcurate.pipeline.beam_io import REJECTED, reject
from witcurate.pipeline.tables import parquet_files


def score_and_tie(row: dict[str, Any]) -> tuple[float, int]:
    return row["clip_score"], rules.tie_hash(str(row["uid"]))


class ScoreHistogram(beam.CombineFn):
    """Counts of scores per `rules.score_bin` (a fixed 8 MB array, however many pairs)."""

    def create_accumulator(self):
        return np.zeros(1 << rules.BIN_BITS, dtype=np.int64)

    def add_input(self, acc, score):
        acc[rules.score_bin(score)] += 1
        return acc

    def merge_accumulators(self, accs):
        accs = iter(accs)
        total = next(accs).copy()
        for acc in accs:
            total += acc
        return total

    def extract_output(self, acc):
        return acc


def _in_cutoff_bin(pair: tuple[float, int], where: dict[str, int] | None):
    if where is not None and rules.score_bin(pair[0]) == where["bin"]:
        yield pair


class TopFractionCutoff(beam.PTransform):
    """Scored rows -> the one `rules.Cutoff` of keeping the top `fraction` of them (or None).

    Exact, in two passes, without gathering every score in one place: a histogram locates
    the bin holding the cutoff, then only that bin's (score, tie hash) pairs are ranked."""

    def __init__(self, fraction: float):
        super().__init__()
        self.fraction = fraction

    def expand(self, scored):
        pairs = scored | "ScoreAndTie" >> beam.Map(score_and_tie)
        where = (pairs
                 | "Scores" >> beam.Map(lambda pair: pair[0])
                 | "Histogram" >> beam.CombineGlobally(ScoreHistogram())
                 | "LocateCutoff" >> beam.Map(rules.locate_cutoff, self.fraction))
        return (pairs
                | "InCutoffBin" >> beam.FlatMap(_in_cutoff_bin, beam.pvalue.AsSingleton(where))
                | "CutoffBin" >> beam.combiners.ToList()
                | "RankCutoffBin" >> beam.Map(rules.cutoff_in_bin, beam.pvalue.AsSingleton(where)))


def _query_cutoff(query_pairs, fraction: float):
    query, pairs = query_pairs
    pairs = list(pairs)
    return query, rules.top_fraction_cutoff([p[0] for p in pairs], [p[1] for p in pairs], fraction)


class PerQueryCutoffs(beam.PTransform):
    """Scored rows -> (query id, `rules.Cutoff` or None) for every query some pair counts toward.

    Each query's (score, tie hash) pairs are grouped by query: a query holds at most what
    balance let through for it (about per_query x oversample pairs), never the whole pool."""

    def __init__(self, fraction: float, counts):
        super().__init__()
        self.fraction = fraction
        self.counts = counts

    def expand(self, scored):
        return (scored
                | "ByQuery" >> beam.Map(lambda row, c: (assign_query(row["query_ids"], c), score_and_tie(row)),
                                        self.counts)
                | "GroupByQuery" >> beam.GroupByKey()
                | "QueryCutoff" >> beam.Map(_query_cutoff, self.fraction))


class ApplyKeepRule(beam.DoFn):
    """Scored row -> kept (SCORED) or a `clip_score_below` reject naming the threshold used."""

    def __init__(self, rule: rules.KeepRule):
        self.rule = rule

    def process(self, row, cutoff=None, cutoffs=None, counts=None):
        query = ""
        if self.rule.kind == "per_query_top_fraction":
            query = str(assign_query(row["query_ids"], counts))
            cutoff = cutoffs.get(int(query))
        if self.rule.kind == "threshold":
            verdict = rules.keep_by_threshold(row["clip_score"], self.rule.value)
            used = self.rule.value
        else:
            verdict = rules.keep_by_cutoff(row["clip_score"], rules.tie_hash(str(row["uid"])), cutoff)
            used = cutoff.score if cutoff is not None else None
        if verdict is True:
            yield row
        else:
            detail = rules.below_detail(row["clip_score"], self.rule, used, query and f"id {query}")
            yield beam.pvalue.TaggedOutput(REJECTED, reject(row, verdict.reason, detail))


def min_kept_score(directory: str) -> float | None:
    """The effective threshold of a top_fraction run: the lowest kept score."""
    lowest = None
    for path in parquet_files(directory):
        with fs.open_file(path) as f:
            col = pq.read_table(f, columns=["clip_score"]).column("clip_score").to_numpy()
        if len(col):
            m = float(col.min())
            lowest = m if lowest is None else min(lowest, m)
    return lowest
