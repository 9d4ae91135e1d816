"""Cap: at most `cap.per_query` pairs per query in the output, the best-scored ones.

Each pair counts toward its rarest query in the pool, by the per-query counts the balance stage
saved (`query_counts.parquet`), so the pool itself is not read again.

Rows are never grouped by query: a combiner keeps each query's `per_query` best rank keys (a
score and a hash, not the row), the last of them is the query's cutoff, and every row is then
decided alone against its query's cutoff (a side input holding only the queries at the cap).
Grouping the rows themselves held every row of a query in one place, all the rows of the run on
the local runner: 3.2 GiB at a million candidates.
"""

from __future__ import annotations

import apache_beam as beam
from apache_beam.utils.shared import Shared

from witcurate import schemas
from witcurate.config import Config
from witcurate.filters.cap import assign_query, cap_cutoff, rank_key, within_cap
from witcurate.pipeline import fs
from witcurate.pipeline.beam_io import (KEPT, REJECTED, WriteStageOutputs, beam_path, make_pipeline,
                                        read_stage, reject, run_pipeline, stage_outputs)
from witcurate.pipeline.matcher import load_queries
from witcurate.pipeline.runner import StageContext, StageResult
from witcurate.pipeline.stages import BaseStage, Option, last_run
from witcurate.pipeline.tables import query_counts_file


class _QueryList(list):
    """A list Beam's Shared can hold (it needs a weak-referenceable object)."""


class CapRow(beam.DoFn):
    """A scored row -> kept (with its query) or an `over_query_cap` reject naming the cutoff."""

    def __init__(self, per_query: int, queries_path: str, shared: Shared):
        self.per_query = per_query
        self.queries_path = queries_path
        self.shared = shared

    def setup(self):
        path = self.queries_path
        self.queries = self.shared.acquire(lambda: _QueryList(load_queries(path)), tag=path)

    def process(self, row, counts, cutoffs):
        qid = assign_query(row["query_ids"], counts)
        out = {**row, "query_id": qid, "query": self.queries[qid]}
        cutoff = cutoffs.get(qid)
        if within_cap(rank_key(row), cutoff):
            yield beam.pvalue.TaggedOutput(KEPT, out)
        else:
            yield beam.pvalue.TaggedOutput(REJECTED, reject(
                out, "over_query_cap",
                f"query {self.queries[qid]!r} already has {self.per_query} better-scored pairs "
                f"(score {float(row.get('clip_score') or 0.0):.4f}; its last kept {-cutoff[0]:.4f})"))


class CapCutoffs(beam.PTransform):
    """Scored rows -> (query id, rank key of its last kept pair), for the queries at the cap."""

    def __init__(self, per_query: int, counts):
        super().__init__()
        self.per_query = per_query
        self.counts = counts

    def expand(self, rows):
        per_query = self.per_query
        return (rows
                | "RankKeyByQuery" >> beam.Map(
                    lambda r, c: (assign_query(r["query_ids"], c), rank_key(r)), self.counts)
                | "BestPerQuery" >> beam.combiners.Top.SmallestPerKey(per_query)
                | "Cutoff" >> beam.FlatMap(
                    lambda kv: [] if (cut := cap_cutoff(kv[1], per_query)) is None else [(kv[0], cut)]))


class CapStage(BaseStage):
    name = "cap"
    sections = ("cap",)
    # query_counts: the balance stage's directory (its query_counts.parquet) or that file
    inputs = ("in", "query_counts", "queries")
    input_schema = schemas.SCORED
    options = (Option("--per-query", "cap.per_query", "the most pairs one query may own", int),)

    def default_inputs(self, config: Config, out_root: str) -> dict[str, str]:
        # the embedding steps' output when the run has them, else the score stage's
        return {"in": last_run(config, out_root, "target", "semdedup", "score"),
                "query_counts": fs.join(out_root, "balance"),
                "queries": config.match.queries or fs.join(out_root, "queries")}

    def run(self, ctx: StageContext) -> StageResult:
        load_queries(ctx.input("queries"))
        counts_file = beam_path(query_counts_file(ctx.input("query_counts")))
        p = make_pipeline(ctx.beam_args)
        # Read twice: a row waiting for the cutoffs (a side input) would be held until all are
        # known; read again after, the rows stream from the files through the decision.
        rows = read_stage(p, ctx.input("in"), "ReadScored")
        keys_from = read_stage(p, ctx.input("in"), "ReadScoredForCutoffs")
        counts = beam.pvalue.AsDict(
            p | "ReadQueryCounts" >> beam.io.ReadFromParquet(counts_file)
              | "CountById" >> beam.Map(lambda r: (r["query_id"], r["pool_count"])))
        per_query = ctx.config.cap.per_query
        cutoffs = beam.pvalue.AsDict(keys_from | "CapCutoffs" >> CapCutoffs(per_query, counts))
        outs = rows | "Cap" >> beam.ParDo(CapRow(per_query, ctx.input("queries"), Shared()),
                                          counts, cutoffs).with_outputs(KEPT, REJECTED)
        stage_outputs(outs) | "Write" >> WriteStageOutputs(ctx.tmp_dir, schemas.CAPPED)
        run_pipeline(p)
        return StageResult(units="pairs")
