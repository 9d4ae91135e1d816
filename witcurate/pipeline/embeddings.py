"""The score stage's saved image embeddings joined to a stage's kept rows, in Beam, as Arrow
batches: what the semdedup and target stages start from.

    kept rows (parquet batches) ----split by uid bucket--\\
                                                          GroupByKey(bucket) --> JoinBucket
    embeddings (parquet batches) --split by uid bucket--/
        --> NodeBatch (rows with a usable embedding, their float16 vectors and sample keys)
        --> REJECTED tables (invalid embeddings) | MISSING (rows without an embedding)

Rows and vectors move as Arrow tables and numpy arrays of thousands of rows, not one element per
row, so Beam's per-element cost is paid per batch. A bucket holds about JOIN_BUCKET_ROWS uids
(the bucket count follows the input's size), so no worker holds more. Embeddings of pairs the
score stage rejected have no row and are dropped in the join. A kept row without an embedding
means the score stage's output is incomplete: the stage stops with an error naming it
(`check_missing`) rather than guess.
"""

from __future__ import annotations

import json
import math
import posixpath
from dataclasses import dataclass
from typing import Any, Iterable

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from witcurate.errors import InputError
from witcurate.filters.kmeans import sample_key
from witcurate.filters.semantic_dedup import INVALID_EMBEDDING, embedding_problem
from witcurate.pipeline import fs
from witcurate.pipeline.beam_io import REJECTED, beam_path, read_json_lines, reject
from witcurate.pipeline.runner import StageContext
from witcurate.pipeline.tables import count_rows
from witcurate.schemas import REJECTS

EMBEDDINGS_DIR = "embeddings"          # under the score stage directory (score.EMBEDDINGS_DIR)
JOIN_BUCKET_ROWS = 50_000              # uids per join bucket
# rows per element the join moves (its input pieces, its NodeBatches): 4 MB of 512-d float16
# vectors. Every element is pickled and copied a few times on its way through the runner; small
# ones reuse the allocator's memory, where a whole bucket's (50 MB) costs fresh pages each time.
NODE_BATCH_ROWS = 4096
NODES = "nodes"
MISSING = "missing"


@dataclass
class NodeBatch:
    """Rows with a usable image embedding: the rows (Arrow), their vectors and sample keys."""
    rows: pa.Table
    vectors: np.ndarray          # (n, d) float16, L2-normalised by the score stage
    keys: np.ndarray             # (n,) uint64, kmeans.sample_key of each uid

    def __len__(self) -> int:
        return self.rows.num_rows

    @property
    def uids(self) -> list[str]:
        return self.rows.column("uid").to_pylist()

    def take(self, index) -> "NodeBatch":
        index = np.asarray(index, dtype=np.int64)
        return NodeBatch(self.rows.take(pa.array(index)), self.vectors[index], self.keys[index])

    @staticmethod
    def concat(batches: Iterable["NodeBatch"]) -> "NodeBatch":
        batches = list(batches)
        return NodeBatch(pa.concat_tables([b.rows for b in batches], promote_options="default"),
                         np.concatenate([b.vectors for b in batches]),
                         np.concatenate([b.keys for b in batches]))


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


def bucket_count(rows_dir: str, score_dir: str) -> int:
    """Join buckets for the input's size: about JOIN_BUCKET_ROWS uids each."""
    rows = max(count_rows(rows_dir), count_rows(fs.join(score_dir, EMBEDDINGS_DIR)))
    return max(1, math.ceil(rows / JOIN_BUCKET_ROWS))


def uid_keys(uids: list[str]) -> np.ndarray:
    return np.fromiter((sample_key(u) for u in uids), dtype=np.uint64, count=len(uids))


def split_by_bucket(table: pa.Table, buckets: int, tag: str):
    """(bucket, (tag, rows of the table in that bucket)) for each bucket the table touches, in
    pieces of at most NODE_BATCH_ROWS rows."""
    if not table.num_rows:
        return
    bucket = uid_keys(table.column("uid").to_pylist()) % np.uint64(buckets)
    order = np.argsort(bucket, kind="stable")
    cuts = np.flatnonzero(np.diff(bucket[order])) + 1
    for index in np.split(order, cuts):
        for start in range(0, len(index), NODE_BATCH_ROWS):
            piece = index[start:start + NODE_BATCH_ROWS]
            yield int(bucket[piece[0]]), (tag, table.take(pa.array(piece)))


def vector_matrix(column: pa.ChunkedArray | pa.Array, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, dim) float16 matrix of a list column, and a mask of the rows that had `dim` values
    (other rows are zeros in the matrix)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks else pa.array([], column.type)
    n = len(column)
    lengths = pc.list_value_length(column).fill_null(0).to_numpy(zero_copy_only=False)
    fits = lengths == dim
    out = np.zeros((n, dim), dtype=np.float16)
    if fits.any():
        offsets = column.offsets.to_numpy()[:-1] - column.offsets[0].as_py()
        values = column.values.to_numpy(zero_copy_only=False).astype(np.float16, copy=False)
        start = column.offsets[0].as_py()
        values = values[start:] if start else values
        if fits.all() and len(values) >= n * dim and np.array_equal(offsets, np.arange(n) * dim):
            out[:] = values[:n * dim].reshape(n, dim)      # the usual case: one block, no gather
        else:
            for row in np.flatnonzero(fits):
                out[row] = values[offsets[row]:offsets[row] + dim]
    return out, fits


class JoinBucket(beam.DoFn):
    """(bucket, [("row", table) | ("emb", table)]) -> a NodeBatch; REJECTED tables for rows whose
    embedding is unusable; MISSING {count, examples} for rows without one."""

    def __init__(self, dim: int):
        self.dim = dim

    def process(self, element):
        _, items = element
        rows = [t for tag, t in items if tag == "row"]
        if not rows:
            return
        rows = pa.concat_tables(rows, promote_options="default")
        emb = pa.concat_tables([t for tag, t in items if tag == "emb"] or
                               [pa.table({"uid": pa.array([], pa.string()),
                                          "image_embedding": pa.array([], pa.list_(pa.float16()))})])
        vectors, fits = vector_matrix(emb.column("image_embedding"), self.dim)
        where = {}
        for i, uid in enumerate(emb.column("uid").to_pylist()):
            where.setdefault(uid, i)
        uids = rows.column("uid").to_pylist()
        pos = np.array([where.get(u, -1) for u in uids], dtype=np.int64)
        missing = pos < 0
        if missing.any():
            yield beam.pvalue.TaggedOutput(MISSING, {"count": int(missing.sum()),
                                                     "examples": sorted(np.array(uids)[missing].tolist())[:3]})
        found = np.flatnonzero(~missing)
        vec = vectors[pos[found]]
        usable = fits[pos[found]] & np.isfinite(vec).all(axis=1) & np.any(vec != 0, axis=1)
        bad = found[~usable]
        if len(bad):
            yield beam.pvalue.TaggedOutput(REJECTED, invalid_rejects(rows.take(pa.array(bad)), emb, pos[bad], self.dim))
        good = found[usable]
        for start in range(0, len(good), NODE_BATCH_ROWS):
            part = good[start:start + NODE_BATCH_ROWS]
            yield NodeBatch(rows.take(pa.array(part)), vectors[pos[part]], uid_keys([uids[i] for i in part]))


def invalid_rejects(rows: pa.Table, emb: pa.Table, pos: np.ndarray, dim: int) -> pa.Table:
    """`invalid_embedding` rejects, each saying what is wrong with its embedding."""
    out = []
    column = emb.column("image_embedding")
    for row, p in zip(rows.to_pylist(), pos.tolist()):
        value = column[p].as_py()
        vector = np.asarray(value, dtype=np.float32) if value is not None else None
        out.append(reject(row, INVALID_EMBEDDING, embedding_problem(vector, dim) or "unusable embedding"))
    return pa.Table.from_pylist(out, REJECTS)


def read_tables(p: beam.Pipeline, files: list[str], label: str, columns: list[str] | None = None):
    if not files:
        return p | f"{label}/Empty" >> beam.Create([])
    beam_path(files[0])
    return (p | f"{label}/Files" >> beam.Create(files)
              | f"{label}/Read" >> beam.io.ReadAllFromParquetBatched(columns=columns))


class JoinEmbeddings(beam.PTransform):
    """Kept row tables + the score stage's embeddings -> {NODES, REJECTED, MISSING}."""

    def __init__(self, files: list[str], dim: int, buckets: int):
        super().__init__()
        self.files, self.dim, self.buckets = files, dim, buckets

    def expand(self, row_tables):
        emb = (read_tables(row_tables.pipeline, self.files, "ReadEmbeddings", ["uid", "image_embedding"])
               | "SplitEmbeddings" >> beam.FlatMap(split_by_bucket, self.buckets, "emb"))
        rows = row_tables | "SplitRows" >> beam.FlatMap(split_by_bucket, self.buckets, "row")
        outs = ((rows, emb)
                | "RowsAndEmbeddings" >> beam.Flatten()
                | "GroupByBucket" >> beam.GroupByKey()
                | "Join" >> beam.ParDo(JoinBucket(self.dim)).with_outputs(REJECTED, MISSING, main=NODES))
        return {NODES: outs[NODES], REJECTED: outs[REJECTED], MISSING: outs[MISSING]}


def _merge_missing(found: Iterable[dict[str, Any]]) -> dict[str, Any]:
    count, examples = 0, []
    for item in found:
        count += item["count"]
        examples = sorted(examples + item["examples"])[:3]
    return {"count": count, "examples": examples}


def missing_lines(missing) -> beam.PCollection:
    """The rows without an embedding (a count and examples), one line for `check_missing`."""
    return (missing
            | "CountMissing" >> beam.CombineGlobally(_merge_missing)
            | "MissingJson" >> beam.Map(json.dumps))


def check_missing(work_dir: str, score_dir: str, stage: str) -> None:
    """An InputError naming the score stage if any kept row had no saved embedding."""
    found = [r for r in read_json_lines(fs.join(work_dir, "missing")) if r["count"]]
    if found:
        count, examples = found[0]["count"], ", ".join(found[0]["examples"])
        raise InputError(f"stage {stage}: {count} kept rows have no image embedding in the score "
                         f"stage's {fs.join(score_dir, EMBEDDINGS_DIR)} (e.g. {examples})",
                         "its embeddings are incomplete: rerun the score stage with --force")


def clear_side_files(work_dir: str) -> None:
    """Remove the small side outputs (missing, model, clusters) a killed attempt left in the work
    directory, so the driver reads only this attempt's."""
    for path in fs.glob(fs.join(work_dir, "*.jsonl")):
        fs.rm(path)


def note_clusters(ctx: StageContext, stage: str, clusters: int) -> None:
    """Say so when the configured cluster count exceeds the pool: the fit uses one cluster per
    sampled vector at most (clamped, not an error, so a small run still works)."""
    pool = ctx.rows("in")
    if clusters > pool:
        ctx.progress(f"[{stage}] note: {stage}.clusters is {clusters} but the pool holds {pool} "
                     f"pairs: k-means fits {max(pool, 1)} clusters")
