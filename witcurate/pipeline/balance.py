"""Balance: MetaCLIP's pre-download sampling budget, counts taken over the whole pool.

The per-query counts it takes (pool captions matching each query) are saved beside its output
as `query_counts.parquet` (schemas.QUERY_COUNTS), so cap finds each pair's rarest query without
reading the match stage again.
"""

from __future__ import annotations

import apache_beam as beam

from witcurate import schemas
from witcurate.config import BalanceSection, Config
from witcurate.filters.balance import BalanceCoin, keep_probability
from witcurate.pipeline import fs
from witcurate.pipeline.beam_io import (FilterRecords, WriteStageOutputs, beam_path, make_pipeline,
                                        read_stage, run_pipeline)
from witcurate.pipeline.runner import StageContext, StageResult
from witcurate.pipeline.stages import BaseStage, Option
from witcurate.pipeline.tables import QUERY_COUNTS_FILE, count_rows


class WithKeepProbability(beam.DoFn):
    """A matched row with the probability balance keeps it at (1 when balancing is off)."""

    def __init__(self, cfg: BalanceSection):
        self.t = cfg.per_query * cfg.oversample
        self.enabled = cfg.enabled

    def process(self, row, counts):
        p = keep_probability(row["query_ids"], counts, self.t) if self.enabled else 1.0
        yield {**row, "keep_probability": p}


def query_counts(rows: beam.PCollection) -> beam.PCollection:
    """(query_id, number of pool captions matching it)."""
    return (rows | "QueryIds" >> beam.FlatMap(lambda r: [(q, 1) for q in r["query_ids"]])
                 | "CountPerQuery" >> beam.CombinePerKey(sum))


def write_query_counts(counts: beam.PCollection, directory: str) -> None:
    """The counts as one Parquet file, `directory`/query_counts.parquet."""
    (counts
     | "QueryCountRows" >> beam.MapTuple(lambda q, n: {"query_id": q, "pool_count": n})
     | "WriteQueryCounts" >> beam.io.WriteToParquet(
         beam_path(fs.join(directory, QUERY_COUNTS_FILE)), schemas.QUERY_COUNTS,
         num_shards=1, shard_name_template=""))


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
        cfg = ctx.config.balance
        p = make_pipeline(ctx.beam_args)
        rows = read_stage(p, ctx.input("in"), "ReadMatched")
        counts = query_counts(rows)
        write_query_counts(counts, ctx.tmp_dir)
        outs = (rows
                | "KeepProbability" >> beam.ParDo(WithKeepProbability(cfg), counts=beam.pvalue.AsDict(counts))
                | "Balance" >> FilterRecords(BalanceCoin(ctx.config.run.seed)))
        outs | "Write" >> WriteStageOutputs(ctx.tmp_dir, schemas.BALANCED)
        run_pipeline(p)
        return StageResult(units="pairs", extra={
            "t": cfg.per_query * cfg.oversample,
            "query_counts": {"file": QUERY_COUNTS_FILE,
                             "queries": count_rows(ctx.tmp_dir, QUERY_COUNTS_FILE)}})
