"""The k-means model of the embedding steps, fitted in Beam on a bounded sample, and the batched
writes of their outputs.

The sample is the `sample` node vectors with the smallest stable uid hashes (kmeans.sample_key):
each batch offers its smallest, a combine keeps the smallest overall, so the same sample comes
out on any runner and any sharding, and nothing beyond it is ever gathered in one place. The
fit (filters/kmeans.py) runs once, on one worker, and its ClusterModel is the side input every
assignment uses.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa

from witcurate import schemas
from witcurate.filters import kmeans
from witcurate.pipeline import fs
from witcurate.pipeline.beam_io import KEPT, REJECTED, WriteStageOutputs, beam_path, read_json_lines, run_pipeline
from witcurate.pipeline.embedding_index import slice_part
from witcurate.pipeline.embeddings import LOCATED, MISSING, PIECE_ROWS, PIECES, LocateEmbeddings, Slice, usable_rows
from witcurate.pipeline.runner import StageContext, StageResult
from witcurate.pipeline.table_sink import Table, json_lines_table
from witcurate.schemas.vectors import vector_matrix


def _smallest(keys: np.ndarray, values: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(keys, kind="stable")[:n]
    return keys[order], values[order]


class SmallestKeys(beam.CombineFn):
    """(keys, values) pieces -> the n values with the smallest keys, in key order, with their keys.

    The accumulator is a list of pieces, cut down to the n smallest only when it holds more
    than 2n: selecting after every piece copied the whole selection once per piece."""

    def __init__(self, n: int):
        self.n = n

    def create_accumulator(self):
        return []

    def _select(self, pieces):
        return _smallest(np.concatenate([k for k, _ in pieces]), np.concatenate([v for _, v in pieces]), self.n)

    def _bounded(self, pieces):
        return pieces if sum(len(k) for k, _ in pieces) <= 2 * self.n else [self._select(pieces)]

    def add_input(self, acc, piece):
        return self._bounded(acc + [piece]) if len(piece[0]) else acc

    def merge_accumulators(self, accs):
        return self._bounded([piece for acc in accs for piece in acc])

    def extract_output(self, acc):
        return self._select(acc) if acc else None


def fit_model(sample: np.ndarray | None, total: int, clusters: int, max_size: int, seed: int,
              niter: int, unit: bool = False) -> kmeans.ClusterModel:
    """The ClusterModel of the sample vectors: min(clusters, sample) centroids, and children for
    the clusters expected to exceed max_size among the `total` vectors to assign (`unit`: the
    sample already is normalise()'s float32 rows)."""
    if sample is None or not len(sample):
        return kmeans.ClusterModel(np.zeros((0, 0), dtype=np.float32), {}, 0)
    vectors = sample if unit else kmeans.normalise(sample)
    model = kmeans.ClusterModel(kmeans.fit_kmeans(vectors, clusters, seed, niter, unit=True), {}, len(vectors))
    return kmeans.split_large_clusters(model, vectors, total, max_size, seed, niter)


READ_THREADS = 4        # slices the fit decodes at once (Arrow decodes without the GIL)


def read_sample(slices: list[Slice], places: np.ndarray, dim: int) -> np.ndarray:
    """The usable vectors at `places` ((slice, row) pairs), in that order, as normalise()'s float32
    unit rows; an unusable embedding is left out (the assigning step rejects it). The slices are
    decoded and normalised a few at a time on threads (Arrow decodes and numpy converts without
    the GIL): the fit runs on one worker, and at a 100k sample of 1M it reads every slice."""
    out = np.empty((len(places), dim), dtype=np.float32)
    usable = np.zeros(len(places), dtype=bool)
    order = np.argsort(places[:, 0], kind="stable")
    groups = [g for g in np.split(order, np.flatnonzero(np.diff(places[order, 0])) + 1) if len(g)]

    def read(index: np.ndarray) -> None:
        vectors, fit = vector_matrix(slices[int(places[index[0], 0])].read("image_embedding"), dim)
        rows = places[index, 1]
        picked = vectors[rows]
        usable[index] = fit[rows] & usable_rows(picked)
        out[index] = kmeans.normalise(picked)

    with ThreadPoolExecutor(max_workers=min(READ_THREADS, max(1, len(groups)))) as pool:
        list(pool.map(read, groups))           # list(): re-raise a reader's error here
    return out if usable.all() else out[usable]


class FitOnSample(beam.CombineFn):
    """Located pieces (embeddings.LocateRows) -> the ClusterModel fitted on the vectors of the
    `sample` located rows with the smallest uid hashes.

    Only the sample's places ((slice, row), 16 bytes each) pass through the combine; its
    vectors are read from their slices in extract_output, where the fit runs. What leaves the
    combine is then the model (kilobytes): neither the vectors of every batch nor the 100 MB
    sample are pickled across the runner's steps. The accumulator also counts every located
    row, the `total` the split of large clusters needs. A sample row whose embedding is
    unusable is left out of the fit, so the sample can be that much smaller than `sample`."""

    def __init__(self, slices: list[Slice], dim: int, settings: KMeansSettings):
        self.smallest = SmallestKeys(settings.sample)
        self.slices, self.dim, self.settings = slices, dim, settings

    def create_accumulator(self):
        return 0, self.smallest.create_accumulator()

    def add_input(self, acc, located):
        total, pieces = acc
        index, (_, at, keys) = located
        places = np.column_stack([np.full(len(at), index, dtype=np.int64), at.astype(np.int64)])
        return total + len(keys), self.smallest.add_input(pieces, (keys, places))

    def merge_accumulators(self, accs):
        accs = list(accs)
        return sum(t for t, _ in accs), self.smallest.merge_accumulators([p for _, p in accs])

    def extract_output(self, acc):
        total, pieces = acc
        chosen = self.smallest.extract_output(pieces)
        sample = read_sample(self.slices, chosen[1], self.dim) if chosen is not None else None
        k = self.settings
        return fit_model(sample, total, k.clusters, k.max_size, k.seed, k.niter, unit=True)


@dataclass(frozen=True)
class KMeansSettings:
    clusters: int
    sample: int
    max_size: int          # clusters expected above it are split (1 << 62: never)
    seed: int
    niter: int


class FitClusters(beam.PTransform):
    """Located pieces -> one ClusterModel fitted on the `sample` vectors with the smallest uid
    hashes, read from the slices the pieces point into."""

    def __init__(self, slices: list[Slice], dim: int, settings: KMeansSettings):
        super().__init__()
        self.fit = FitOnSample(slices, dim, settings)

    def expand(self, located):
        return located | "SampleAndFit" >> beam.CombineGlobally(self.fit)


def model_summary(model: kmeans.ClusterModel) -> str:
    """One JSON line about a fitted model, for the stage's manifest."""
    return json.dumps({"clusters": model.k, "sample": model.sample_size,
                       "split_clusters": len(model.children),
                       "child_clusters": sum(len(c) for c in model.children.values())})


def model_lines(model) -> beam.PCollection:
    """The fitted model's summary line, for the `model` table of side_tables()."""
    return model | "ModelSummary" >> beam.Map(model_summary)


def read_model_summary(work_dir: str) -> dict[str, Any]:
    found = read_json_lines(fs.join(work_dir, "model"))
    return found[0] if found else {}


def conform_kept(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """A kept table with exactly `schema`'s columns and types, ready for the batched writer."""
    return schemas.conform(table, schema).select(schema.names).cast(schema)


def _non_empty(table: pa.Table) -> bool:
    return table.num_rows > 0


def side_tables(work_dir: str, *names: str) -> dict[str, Table]:
    """An embedding step's JSON-lines side outputs (`missing`, `model`, `clusters`), in its work
    directory, where the driver reads them once the pipeline has run."""
    return {name: json_lines_table(fs.join(work_dir, name)) for name in names}


class WriteTableOutputs(beam.PTransform):
    """Write a stage's kept tables and reject tables (Arrow) as parquet parts in its temporary
    directory, with its `side` tables, through WriteStageOutputs: the same files and schemas
    as a stage of row dicts writes."""

    def __init__(self, tmp_dir: str, kept_schema: pa.Schema, side: dict[str, Table] | None = None):
        super().__init__()
        self.tmp_dir = beam_path(tmp_dir)
        self.kept_schema = kept_schema
        self.side = dict(side or {})

    def expand(self, outputs):
        kept = (outputs[KEPT]
                | "NonEmptyKept" >> beam.Filter(_non_empty)
                | "ConformKept" >> beam.Map(conform_kept, self.kept_schema))
        rejected = outputs[REJECTED] | "NonEmptyRejects" >> beam.Filter(_non_empty)
        return ({**outputs, KEPT: kept, REJECTED: rejected}
                | "Tables" >> WriteStageOutputs(self.tmp_dir, self.kept_schema, extra=self.side))


def pass_everything(ctx: StageContext, p: beam.Pipeline, rows: beam.PCollection, name: str) -> StageResult:
    """A stage switched off (`NAME.enabled: false`): every pair is kept as it came, nothing is
    read from the embeddings, and the manifest says the step was off."""
    ctx.progress(f"[{name}] {name}.enabled is false: every pair passes")
    ({KEPT: rows, REJECTED: p | "NoRejects" >> beam.Create([])}
     | "Write" >> WriteTableOutputs(ctx.tmp_dir, schemas.SCORED))
    run_pipeline(p)
    return StageResult(units="pairs", extra={name: {"enabled": False}})


def saved_pieces(index: int, slices: list[Slice]):
    """Every embedding saved in slice `index` as FitOnSample's pieces: (slice, (None, row numbers,
    sample keys)), the pool's own uids in place of located rows."""
    keys, _, _, at = slice_part(index, slices)
    for start in range(0, len(keys), PIECE_ROWS):
        yield index, (None, at[start:start + PIECE_ROWS], keys[start:start + PIECE_ROWS])


def located_and_model(rows, slices: list[Slice], dim: int, buckets: int, settings: KMeansSettings,
                      fit_on_pool: bool = False):
    """Kept row tables -> (LOCATED: the rows by the slice their embedding is in, for a NodesDoFn;
    the ClusterModel fitted on a sample of them, or with `fit_on_pool` on a sample of every
    embedding saved in the slices, whether its row reached this stage or not; the MISSING counts)."""
    located = rows | "Embeddings" >> LocateEmbeddings(slices, buckets)
    pieces = located[PIECES]
    if fit_on_pool:
        pieces = (rows.pipeline
                  | "PoolSlices" >> beam.Create(range(len(slices)))
                  | "PoolPieces" >> beam.FlatMap(saved_pieces, slices))
    model = pieces | "Fit" >> FitClusters(slices, dim, settings)
    return located[LOCATED], model, located[MISSING]
