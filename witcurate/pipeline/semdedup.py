"""The semdedup stage: semantic duplicates (SemDeDup) among the scored pairs, from the image
embeddings the score stage saved; the images are never read again.

    scored rows + embeddings --JoinEmbeddings--> node batches (invalid embeddings -> rejects)
    nodes --sample--> k-means fit (one worker, a bounded sample) --> ClusterModel (side input)
    nodes --AssignClusters--> ((cluster, child), the batch's nodes there) --GroupByKey
          --> DedupCluster: cosine >= threshold within the group, connected groups, one survivor
              (best CLIP score) each; the others -> `semantic_duplicate` rejects naming it

A cluster expected above `max_cluster_size` members was given child centroids when the model
was fitted, so groups stay near that size; a group that still exceeds it (many identical
vectors) is cut into pieces of that size in uid order, each deduplicated on its own, so no
worker ever loads more than `max_cluster_size` vectors at once. Duplicates across clusters or
pieces are missed, as in SemDeDup itself: near-identical vectors almost always share a centroid.
"""

from __future__ import annotations

import json

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from witcurate import schemas
from witcurate.config import Config
from witcurate.filters import kmeans
from witcurate.filters import semantic_dedup as rules
from witcurate.pipeline import fs
from witcurate.pipeline.beam_io import KEPT, REJECTED, make_pipeline, reject, run_pipeline
from witcurate.pipeline.embedding_fit import (FitClusters, WriteTableOutputs, model_lines, pass_everything,
                                               read_model_summary, side_tables)
from witcurate.pipeline.embeddings import (MISSING, NODES, JoinEmbeddings, NodeBatch, bucket_count,
                                           check_missing, clear_side_files, embedding_files,
                                           missing_lines, note_clusters, pool_dim, read_tables)
from witcurate.pipeline.runner import StageContext, StageResult
from witcurate.pipeline.stages import BaseStage, Option, stage_dir
from witcurate.pipeline.tables import parquet_files

ASSIGN_BATCH = 4096


class AssignClusters(beam.DoFn):
    """A NodeBatch -> ((cluster, child), the batch's nodes there) for each group it touches."""

    def process(self, batch: NodeBatch, model):
        top, child, _ = model.assign(kmeans.normalise(batch.vectors))
        key = top * (1 + max((len(c) for c in model.children.values()), default=0)) + child + 1
        order = np.argsort(key, kind="stable")
        for index in np.split(order, np.flatnonzero(np.diff(key[order])) + 1):
            yield (int(top[index[0]]), int(child[index[0]])), batch.take(index)


class DedupCluster(beam.DoFn):
    """((cluster, child), NodeBatches) -> the kept rows, and a `semantic_duplicate` reject for
    every member of a duplicate group but its survivor (the reject's record gains
    `survivor_uid`). Members are taken in uid order, at most max_size at a time."""

    def __init__(self, threshold: float, max_size: int):
        self.threshold = threshold
        self.max_size = max_size

    def process(self, element):
        (cluster, child), batches = element
        nodes = NodeBatch.concat(batches)
        uids = nodes.uids
        nodes = nodes.take(sorted(range(len(uids)), key=uids.__getitem__))
        label = str(cluster) if child < 0 else f"{cluster}.{child}"
        for start in range(0, len(nodes), self.max_size):
            yield from self.decide(nodes.take(np.arange(start, min(len(nodes), start + self.max_size))), label)

    def decide(self, nodes: NodeBatch, label: str):
        uids = nodes.uids
        scores = nodes.rows.column("clip_score").to_pylist()
        losers = rules.resolve_duplicates(uids, scores, kmeans.normalise(nodes.vectors), self.threshold)
        if not losers:
            yield nodes.rows
            return
        kept = [i for i in range(len(uids)) if i not in losers]
        yield nodes.rows.take(pa.array(kept, pa.int64()))
        lost = sorted(losers)
        rejects = []
        for i, row in zip(lost, nodes.rows.take(pa.array(lost, pa.int64())).to_pylist()):
            survivor, cosine = losers[i]
            drop = rules.duplicate_drop(uids[survivor], cosine, self.threshold, label)
            rejects.append(reject({**row, "survivor_uid": uids[survivor]}, drop.reason, drop.detail))
        yield beam.pvalue.TaggedOutput(REJECTED, pa.Table.from_pylist(rejects, schemas.REJECTS))


class SemdedupStage(BaseStage):
    name = "semdedup"
    sections = ("semdedup",)
    # score: the score stage directory whose embeddings/ hold the image embeddings
    inputs = ("in", "score")
    input_schema = schemas.SCORED
    options = (
        Option("--threshold", "semdedup.threshold", "cosine at or above which two images are duplicates", float),
        Option("--clusters", "semdedup.clusters", "k-means clusters over the image embeddings", int),
        Option("--sample", "semdedup.sample", "embeddings the k-means is fitted on", int),
    )

    def default_inputs(self, config: Config, out_root: str) -> dict[str, str]:
        return {"in": stage_dir(out_root, "score"), "score": stage_dir(out_root, "score")}

    def run(self, ctx: StageContext) -> StageResult:
        cfg = ctx.config.semdedup
        p = make_pipeline(ctx.beam_args)
        rows = read_tables(p, parquet_files(ctx.input("in")), "ReadScored")
        if not cfg.enabled:
            return pass_everything(ctx, p, rows, "semdedup")

        files = embedding_files(ctx.input("score"))
        clear_side_files(ctx.work_dir)
        note_clusters(ctx, "semdedup", cfg.clusters)
        buckets = bucket_count(ctx.input("in"), ctx.input("score"))
        joined = rows | "Embeddings" >> JoinEmbeddings(files, pool_dim(files), buckets)
        model = joined[NODES] | "Fit" >> FitClusters(cfg.clusters, cfg.sample, cfg.max_cluster_size,
                                                     cfg.seed, cfg.niter)
        decided = (joined[NODES]
                   | "Assign" >> beam.ParDo(AssignClusters(), beam.pvalue.AsSingleton(model))
                   | "GroupByCluster" >> beam.GroupByKey()
                   | "Dedup" >> beam.ParDo(DedupCluster(cfg.threshold, cfg.max_cluster_size))
                   .with_outputs(REJECTED, main=KEPT))
        rejects = (joined[REJECTED], decided[REJECTED]) | "AllRejects" >> beam.Flatten()
        side = {"missing": missing_lines(joined[MISSING]), "model": model_lines(model)}
        ({KEPT: decided[KEPT], REJECTED: rejects, **side}
         | "Write" >> WriteTableOutputs(ctx.tmp_dir, schemas.SCORED, side_tables(ctx.work_dir, *side)))
        run_pipeline(p)

        check_missing(ctx.work_dir, ctx.input("score"), self.name)
        return StageResult(units="pairs", extra={"semdedup": {
            "enabled": True, "threshold": cfg.threshold, **read_model_summary(ctx.work_dir),
            "duplicate_groups": survivors_named(ctx.tmp_dir)}})


def survivors_named(tmp_dir: str) -> int:
    """How many duplicate groups there were: the distinct survivors the rejects name (each
    reject's record carries its survivor_uid; the detail text is for people, not parsed)."""
    survivors = set()
    for path in parquet_files(fs.join(tmp_dir, "rejects")):
        with fs.open_file(path) as f:
            table = pq.read_table(f, columns=["reason", "record"])
        for reason, record in zip(table.column("reason").to_pylist(), table.column("record").to_pylist()):
            if reason == rules.SEMANTIC_DUPLICATE:
                survivors.add(json.loads(record)["survivor_uid"])
    return len(survivors)
