"""Balance: MetaCLIP's pre-download sampling budget, counts taken over the whole pool."""

from __future__ import annotations

import apache_beam as beam

from witcurate import schemas
from witcurate.config import BalanceSection, Config
from witcurate.filters.balance import balance_decision, keep_probability
from witcurate.pipeline import fs
from witcurate.pipeline.beam_io import (KEPT, REJECTED, WriteStageOutputs, make_pipeline,
                                        read_stage, reject, run_pipeline, stage_outputs)
from witcurate.pipeline.runner import StageContext, StageResult
from witcurate.pipeline.stages import BaseStage, Option


class Balance(beam.DoFn):
    def __init__(self, cfg: BalanceSection, seed: int):
        self.t = cfg.per_query * cfg.oversample
        self.enabled = cfg.enabled
        self.seed = seed

    def process(self, row, counts):
        p = keep_probability(row["query_ids"], counts, self.t) if self.enabled else 1.0
        decision = balance_decision(row["uid"], p, self.seed)
        if decision is True:
            yield beam.pvalue.TaggedOutput(KEPT, {**row, "keep_probability": p})
        else:
            yield beam.pvalue.TaggedOutput(REJECTED, reject(row, decision[1], f"p={p:.6f}"))


def query_counts(rows: beam.PCollection) -> beam.PCollection:
    """(query_id, number of pool captions matching it)."""
    return (rows | "QueryIds" >> beam.FlatMap(lambda r: [(q, 1) for q in r["query_ids"]])
                 | "CountPerQuery" >> beam.CombinePerKey(sum))


class BalanceStage(BaseStage):
    name = "balance"
    sections = ("balance", "run.seed")
    inputs = ("in",)
    input_schema = schemas.MATCHED
    options = (
        Option("--per-query", "balance.per_query", "the per-query budget the sampling aims at", int),
        Option("--oversample", "balance.oversample", "t = per_query x oversample", float),
    )

    def default_inputs(self, config: Config, out_root: str) -> dict[str, str]:
        return {"in": fs.join(out_root, "match")}

    def run(self, ctx: StageContext) -> StageResult:
        p = make_pipeline(ctx.beam_args)
        rows = read_stage(p, ctx.input("in"), "ReadMatched")
        counts = query_counts(rows)
        outs = rows | "Balance" >> beam.ParDo(
            Balance(ctx.config.balance, ctx.config.run.seed),
            counts=beam.pvalue.AsDict(counts)).with_outputs(KEPT, REJECTED)
        stage_outputs(outs) | "Write" >> WriteStageOutputs(ctx.tmp_dir, schemas.BALANCED)
        run_pipeline(p)
        return StageResult(units="pairs", extra={
            "t": ctx.config.balance.per_query * ctx.config.balance.oversample})
