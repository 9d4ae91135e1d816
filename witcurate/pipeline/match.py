"""Match: annotate each caption with the ids of the queries it contains; no match, no candidate."""

from __future__ import annotations

import apache_beam as beam
from apache_beam.utils.shared import Shared

from witcurate import schemas
from witcurate.config import Config
from witcurate.pipeline import fs
from witcurate.pipeline.beam_io import (KEPT, REJECTED, WriteStageOutputs, make_pipeline,
                                        read_stage, reject, run_pipeline, stage_outputs)
from witcurate.pipeline.matcher import QueryMatcher, load_queries
from witcurate.pipeline.runner import StageContext, StageResult
from witcurate.pipeline.stages import BaseStage


class _MatcherHandle:
    """Shared-able holder (Beam's Shared needs a weak-referenceable object)."""

    def __init__(self, matcher: QueryMatcher):
        self.matcher = matcher


class MatchCaptions(beam.DoFn):
    """The automaton is built once per worker process and shared by its threads (Beam Shared)."""

    def __init__(self, queries_path: str, shared: Shared):
        self.queries_path = queries_path
        self.shared = shared
        self.matcher: QueryMatcher | None = None

    def setup(self):
        path = self.queries_path
        handle = self.shared.acquire(lambda: _MatcherHandle(QueryMatcher(load_queries(path))), tag=path)
        self.matcher = handle.matcher

    def process(self, row):
        ids = self.matcher.match(row["caption"])
        if ids:
            yield beam.pvalue.TaggedOutput(KEPT, {**row, "query_ids": ids})
        else:
            yield beam.pvalue.TaggedOutput(REJECTED, reject(row, "no_query_match"))


class MatchStage(BaseStage):
    name = "match"
    help = "find the queries each caption contains (Aho-Corasick, whole tokens, case-sensitive)"
    sections = ("match",)
    inputs = ("in", "queries")
    input_schema = schemas.CANDIDATES

    def default_inputs(self, config: Config, out_root: str) -> dict[str, str]:
        return {"in": fs.join(out_root, "ingest"),
                "queries": config.match.queries or fs.join(out_root, "queries")}

    def run(self, ctx: StageContext) -> StageResult:
        load_queries(ctx.input("queries"))  # fail fast, in the driver, on a bad list
        p = make_pipeline(ctx.beam_args)
        rows = read_stage(p, ctx.input("in"), "ReadCandidates")
        outs = rows | "Match" >> beam.ParDo(
            MatchCaptions(ctx.input("queries"), Shared())).with_outputs(KEPT, REJECTED)
        stage_outputs(outs) | "Write" >> WriteStageOutputs(ctx.tmp_dir, schemas.MATCHED)
        run_pipeline(p)
        return StageResult(units="captions")
