"""The semdedup stage: semantic duplicates (SemDeDup) among the scored pairs, from the image
embeddings the score stage saved; the images are never read again.

    scored rows --LocateEmbeddings--> (slice, rows saved there)     (rows without one -> missing)
    located pieces --keys and places--> sample --> k-means fit (reads the sample's vectors)
                                           --> ClusterModel
    located --AssignClusters: the slice's vectors read (invalid embeddings -> rejects); its
              vectors and rows written in (cluster, child) order to spill files in the work
              directory--> ((cluster, child), where that group's share waits)
            --GroupByKey--> DedupCluster: the group's rows and vectors read back; cosine >=
              threshold, connected groups, one survivor (best CLIP score) each; the others ->
              `semantic_duplicate` rejects naming it

Rows and vectors go to the cluster that compares them through files, not through the runner's
shuffle: a grouping step would pickle and copy every vector several times on the local runner,
and a slice's share of one cluster is a small table, which pickles 4x slower than Arrow writes
and reads it (docs/benchmarks.md). Spill files live in the stage's work directory, which the
runner removes once the stage has landed.

A cluster expected above `max_cluster_size` members was given child centroids when the model
was fitted, so groups stay near that size; a group that still exceeds it (many identical
vectors) is cut into pieces of that size in uid order, each deduplicated on its own. Duplicates
across clusters or pieces are missed, as in SemDeDup itself: near-identical vectors almost always
share a centroid.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any

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
from witcurate.pipeline.embedding_fit import (KMeansSettings, WriteTableOutputs, located_and_model, model_lines,
                                               pass_everything, read_model_summary, side_tables)
from witcurate.pipeline.embeddings import (NODES, NodeBatch, NodesDoFn, Slice, bucket_count, check_missing,
                                           clear_side_files, embedding_files, embedding_slices, missing_lines,
                                           note_clusters, pool_dim, read_tables)
from witcurate.pipeline.overlapped import OverlappedDoFn
from witcurate.pipeline.runner import StageContext, StageResult
from witcurate.pipeline.stages import BaseStage, Option, stage_dir
from witcurate.pipeline.tables import parquet_files

SPILL_DIR = "spill"          # under the stage's work directory


def write_vectors(path: str, vectors: np.ndarray) -> None:
    """(n, d) vectors as plain float16 bytes, row after row: read back by range."""
    with fs.open_file(path, "wb") as f:
        f.write(memoryview(np.ascontiguousarray(vectors, dtype=np.float16)).cast("B"))


@dataclass
class Spilled:
    """Where one (cluster, child) group's share of one slice waits: record batch `batch` of the
    spill's rows file (Arrow IPC) and rows start..stop of its vectors file, `dim` columns."""
    path: str           # without suffix: PATH.arrow holds the rows, PATH.f16 the vectors
    batch: int
    start: int
    stop: int
    dim: int


class SpillReader:
    """Reads Spilled rows and vectors, keeping the files it opened open until closed: a worker
    reads one piece per slice for each group, thousands of pieces from the same few files."""

    MAX_OPEN = 64

    def __init__(self):
        # path -> (its vectors file, its rows file, a reader over the rows file)
        self.opened: dict[str, tuple[Any, Any, pa.ipc.RecordBatchFileReader]] = {}

    def _opened(self, path: str):
        if path not in self.opened:
            if len(self.opened) >= self.MAX_OPEN:
                self.close()
            vectors, rows = fs.open_file(path + ".f16"), fs.open_file(path + ".arrow")
            self.opened[path] = (vectors, rows, pa.ipc.open_file(rows))
        return self.opened[path]

    def read(self, piece: Spilled) -> tuple[pa.RecordBatch, np.ndarray]:
        vectors, _, rows = self._opened(piece.path)
        vectors.seek(piece.start * piece.dim * 2)
        data = vectors.read((piece.stop - piece.start) * piece.dim * 2)
        return rows.get_batch(piece.batch), np.frombuffer(data, dtype=np.float16).reshape(-1, piece.dim)

    def close(self) -> None:
        for vectors, rows, _ in self.opened.values():
            vectors.close()
            rows.close()
        self.opened = {}


class AssignClusters(NodesDoFn):
    """A slice's nodes -> their vectors and rows in (cluster, child) order to spill files named
    after the slice (a record batch of rows per group), and ((cluster, child), Spilled) for each
    group the slice's nodes are in. Only those small references cross the shuffle: the rows,
    thousands of small tables, pickled slower than Arrow writes and reads them (0.23 + 0.19 ms
    a table, against 0.07 + 0.05 ms for its IPC bytes)."""

    def __init__(self, slices: list[Slice], dim: int, spill_dir: str):
        super().__init__(slices, dim)
        self.spill_dir = spill_dir

    def process_nodes(self, batch: NodeBatch, model):
        top, child, _ = model.assign(batch.vectors, cosines=False)
        key = model.group_keys(top, child)
        order = np.argsort(key, kind="stable")
        path = fs.join(self.spill_dir, batch.name)
        write_vectors(path + ".f16", batch.vectors[order])
        rows = batch.rows.take(pa.array(order)).combine_chunks().to_batches()[0]
        key = key[order]
        cuts = (np.flatnonzero(np.diff(key)) + 1).tolist()
        with fs.open_file(path + ".arrow", "wb") as f, pa.ipc.new_file(f, rows.schema) as writer:
            for group, (start, stop) in enumerate(zip([0, *cuts], [*cuts, len(key)])):
                writer.write_batch(rows.slice(start, stop - start))
                first = order[start]
                yield (int(top[first]), int(child[first])), Spilled(path, group, start, stop, self.dim)


class DedupCluster(OverlappedDoFn):
    """((cluster, child), Spilled pieces) -> the kept rows, and a `semantic_duplicate` reject for
    every member of a duplicate group but its survivor (the reject's record gains
    `survivor_uid`). Members are taken in uid order, at most max_size at a time. Two groups are
    worked on at once (overlapped.py), each thread with its own spill reader, and BLAS on one
    thread each: groups of about a thousand make products too small to split well (the step at
    100k went from 2.2-2.4 s to 1.8 s)."""

    BLAS_THREADS = 1

    def __init__(self, threshold: float, max_size: int):
        self.threshold = threshold
        self.max_size = max_size

    def start_bundle(self):
        super().start_bundle()
        self.local = threading.local()
        self.readers: list[SpillReader] = []

    def finish_bundle(self):
        yield from super().finish_bundle()
        for reader in self.readers:
            reader.close()

    def _reader(self) -> SpillReader:
        if not hasattr(self.local, "reader"):
            self.local.reader = SpillReader()
            self.readers.append(self.local.reader)
        return self.local.reader

    def work(self, element) -> list:
        return list(self.dedup(element))

    def dedup(self, element):
        (cluster, child), pieces = element
        reader = self._reader()
        read = [reader.read(p) for p in pieces]
        rows = pa.concat_tables([pa.Table.from_batches([r]) for r, _ in read], promote_options="default")
        vectors = np.concatenate([v for _, v in read])
        uids = rows.column("uid").to_pylist()
        order = np.array(sorted(range(len(uids)), key=uids.__getitem__), dtype=np.int64)
        label = str(cluster) if child < 0 else f"{cluster}.{child}"
        for start in range(0, len(order), self.max_size):
            part = order[start:start + self.max_size]
            yield from self.decide(rows.take(pa.array(part)), vectors[part], label)

    def decide(self, rows: pa.Table, vectors: np.ndarray, label: str):
        uids = rows.column("uid").to_pylist()
        scores = rows.column("clip_score").to_pylist()
        losers = rules.resolve_duplicates(uids, scores, kmeans.normalise(vectors), self.threshold)
        if not losers:
            yield rows
            return
        kept = [i for i in range(len(uids)) if i not in losers]
        yield rows.take(pa.array(kept, pa.int64()))
        lost = sorted(losers)
        rejects = []
        for i, row in zip(lost, rows.take(pa.array(lost, pa.int64())).to_pylist()):
            survivor, cosine = losers[i]
            drop = rules.duplicate_drop(uids[survivor], cosine, self.threshold, label)
            rejects.append(reject({**row, "survivor_uid": uids[survivor]}, drop.reason, drop.detail))
        yield beam.pvalue.TaggedOutput(REJECTED, pa.Table.from_pylist(rejects, schemas.REJECTS))


def fresh_spill_dir(work_dir: str) -> str:
    """The spill directory, emptied of what a killed attempt left."""
    path = fs.join(work_dir, SPILL_DIR)
    fs.rm(path)
    fs.makedirs(path)
    return path


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
        spill = fresh_spill_dir(ctx.work_dir)
        note_clusters(ctx, "semdedup", cfg.clusters)
        buckets = bucket_count(ctx.input("in"), ctx.input("score"))
        slices, dim = embedding_slices(files), pool_dim(files)
        settings = KMeansSettings(cfg.clusters, cfg.sample, cfg.max_cluster_size, cfg.seed, cfg.niter)
        located, model, missing = located_and_model(rows, slices, dim, buckets, settings)
        nodes = located | "Assign" >> beam.ParDo(AssignClusters(slices, dim, spill), beam.pvalue.AsSingleton(model)
                                                 ).with_outputs(REJECTED, main=NODES)
        decided = (nodes[NODES]
                   | "GroupByCluster" >> beam.GroupByKey()
                   | "Dedup" >> beam.ParDo(DedupCluster(cfg.threshold, cfg.max_cluster_size))
                   .with_outputs(REJECTED, main=KEPT))
        rejects = (nodes[REJECTED], decided[REJECTED]) | "AllRejects" >> beam.Flatten()
        side = {"missing": missing_lines(missing), "model": model_lines(model)}
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
