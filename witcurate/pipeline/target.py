"""The target stage: DataComp's image-based filter on the image embeddings the score stage saved.

    rows --LocateEmbeddings--> (slice, rows saved there)          (rows without one -> missing)
    every saved embedding (target.fit: pool), or the located rows (input)
        --> sample --> k-means fit (one worker, a bounded sample) --> ClusterModel
    target embeddings (chunks) --TargetStats per chunk--> merged --> ClusterChoice (side input)
    located --Judge: the slice's vectors read (invalid embeddings -> rejects)-->
              nearest centroid kept, or an `off_target_cluster` reject naming the cluster and
              its distance to the target set

The clusters are fitted on the pool, as DataComp fits them on its whole pool: every image
embedding the score stage saved, the pairs it rejected included. Fitted on this stage's input
alone (after the CLIP score and semdedup), the few off-target images left are spread among the
clusters of the scenes they resemble, with no cluster of their own kind to fall into; fitted on
the pool, the clusters of their kind exist, lie far from the target set and are dropped
(measured on the demo: docs/semantic.md).

No grouping by cluster is needed: a pair's fate is its cluster's, decided once from the
centroids and the target set. The clusters, their distances, target votes and verdicts are
written to `clusters.json` beside the output, for the card and for choosing keep_fraction.
"""

from __future__ import annotations

import json

import apache_beam as beam
import numpy as np
import pyarrow as pa

from witcurate import schemas
from witcurate.config import Config
from witcurate.errors import InputError
from witcurate.filters import target as rules
from witcurate.pipeline import fs
from witcurate.pipeline.beam_io import KEPT, REJECTED, make_pipeline, read_json_lines, rejected, run_pipeline
from witcurate.pipeline.embedding_fit import (KMeansSettings, WriteTableOutputs, located_and_model, model_lines,
                                               pass_everything, read_model_summary, side_tables)
from witcurate.pipeline.embeddings import (NodeBatch, NodesDoFn, bucket_count, check_missing, clear_side_files,
                                           embedding_files, embedding_slices, missing_lines, note_clusters,
                                           pool_dim, read_tables)
from witcurate.pipeline.runner import StageContext, StageResult, load_manifest
from witcurate.pipeline.score import RUN_SCORER
from witcurate.pipeline.stages import BaseStage, Option, last_run, stage_dir
from witcurate.pipeline.tables import parquet_files
from witcurate.pipeline.target_set import check_targets, embed_images, target_chunks

RUN_TRUSTED = "run:trusted"        # target.images naming the scorer's trusted set (scorer.trusted)
TARGET_EMBEDDINGS = "target_embeddings.npy"
CLUSTERS_FILE = "clusters.json"


class Judge(NodesDoFn):
    """A slice's nodes -> their rows in kept clusters (a table), and `off_target_cluster` rejects."""

    def process_nodes(self, batch: NodeBatch, model, choice):
        top, _, _ = model.assign(batch.vectors, cosines=False)
        kept = np.array([choice.kept[c] for c in top.tolist()], dtype=bool)
        yield batch.rows.filter(pa.array(kept))
        if not kept.all():
            off = np.flatnonzero(~kept)
            rows = batch.rows.take(pa.array(off)).to_pylist()
            yield beam.pvalue.TaggedOutput(REJECTED, pa.Table.from_pylist(
                [rejected(row, rules.on_target(int(top[i]), choice)) for i, row in zip(off, rows)],
                schemas.REJECTS))


def _stats(chunk, model):
    if model.k == 0:                       # no pool vectors to cluster: nothing to vote for
        return rules.TargetStats.empty(0)
    return rules.target_stats(chunk, model.centroids)


def _merge(all_stats):
    merged = None
    for stats in all_stats:
        merged = stats if merged is None else merged.merge(stats)
    return merged


def _choose(_, stats, model, keep_fraction):
    return rules.choose_clusters(stats if stats is not None else rules.TargetStats.empty(model.k),
                                 keep_fraction)


class ChooseClusters(beam.PTransform):
    """The target set's path -> one ClusterChoice, given the fitted model (a singleton)."""

    def __init__(self, model, keep_fraction: float | None):
        super().__init__()
        self.model = model
        self.keep_fraction = keep_fraction

    def expand(self, paths):
        model = beam.pvalue.AsSingleton(self.model)
        stats = (paths
                 | "TargetChunks" >> beam.FlatMap(target_chunks)
                 | "TargetStats" >> beam.Map(_stats, model)
                 | "MergeStats" >> beam.CombineGlobally(_merge).without_defaults())
        return (self.model.pipeline
                | "One" >> beam.Create([None])
                | "Choose" >> beam.Map(_choose, beam.pvalue.AsSingleton(stats, default_value=None), model,
                                       self.keep_fraction))


def choice_json(choice: rules.ClusterChoice) -> str:
    return json.dumps({"rule": choice.rule, "clusters": [
        {"cluster": i, "kept": kept, "distance": d, "target_votes": v}
        for i, (kept, d, v) in enumerate(zip(choice.kept, choice.distance, choice.votes))]})


class TargetStage(BaseStage):
    name = "target"
    # score.model / score.pretrained: the model target images are embedded with; scorer.trusted:
    # the images of target.images "run:trusted"
    sections = ("target", "score.model", "score.pretrained", "scorer.trusted")
    inputs = ("in", "score", "checkpoint")
    input_schema = schemas.SCORED
    options = (
        Option("--target-embeddings", "target.embeddings", "target image embeddings (.npy or parquet)"),
        Option("--target-images", "target.images", "target images: a folder or a glob of tars"),
        Option("--clusters", "target.clusters", "k-means clusters over the pool's image embeddings", int),
        Option("--keep-fraction", "target.keep_fraction", "keep this fraction of clusters, nearest first", float),
    )

    def default_inputs(self, config: Config, out_root: str) -> dict[str, str]:
        inputs = {"in": last_run(config, out_root, "semdedup", "score"), "score": stage_dir(out_root, "score")}
        if config.target.images and config.score.pretrained == RUN_SCORER:
            inputs["checkpoint"] = fs.join(stage_dir(out_root, "scorer"), "checkpoint.pt")
        return inputs

    def run(self, ctx: StageContext) -> StageResult:
        cfg = ctx.config.target
        p = make_pipeline(ctx.beam_args)
        rows = read_tables(p, parquet_files(ctx.input("in")), "ReadIn")
        if not cfg.enabled:
            return pass_everything(ctx, p, rows, "target")

        files = embedding_files(ctx.input("score"))
        clear_side_files(ctx.work_dir)
        dim = pool_dim(files)
        targets, embedded = self.target_set(ctx)
        facts = check_targets(targets, dim)
        ctx.progress(f"[target] target set: {facts['usable']} usable embeddings of {facts['rows']}")
        note_clusters(ctx, "target", cfg.clusters)
        buckets = bucket_count(ctx.input("in"), ctx.input("score"))
        slices = embedding_slices(files)
        settings = KMeansSettings(cfg.clusters, cfg.sample, 1 << 62, cfg.seed, cfg.niter)
        located, model, missing = located_and_model(rows, slices, dim, buckets, settings,
                                                    fit_on_pool=cfg.fit == "pool")
        choice = p | "TargetSet" >> beam.Create([targets]) | "Clusters" >> ChooseClusters(model, cfg.keep_fraction)
        decided = (located
                   | "Judge" >> beam.ParDo(Judge(slices, dim), beam.pvalue.AsSingleton(model),
                                           beam.pvalue.AsSingleton(choice)).with_outputs(REJECTED, main=KEPT))
        side = {"missing": missing_lines(missing), "model": model_lines(model),
                "clusters": choice | "ClustersJson" >> beam.Map(choice_json)}
        ({KEPT: decided[KEPT], REJECTED: decided[REJECTED], **side}
         | "Write" >> WriteTableOutputs(ctx.tmp_dir, schemas.SCORED, side_tables(ctx.work_dir, *side)))
        run_pipeline(p)

        check_missing(ctx.work_dir, ctx.input("score"), self.name)
        clusters = read_json_lines(fs.join(ctx.work_dir, "clusters"))
        if clusters:
            fs.write_json(fs.join(ctx.tmp_dir, CLUSTERS_FILE), clusters[0])
        kept = sum(c["kept"] for c in clusters[0]["clusters"]) if clusters else 0
        return StageResult(units="pairs", extra={"target": {
            "enabled": True, "target_set": targets, **embedded, "target_embeddings": facts,
            "keep_fraction": cfg.keep_fraction, "fit": cfg.fit, **read_model_summary(ctx.work_dir),
            "clusters_kept": kept, "rule": clusters[0]["rule"] if clusters else None}})

    def target_set(self, ctx: StageContext) -> tuple[str, dict]:
        """The target embeddings' path, embedding target.images into the stage's output first."""
        cfg = ctx.config.target
        if cfg.embeddings:
            return cfg.embeddings, {}
        images = ctx.config.scorer.trusted if cfg.images == RUN_TRUSTED else cfg.images
        if not images:
            raise InputError("target.images is 'run:trusted' but scorer.trusted is empty",
                             "set scorer.trusted, or point target.images at a folder of images")
        weights = self.weights(ctx)
        out = fs.join(ctx.tmp_dir, TARGET_EMBEDDINGS)
        facts = embed_images(images, ctx.config.score.model, weights, out, ctx.progress)
        return out, {"target_images": images, "embedded": facts}

    @staticmethod
    def weights(ctx: StageContext) -> str:
        """The weights the score stage used, checked against the label its manifest recorded, so
        the target images land in the same embedding space as the pool."""
        from witcurate.pipeline.inference import model_label      # torch: only when the stage runs
        score = ctx.config.score
        weights = ctx.inputs.get("checkpoint") or score.pretrained
        if weights == RUN_SCORER or (ctx.inputs.get("checkpoint") and not fs.exists(weights)):
            raise InputError(f"target.images needs the scorer checkpoint the score stage used: {weights}",
                             "run the scorer stage, or pass --checkpoint PATH, or give target.embeddings")
        manifest = load_manifest(ctx.input("score")) or {}
        label = model_label(score.model, weights)
        if manifest.get("model") and manifest["model"] != label:
            raise InputError(f"target.images would be embedded with {label}, but the score stage "
                             f"used {manifest['model']}", "set score.model / score.pretrained as the "
                             "score stage ran, or give target.embeddings")
        return weights
