"""The score stage's Beam graph and its run (the stage itself is declared in score.py, which
imports this module only when the stage runs: torch and Beam's RunInference, which imports
torch itself, take about 2.6 s to import, and a run resuming past a finished score stage, or
any stage run alone, has no need of them).
"""

from __future__ import annotations

import time
from typing import Any

import apache_beam as beam
import pyarrow as pa
from apache_beam.ml.inference.base import RunInference

from witcurate import schemas
from witcurate.errors import ConfigError
from witcurate.filters import clip_score as rules
from witcurate.pipeline import fs, image_source
from witcurate.pipeline.beam_io import (KEPT, REJECTED, WriteStageOutputs, beam_path,
                                        make_pipeline, read_stage, run_pipeline)
from witcurate.pipeline.inference import ClipScoreModelHandler, model_label
from witcurate.pipeline.runner import StageContext, StageResult
from witcurate.pipeline.score_decode import DecodeBatches, split_preprocess
from witcurate.pipeline.score_inputs import (ScoreInputs, StandaloneRow, check_model, resolve_inputs,
                                             resolve_weights, runs_locally)
from witcurate.pipeline.score_keep import ApplyKeepRule, PerQueryCutoffs, TopFractionCutoff, min_kept_score
from witcurate.pipeline.score_outputs import (EMBEDDINGS, EMBEDDINGS_DIR, EMBEDDINGS_PARQUET, EMBEDDINGS_TAG,
                                             AttachScores)
from witcurate.pipeline.table_sink import parquet_table
from witcurate.pipeline.tables import count_rows, query_counts_file


def key_by_shard(row: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return str(row["shard"]), row


def _input_rows(p: beam.Pipeline, source: ScoreInputs) -> beam.PCollection:
    if source.mode == "stage":
        return read_stage(p, source.rows_dir, "ReadIn")
    return (p | "ListShards" >> beam.Create(source.parquets)
              | "ReadImg2dataset" >> beam.FlatMap(image_source.img2dataset_rows)
              | "CompleteRows" >> beam.ParDo(StandaloneRow()))


def _score(rows: beam.PCollection, cfg: Any, decode: DecodeBatches,
           handler: ClipScoreModelHandler):
    """rows -> (decode rejects, scored rows, embeddings as Arrow tables of EMBEDDINGS)."""
    decoded = (rows
               | "KeyByShard" >> beam.Map(key_by_shard)
               | "GroupByShard" >> beam.GroupByKey()
               | "DecodeBatches" >> beam.ParDo(decode).with_outputs(REJECTED, main="batches"))
    scored = (decoded["batches"]
              | "RunInference" >> RunInference(handler)
              | "AttachScores" >> beam.ParDo(AttachScores(handler.label)).with_outputs(EMBEDDINGS_TAG, main="rows"))
    embeddings = (scored[EMBEDDINGS_TAG]
                  | "BatchEmbeddings" >> beam.BatchElements(min_batch_size=max(1, 256 // cfg.batch_size),
                                                            max_batch_size=max(1, 4096 // cfg.batch_size))
                  | "EmbeddingsTable" >> beam.Map(pa.concat_tables))
    return decoded[REJECTED], scored["rows"], embeddings


def _keep(scored: beam.PCollection, rule: rules.KeepRule, query_counts: str | None):
    if rule.kind == "threshold":
        return scored | "Threshold" >> beam.ParDo(ApplyKeepRule(rule)).with_outputs(REJECTED, main=KEPT)
    if rule.kind == "per_query_top_fraction":
        counts = beam.pvalue.AsDict(
            scored.pipeline
            | "ReadQueryCounts" >> beam.io.ReadFromParquet(beam_path(query_counts_file(query_counts)))
            | "CountById" >> beam.Map(lambda r: (r["query_id"], r["pool_count"])))
        cutoffs = scored | "PerQueryCutoffs" >> PerQueryCutoffs(rule.value, counts)
        return scored | "PerQueryTopFraction" >> beam.ParDo(
            ApplyKeepRule(rule), cutoffs=beam.pvalue.AsDict(cutoffs), counts=counts).with_outputs(REJECTED, main=KEPT)
    cutoff = scored | "Cutoff" >> TopFractionCutoff(rule.value)
    return scored | "TopFraction" >> beam.ParDo(
        ApplyKeepRule(rule), cutoff=beam.pvalue.AsSingleton(cutoff)).with_outputs(REJECTED, main=KEPT)


def run_score(ctx: StageContext) -> StageResult:
    """The score stage's run: check the inputs and the model in the launcher, build the graph, run it."""
    from witcurate.trainer.model import resolve_device
    cfg = ctx.config.score
    rule = rules.keep_rule(cfg.threshold, cfg.top_fraction, cfg.per_query_top_fraction)
    if cfg.num_workers < 0:
        raise ConfigError(f"score.num_workers must be >= 0, got {cfg.num_workers}",
                          "0 decodes inline; 2 or more decode ahead of the model")
    device = cfg.device
    if runs_locally(ctx.beam_args):   # "cuda" on a machine without one: say so before starting
        device = str(resolve_device(cfg.device))
    source = resolve_inputs(ctx)
    query_counts = ctx.inputs.get("query_counts")
    if rule.kind == "per_query_top_fraction" and (source.mode != "stage" or not query_counts):
        raise ConfigError("score.per_query_top_fraction needs matched pairs and balance's per-query counts",
                          "run it on a run's dedupe stage with --query-counts OUT/balance "
                          "(img2dataset output has no queries: use --top-fraction)")
    weights = resolve_weights(ctx)
    label = model_label(cfg.model, weights)       # the checkpoint hashed once, here
    handler = ClipScoreModelHandler(
        cfg.model, weights, device=cfg.device, precision=cfg.precision,
        min_batch_size=cfg.min_batch_size if cfg.min_batch_size is not None else cfg.batch_size,
        max_batch_size=cfg.batch_size, share_model_across_processes=cfg.share_model,
        accelerator=cfg.accelerator, cpu_threads=cfg.cpu_threads, label=label)
    preprocess, input_size = check_model(cfg.model, weights)
    ctx.progress(f"[score] {label} ({input_size}px input, device {device}), {rule.describe()}, "
                 f"input: {source.mode} {source.rows_dir}")
    decode = DecodeBatches(source.images_dir, split_preprocess(preprocess), input_size, cfg.model,
                           cfg.batch_size, cfg.num_workers, cfg.device)

    p = make_pipeline(ctx.beam_args)
    unreadable, scored, embeddings = _score(_input_rows(p, source), cfg, decode, handler)
    decided = _keep(scored, rule, query_counts)
    rejected = (unreadable, decided[REJECTED]) | "AllRejects" >> beam.Flatten()
    vectors = parquet_table(fs.join(ctx.tmp_dir, EMBEDDINGS_DIR, "part"), EMBEDDINGS, **EMBEDDINGS_PARQUET)
    ({KEPT: decided[KEPT], REJECTED: rejected, EMBEDDINGS_TAG: embeddings}
     | "Write" >> WriteStageOutputs(ctx.tmp_dir, schemas.SCORED, extra={EMBEDDINGS_TAG: vectors}))
    start = time.time()
    run_pipeline(p)
    return _result(ctx, source, rule, label, time.time() - start)


def _result(ctx: StageContext, source: ScoreInputs, rule: rules.KeepRule, label: str, wall: float) -> StageResult:
    n_scored = count_rows(fs.join(ctx.tmp_dir, EMBEDDINGS_DIR))
    return StageResult(
        n_in=source.n_in, units="images",
        extra={
            "images_per_second": round(n_scored / wall, 2) if wall > 0 else None,
            "images_scored": n_scored,
            "threshold_used": rule.value if rule.kind == "threshold" else min_kept_score(ctx.tmp_dir),
            "keep_rule": {"kind": rule.kind, "value": rule.value},
            "model": label,
            "input_mode": source.mode,
            "embeddings": f"{EMBEDDINGS_DIR}/part-*.parquet",
        })
