"""The score stage's saved image embeddings joined to a stage's kept rows, in Beam: what the
semdedup and target stages start from. Rows move through Beam as Arrow tables; the vectors never
do. They are read where they are needed, from the score stage's parquet, one row group (a
`Slice`) at a time. Where each row's embedding was saved is found one of two ways:

  * up to INDEX_MAX_UIDS saved embeddings, in an index of the pool's uids that every worker
    gets as a side input (embedding_index.py): the rows are located where they were read;
  * beyond it, by a join by uid bucket, which no worker has to hold whole:

    embeddings' uid column, per slice --split by uid bucket--\\
                                                              GroupByKey(bucket) --> LocateRows
    kept rows (parquet batches) ---------split by uid bucket--/

Either way the result is the same:
        (slice, rows located in it + their row numbers there) | MISSING (rows without one)
        --GroupByKey(slice)--> read_nodes: the slice's vectors read and taken
        --> NodeBatch (rows with a usable embedding and their float16 vectors)
            + rejects (invalid embeddings)

The vectors are read where they are used: the k-means fit reads its sample's from their
slices, and the step that assigns (a NodesDoFn, which waits for the model) reads the rest. On
the local runner every element that crosses a step boundary is pickled and copied, and the
vectors cost more to move that way than to read from the parquet twice (measured:
docs/benchmarks.md). A bucket holds about JOIN_BUCKET_ROWS uids (the bucket count follows the
input's size) and a slice is one row group (the score stage writes them of at most 64 MB), so
no worker holds more, beyond the uid index where it is used (about 104 MB at most). Embeddings of
pairs the score stage rejected have no row and are dropped in the join. A kept row without an
embedding means the score stage's output is incomplete: the stage stops with an error naming it
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
import pyarrow.parquet as pq

from witcurate.errors import InputError
from witcurate.filters.kmeans import sample_keys
from witcurate.filters.semantic_dedup import INVALID_EMBEDDING, embedding_problem
from witcurate.pipeline import fs
from witcurate.pipeline.beam_io import REJECTED, beam_path, read_json_lines, reject
from witcurate.pipeline.embedding_index import INDEX_MAX_UIDS, UidIndex, slice_part, uid_index
from witcurate.pipeline.overlapped import OverlappedDoFn
from witcurate.pipeline.runner import StageContext
from witcurate.pipeline.tables import count_rows, open_parquet
from witcurate.schemas import REJECTS
from witcurate.schemas.vectors import cell_vector, vector_matrix, vector_sizes

EMBEDDINGS_DIR = "embeddings"          # under the score stage directory (score.EMBEDDINGS_DIR)
JOIN_BUCKET_ROWS = 50_000              # uids per join bucket
# rows per element the join moves: every element is pickled and copied a few times on its way
# through the runner; small ones reuse the allocator's memory, where large ones cost fresh
# pages each time.
PIECE_ROWS = 4096
LOCATED = "located"
PIECES = "pieces"
NODES = "nodes"
MISSING = "missing"


@dataclass
class NodeBatch:
    """Rows with a usable image embedding: the rows (Arrow) and their vectors. `name` says where
    the batch came from (its slice), unique within a stage's run."""
    rows: pa.Table
    vectors: np.ndarray          # (n, d) float16, L2-normalised by the score stage
    name: str = ""

    def __len__(self) -> int:
        return self.rows.num_rows

    @property
    def uids(self) -> list[str]:
        return self.rows.column("uid").to_pylist()


@dataclass(frozen=True)
class Slice:
    """One row group of one embeddings file: the unit the vectors are read in."""
    path: str
    row_group: int
    rows: int                   # rows saved in it (the footer's count)

    def read(self, column: str) -> pa.ChunkedArray:
        with fs.open_file(self.path) as f:
            return pq.ParquetFile(f).read_row_group(self.row_group, columns=[column]).column(0)


def embedding_files(score_dir: str) -> list[str]:
    """The score stage's embeddings parts; an InputError naming the score stage when there are none."""
    files = fs.glob(fs.join(score_dir, EMBEDDINGS_DIR, "part-*.parquet"))
    if not files:
        raise InputError(f"no saved embeddings under {fs.join(score_dir, EMBEDDINGS_DIR)}",
                         "the embedding steps read what the score stage saved: point --score at a "
                         "score stage directory, or rerun score with --force")
    beam_path(files[0])
    return files


def embedding_slices(files: list[str]) -> list[Slice]:
    """Every non-empty row group of the embeddings parts, from their footers."""
    out = []
    for path in files:
        meta = open_parquet(path, footer_only=True)
        out += [Slice(path, g, meta.row_group(g).num_rows) for g in range(meta.num_row_groups)
                if meta.row_group(g).num_rows]
    return out


def pool_dim(files: list[str]) -> int:
    """The image embedding size of the pool: the first non-empty row's."""
    for path in files:
        with fs.open_file(path) as f:
            for batch in pq.ParquetFile(f).iter_batches(batch_size=64, columns=["image_embedding"]):
                sizes = vector_sizes(batch.column(0))
                if (sizes > 0).any():
                    return int(sizes[sizes > 0][0])
    raise InputError(f"the score stage's embeddings under {posixpath.dirname(files[0])} hold no rows",
                     "rerun the score stage with --force")


def bucket_count(rows_dir: str, score_dir: str) -> int:
    """Join buckets for the input's size: about JOIN_BUCKET_ROWS uids each."""
    rows = max(count_rows(rows_dir), count_rows(fs.join(score_dir, EMBEDDINGS_DIR)))
    return max(1, math.ceil(rows / JOIN_BUCKET_ROWS))


def split_by_bucket(table: pa.Table, buckets: int, tag: str, keys: np.ndarray | None = None):
    """(bucket, (tag, rows of the table in that bucket, their sample keys)) for each bucket the
    table touches, in pieces of at most PIECE_ROWS rows (`keys`: the rows' sample keys, when
    already known)."""
    if not table.num_rows:
        return
    if keys is None:
        keys = sample_keys(table.column("uid").to_pylist())
    bucket = keys % np.uint64(buckets)
    order = np.argsort(bucket, kind="stable")
    cuts = np.flatnonzero(np.diff(bucket[order])) + 1
    for index in np.split(order, cuts):
        for start in range(0, len(index), PIECE_ROWS):
            piece = index[start:start + PIECE_ROWS]
            yield int(bucket[piece[0]]), (tag, table.take(pa.array(piece)), keys[piece])


def slice_uids(index: int, slices: list[Slice], buckets: int):
    """(bucket, ("at", uid, slice, row)) for the uids saved in slice `index`: where each is."""
    keys, uids, slice_of, row_of = slice_part(index, slices)
    table = pa.table({"uid": uids, "slice": pa.array(slice_of), "row": pa.array(row_of)})
    yield from split_by_bucket(table, buckets, "at", keys)


def usable_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows of a float16 matrix with no NaN or infinite value and not all zeros, from the bits:
    numpy's float16 arithmetic converts every value, which cost more than reading them."""
    bits = np.ascontiguousarray(vectors, dtype=np.float16).view(np.uint16)
    # The largest magnitude of a row (its bits without the sign) says both: at or above 0x7C00
    # (exponent all ones) some value is inf or NaN, and 0 means every value is +0 or -0. One
    # pass of one reduction: 0.03 s per 50,000 x 512 against 0.07 s for two masks.
    top = (bits & np.uint16(0x7FFF)).max(axis=1) if bits.shape[1] else np.zeros(len(bits), np.uint16)
    return (top < 0x7C00) & (top > 0)


class LocateRows(beam.DoFn):
    """(bucket, [("row", rows) | ("at", uid, slice, row)]) -> (slice, (rows, their row numbers
    in the slice, their sample keys)) for each slice the bucket's rows were saved in, in pieces
    of at most PIECE_ROWS; MISSING {count, examples} for rows without a saved embedding."""

    def process(self, element):
        _, items = element
        items = list(items)
        rows = [t for tag, t, _ in items if tag == "row"]
        if not rows:
            return
        rows = pa.concat_tables(rows, promote_options="default")
        keys = np.concatenate([k for tag, _, k in items if tag == "row"])
        where: dict[str, int] = {}
        slice_of = np.full(rows.num_rows, -1, dtype=np.int64)
        row_of = slice_of.copy()
        places = [t for tag, t, _ in items if tag == "at"]
        if places:      # in slice order, so a uid saved twice is found at its first place
            at = pa.concat_tables(places).sort_by([("slice", "ascending"), ("row", "ascending")])
            for i, uid in enumerate(at.column("uid").to_pylist()):
                where.setdefault(uid, i)
            pos = np.array([where.get(u, -1) for u in rows.column("uid").to_pylist()], dtype=np.int64)
            hit = pos >= 0
            slice_of[hit] = at.column("slice").to_numpy()[pos[hit]]
            row_of[hit] = at.column("row").to_numpy()[pos[hit]]
        yield from located_pieces(rows, keys, slice_of, row_of)


class LocateInIndex(beam.DoFn):
    """Kept rows -> the same pieces and MISSING counts as LocateRows, each row found in the
    pool's UidIndex (a side input) where it was read: the broadcast join."""

    def process(self, rows: pa.Table, index: UidIndex):
        if not rows.num_rows:
            return
        uids = rows.column("uid").combine_chunks()
        keys = sample_keys(uids.to_pylist())
        yield from located_pieces(rows, keys, *index.locate(uids, keys))


def located_pieces(rows: pa.Table, keys: np.ndarray, slice_of: np.ndarray, row_of: np.ndarray):
    """(slice, (rows saved there, their row numbers in it, their sample keys)) in pieces of at
    most PIECE_ROWS, in row order within the slice; MISSING {count, examples} for the rows whose
    slice is -1 (no saved embedding)."""
    missing = slice_of < 0
    if missing.any():
        uids = np.array(rows.column("uid").to_pylist(), dtype=object)
        yield beam.pvalue.TaggedOutput(MISSING, {"count": int(missing.sum()),
                                                 "examples": sorted(uids[missing].tolist())[:3]})
    found = np.flatnonzero(~missing)
    if not len(found):
        return
    slice_of, row_of, keys = slice_of[found], row_of[found], keys[found]
    order = np.lexsort((row_of, slice_of))
    for index in np.split(order, np.flatnonzero(np.diff(slice_of[order])) + 1):
        for start in range(0, len(index), PIECE_ROWS):
            part = index[start:start + PIECE_ROWS]
            yield int(slice_of[part[0]]), (rows.take(pa.array(found[part])), row_of[part], keys[part])


def read_nodes(slices: list[Slice], element, dim: int) -> tuple[NodeBatch | None, pa.Table | None]:
    """(slice, the rows located in it) -> (a NodeBatch of those with a usable embedding, in
    their order in the slice, or None; the rejects of those whose embedding is unusable, or
    None). The vectors are read from the slice here."""
    index, pieces = element
    pieces = list(pieces)
    at = np.concatenate([p[1] for p in pieces])
    order = np.argsort(at, kind="stable")
    rows = pa.concat_tables([p[0] for p in pieces], promote_options="default").take(pa.array(order))
    at = at[order]
    column = slices[index].read("image_embedding")
    vectors, fits = vector_matrix(column, dim)
    vectors = vectors[at]
    usable = fits[at] & usable_rows(vectors)
    bad = np.flatnonzero(~usable)
    rejects = invalid_rejects(rows.take(pa.array(bad)), column, at[bad], dim) if len(bad) else None
    good = np.flatnonzero(usable)
    if not len(good):
        return None, rejects
    if len(bad):
        rows, vectors = rows.take(pa.array(good)), vectors[good]
    return NodeBatch(rows, vectors, f"{index:06d}"), rejects


class NodesDoFn(OverlappedDoFn):
    """A step over the nodes that reads them itself: (slice, the rows located in it) ->
    process_nodes(NodeBatch, *side inputs), and REJECTED tables for unusable embeddings. Reading
    here rather than in a step before it keeps the vectors from crossing a step boundary (this
    step waits for the model, so the runner cannot fuse it with one before). Two slices are
    read and worked on at once (overlapped.py): most of the work is Arrow and numpy."""

    def __init__(self, slices: list[Slice], dim: int):
        self.slices, self.dim = slices, dim

    def work(self, element, *side) -> list:
        batch, rejects = read_nodes(self.slices, element, self.dim)
        out = [] if rejects is None else [beam.pvalue.TaggedOutput(REJECTED, rejects)]
        return out if batch is None else out + list(self.process_nodes(batch, *side))

    def process_nodes(self, batch: NodeBatch, *side):
        raise NotImplementedError


def invalid_rejects(rows: pa.Table, column: pa.ChunkedArray, pos: np.ndarray, dim: int) -> pa.Table:
    """`invalid_embedding` rejects, each saying what is wrong with its embedding."""
    out = []
    for row, p in zip(rows.to_pylist(), pos.tolist()):
        vector = cell_vector(column[p].as_py())
        out.append(reject(row, INVALID_EMBEDDING, embedding_problem(vector, dim) or "unusable embedding"))
    return pa.Table.from_pylist(out, REJECTS)


def read_tables(p: beam.Pipeline, files: list[str], label: str, columns: list[str] | None = None):
    if not files:
        return p | f"{label}/Empty" >> beam.Create([])
    beam_path(files[0])
    return (p | f"{label}/Files" >> beam.Create(files)
              | f"{label}/Read" >> beam.io.ReadAllFromParquetBatched(columns=columns))


class LocateEmbeddings(beam.PTransform):
    """Kept row tables -> {LOCATED: (slice, [pieces of rows saved there]), for a NodesDoFn to
    read; PIECES: the same pieces one by one, before the grouping (the k-means sample takes
    their keys and places); MISSING}. Up to `index_max` saved embeddings the rows are located
    in an index of the pool's uids sent to every worker (embedding_index.py); beyond it, by the
    join by uid bucket."""

    def __init__(self, slices: list[Slice], buckets: int, index_max: int = INDEX_MAX_UIDS):
        super().__init__()
        self.slices, self.buckets, self.index_max = slices, buckets, index_max

    def expand(self, row_tables):
        if sum(s.rows for s in self.slices) <= self.index_max:
            index = uid_index(row_tables.pipeline, self.slices)
            outs = row_tables | "Locate" >> beam.ParDo(LocateInIndex(), beam.pvalue.AsSingleton(index)
                                                       ).with_outputs(MISSING, main=LOCATED)
        else:
            outs = self.by_bucket(row_tables)
        return {LOCATED: outs[LOCATED] | "GroupBySlice" >> beam.GroupByKey(), PIECES: outs[LOCATED],
                MISSING: outs[MISSING]}

    def by_bucket(self, row_tables):
        places = (row_tables.pipeline
                  | "Slices" >> beam.Create(range(len(self.slices)))
                  | "SliceUids" >> beam.FlatMap(slice_uids, self.slices, self.buckets))
        rows = row_tables | "SplitRows" >> beam.FlatMap(split_by_bucket, self.buckets, "row")
        return ((rows, places)
                | "RowsAndPlaces" >> beam.Flatten()
                | "GroupByBucket" >> beam.GroupByKey()
                | "Locate" >> beam.ParDo(LocateRows()).with_outputs(MISSING, main=LOCATED))


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
