"""The score stage's saved image embeddings, joined to a stage's kept rows, sampled and clustered
in Beam: what the semdedup and target stages share.

    kept rows --key uid--\\
                          CoGroupByKey --> nodes (uid, row, float16 bytes) | invalid -> rejects
    embeddings --key uid-/                                                  | no embedding -> missing
    nodes --(sample key, vector)--> Top.Smallest(sample) --fit k-means--> ClusterModel (one element)

Only the k-means sample (the `sample` uids with the smallest stable hashes) is ever gathered in
one place; every other vector stays a separate element assigned by the workers. Embeddings of
pairs the score stage rejected have no row here and are ignored. A kept row without an
embedding means the score stage's output is incomplete: the stage stops with an error naming
it (`check_missing`), rather than guess.
"""

from __future__ import annotations

import json
import posixpath
from typing import Any, Iterable

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from witcurate.errors import InputError
from witcurate.filters import kmeans
from witcurate.filters.semantic_dedup import INVALID_EMBEDDING, embedding_problem
from witcurate.pipeline import fs
from witcurate.pipeline.beam_io import REJECTED, beam_path, read_json_lines, reject
from witcurate.pipeline.runner import StageContext

EMBEDDINGS_DIR = "embeddings"          # under the score stage directory (score.EMBEDDINGS_DIR)
NODES = "nodes"
MISSING = "missing"

# A node on the wire: (uid, row, image embedding as float16 bytes): bytes keep Beam's coders fast.
Node = tuple[str, dict[str, Any], bytes]


def embedding_files(score_dir: str) -> list[str]:
    """The score stage's embeddings parts; an InputError naming the score stage when there are none."""
    files = fs.glob(fs.join(score_dir, EMBEDDINGS_DIR, "part-*.parquet"))
    if not files:
        raise InputError(f"no saved embeddings under {fs.join(score_dir, EMBEDDINGS_DIR)}",
                         "the embedding steps read what the score stage saved: point --score at a "
                         "score stage directory, or rerun score with --force")
    beam_path(files[0])
    return files


def pool_dim(files: list[str]) -> int:
    """The image embedding size of the pool: the first non-empty row's."""
    for path in files:
        with fs.open_file(path) as f:
            for batch in pq.ParquetFile(f).iter_batches(batch_size=64, columns=["image_embedding"]):
                for value in batch.column(0).to_pylist():
                    if value:
                        return len(value)
    raise InputError(f"the score stage's embeddings under {posixpath.dirname(files[0])} hold no rows",
                     "rerun the score stage with --force")


def vectors_of(batch: pa.RecordBatch | pa.Table) -> Iterable[tuple[str, bytes | None]]:
    """(uid, float16 bytes or None) per row of an embeddings batch, without a Python float per
    value: rows of equal length are cut from the flat value buffer."""
    uids = batch.column("uid").to_pylist()
    column = batch.column("image_embedding")
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
    flat = column.flatten().to_numpy(zero_copy_only=False).astype(np.float16, copy=False)
    offset = 0
    for uid, length in zip(uids, lengths.tolist()):
        if length is None or length != length:          # a null list
            yield uid, None
            continue
        length = int(length)
        yield uid, flat[offset:offset + length].tobytes()
        offset += length


class JoinRow(beam.DoFn):
    """(uid, {"row": [...], "emb": [...]}) -> a node per row with a usable embedding; rejects for
    unusable ones; MISSING for rows without one. Embeddings without a row are dropped here (the
    score stage rejected those pairs)."""

    def __init__(self, dim: int):
        self.dim = dim

    def process(self, element):
        uid, joined = element
        embeddings = list(joined["emb"])
        for row in joined["row"]:
            if not embeddings:
                yield beam.pvalue.TaggedOutput(MISSING, uid)
                continue
            data = embeddings[0]
            vector = np.frombuffer(data, dtype=np.float16) if data is not None else None
            problem = embedding_problem(vector, self.dim)
            if problem:
                yield beam.pvalue.TaggedOutput(REJECTED, reject(row, INVALID_EMBEDDING, problem))
            else:
                yield uid, row, data


def _read_vectors(batch):
    yield from vectors_of(batch)


class JoinEmbeddings(beam.PTransform):
    """Kept rows + the score stage's embeddings -> {NODES, REJECTED, MISSING}."""

    def __init__(self, files: list[str], dim: int):
        super().__init__()
        self.files = files
        self.dim = dim

    def expand(self, rows):
        vectors = (rows.pipeline
                   | "EmbeddingFiles" >> beam.Create(self.files)
                   | "ReadEmbeddings" >> beam.io.ReadAllFromParquetBatched(columns=["uid", "image_embedding"])
                   | "Vectors" >> beam.FlatMap(_read_vectors))
        keyed = rows | "KeyRowsByUid" >> beam.Map(lambda r: (str(r["uid"]), r))
        outs = ({"row": keyed, "emb": vectors}
                | "JoinByUid" >> beam.CoGroupByKey()
                | "Nodes" >> beam.ParDo(JoinRow(self.dim)).with_outputs(REJECTED, MISSING, main=NODES))
        return {NODES: outs[NODES], REJECTED: outs[REJECTED], MISSING: outs[MISSING]}


class CountAndExamples(beam.CombineFn):
    """How many elements, and the few smallest (the examples an error message names)."""

    def __init__(self, examples: int = 3):
        self.examples = examples

    def create_accumulator(self):
        return 0, []

    def add_input(self, acc, item):
        count, smallest = acc
        return count + 1, sorted(smallest + [item])[:self.examples]

    def merge_accumulators(self, accs):
        count, smallest = 0, []
        for c, s in accs:
            count, smallest = count + c, sorted(smallest + s)[:self.examples]
        return count, smallest

    def extract_output(self, acc):
        return {"count": acc[0], "examples": acc[1]}


def write_missing(missing, work_dir: str) -> None:
    """Record the rows without an embedding (a count and examples) for `check_missing`."""
    (missing
     | "CountMissing" >> beam.CombineGlobally(CountAndExamples())
     | "MissingJson" >> beam.Map(json.dumps)
     | "WriteMissing" >> beam.io.WriteToText(fs.join(work_dir, "missing"), ".jsonl", num_shards=1))


def check_missing(work_dir: str, score_dir: str, stage: str) -> None:
    """An InputError naming the score stage if any kept row had no saved embedding."""
    found = [r for r in read_json_lines(fs.join(work_dir, "missing")) if r["count"]]
    if found:
        count, examples = found[0]["count"], ", ".join(found[0]["examples"])
        raise InputError(f"stage {stage}: {count} kept rows have no image embedding in the score "
                         f"stage's {fs.join(score_dir, EMBEDDINGS_DIR)} (e.g. {examples})",
                         "its embeddings are incomplete: rerun the score stage with --force")


def _sample_entry(node: Node) -> tuple[int, bytes]:
    return kmeans.sample_key(node[0]), node[2]


def fit_model(sample: list[tuple[int, bytes]], total: int, clusters: int, max_size: int,
              seed: int, niter: int) -> kmeans.ClusterModel:
    """The ClusterModel of the sample: min(clusters, sample) centroids, and children for the
    clusters expected to exceed max_size among the `total` vectors to assign."""
    if not sample:
        return kmeans.ClusterModel(np.zeros((0, 0), dtype=np.float32), {}, 0)
    vectors = np.stack([np.frombuffer(v, dtype=np.float16) for _, v in sample]).astype(np.float32)
    model = kmeans.ClusterModel(kmeans.fit_kmeans(vectors, clusters, seed, niter), {}, len(sample))
    return kmeans.split_large_clusters(model, kmeans.normalise(vectors), total, max_size, seed, niter)


class FitClusters(beam.PTransform):
    """Nodes -> one ClusterModel fitted on the `sample` nodes with the smallest uid hashes."""

    def __init__(self, clusters: int, sample: int, max_size: int, seed: int, niter: int):
        super().__init__()
        self.clusters, self.sample, self.max_size = clusters, sample, max_size
        self.seed, self.niter = seed, niter

    def expand(self, nodes):
        total = nodes | "CountNodes" >> beam.combiners.Count.Globally()
        return (nodes
                | "SampleEntries" >> beam.Map(_sample_entry)
                | "Sample" >> beam.combiners.Top.Smallest(self.sample)
                | "FitKMeans" >> beam.Map(fit_model, beam.pvalue.AsSingleton(total), self.clusters,
                                          self.max_size, self.seed, self.niter))


def model_summary(model: kmeans.ClusterModel) -> str:
    """One JSON line about a fitted model, for the stage's manifest."""
    return json.dumps({"clusters": model.k, "sample": model.sample_size,
                       "split_clusters": len(model.children),
                       "child_clusters": sum(len(c) for c in model.children.values())})


def write_model_summary(model, work_dir: str) -> None:
    (model
     | "ModelSummary" >> beam.Map(model_summary)
     | "WriteModelSummary" >> beam.io.WriteToText(fs.join(work_dir, "model"), ".jsonl", num_shards=1))


def read_model_summary(work_dir: str) -> dict[str, Any]:
    found = read_json_lines(fs.join(work_dir, "model"))
    return found[0] if found else {}


def vectors_matrix(blobs: Iterable[bytes]) -> np.ndarray:
    """float16 byte strings -> an (n, d) float32 matrix of unit rows."""
    return kmeans.normalise(np.stack([np.frombuffer(b, dtype=np.float16) for b in blobs]))


def note_clusters(ctx: StageContext, stage: str, clusters: int) -> None:
    """Say so when the configured cluster count exceeds the pool: the fit uses one cluster per
    sampled vector at most (clamped, not an error, so a small run still works)."""
    pool = ctx.rows("in")
    if clusters > pool:
        ctx.progress(f"[{stage}] note: {stage}.clusters is {clusters} but the pool holds {pool} "
                     f"pairs: k-means fits {max(pool, 1)} clusters")
