"""Cap: at most `cap.per_query` pairs per query in the output, the best-scored ones.

Each pair counts toward its rarest query in the pool, by the per-query counts the balance stage
saved (`query_counts.parquet`), so the pool itself is not read again.
"""

from __future__ import annotations

import apache_beam as beam
from apache_beam.utils.shared import Shared

from witcurate import schemas
from witcurate.config import Config
from witcurate.filters.cap import assign_query, cap_group
from witcurate.pipeline import fs
from witcurate.pipeline.beam_io import (KEPT, REJECTED, WriteStageOutputs, beam_path, make_pipeline,
                                        read_stage, reject, run_pipeline, stage_outputs)
from witcurate.pipeline.matcher import load_queries
from witcurate.pipeline.runner import StageContext, StageResult
from witcurate.pipeline.stages import BaseStage, Option, last_run
from witcurate.pipeline.tables import query_counts_file


class _QueryList(list):
    """A list Beam's Shared can hold (it needs a weak-referenceable object)."""


class CapQuery(beam.DoFn):
    def __init__(self, per_query: int, queries_path: str, shared: Shared):
        self.per_query = per_query
        self.queries_path = queries_path
        self.shared = shared

    def setup(self):
        path = self.queries_path
        self.queries = self.shared.acquire(lambda: _QueryList(load_queries(path)), tag=path)

    def process(self, qid_rows):
        qid, rows = qid_rows
        kept, over = cap_group(rows, self.per_query)
        for row in kept:
            yield beam.pvalue.TaggedOutput(KEPT, {**row, "query_id": qid, "query": self.queries[qid]})
        for rank, row in enumerate(over, start=self.per_query + 1):
            yield beam.pvalue.TaggedOutput(REJECTED, reject(
                {**row, "query_id": qid, "query": self.queries[qid]}, "over_query_cap",
                f"query {self.queries[qid]!r} already has {self.per_query}; rank {rank}"))


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
        rows = read_stage(p, ctx.input("in"), "ReadScored")
        counts = beam.pvalue.AsDict(
            p | "ReadQueryCounts" >> beam.io.ReadFromParquet(counts_file)
              | "CountById" >> beam.Map(lambda r: (r["query_id"], r["pool_count"])))
        outs = (rows
                | "AssignQuery" >> beam.Map(lambda r, c: (assign_query(r["query_ids"], c), r), counts)
                | "GroupByQuery" >> beam.GroupByKey()
                | "Cap" >> beam.ParDo(CapQuery(ctx.config.cap.per_query, ctx.input("queries"),
                                               Shared())).with_outputs(KEPT, REJECTED))
        stage_outputs(outs) | "Write" >> WriteStageOutputs(ctx.tmp_dir, schemas.CAPPED)
        run_pipeline(p)
        return StageResult(units="pairs")
