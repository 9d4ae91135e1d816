"""Cap: at most `cap.per_query` pairs per query in the output, the best-scored ones."""

from __future__ import annotations

import apache_beam as beam
from apache_beam.utils.shared import Shared

from witcurate import schemas
from witcurate.config import Config
from witcurate.filters.cap import assign_query, cap_group
from witcurate.pipeline import fs
from witcurate.pipeline.balance import query_counts
from witcurate.pipeline.beam_io import (KEPT, REJECTED, WriteStageOutputs, make_pipeline,
                                        read_stage, reject, run_pipeline, stage_outputs)
from witcurate.pipeline.matcher import load_queries
from witcurate.pipeline.runner import StageContext, StageResult
from witcurate.pipeline.stages import BaseStage, Option


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
    inputs = ("in", "pool", "queries")
    input_schema = schemas.SCORED
    options = (Option("--per-query", "cap.per_query", "the most pairs one query may own", int),)

    def default_inputs(self, config: Config, out_root: str) -> dict[str, str]:
        return {"in": fs.join(out_root, "score"), "pool": fs.join(out_root, "match"),
                "queries": config.match.queries or fs.join(out_root, "queries")}

    def run(self, ctx: StageContext) -> StageResult:
        load_queries(ctx.input("queries"))
        p = make_pipeline(ctx.beam_args)
        rows = read_stage(p, ctx.input("in"), "ReadScored")
        pool = read_stage(p, ctx.input("pool"), "ReadPool")
        counts = beam.pvalue.AsDict(query_counts(pool))
        outs = (rows
                | "AssignQuery" >> beam.Map(lambda r, c: (assign_query(r["query_ids"], c), r), counts)
                | "GroupByQuery" >> beam.GroupByKey()
                | "Cap" >> beam.ParDo(CapQuery(ctx.config.cap.per_query, ctx.input("queries"),
                                               Shared())).with_outputs(KEPT, REJECTED))
        stage_outputs(outs) | "Write" >> WriteStageOutputs(ctx.tmp_dir, schemas.CAPPED)
        run_pipeline(p)
        return StageResult(units="pairs")
