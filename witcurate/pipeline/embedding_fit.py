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
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa

from witcurate import schemas
from witcurate.filters import kmeans
from witcurate.pipeline import fs
from witcurate.pipeline.beam_io import KEPT, REJECTED, WriteStageOutputs, beam_path, read_json_lines, run_pipeline
from witcurate.pipeline.embeddings import LOCATED, MISSING, LocateEmbeddings, ReadVectors, Slice
from witcurate.pipeline.runner import StageContext, StageResult
from witcurate.pipeline.table_sink import Table, json_lines_table


def _smallest(keys: np.ndarray, vectors: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(keys, kind="stable")[:n]
    return keys[order], vectors[order]


class SmallestKeys(beam.CombineFn):
    """(keys, vectors) of node batches -> the n with the smallest keys, in key order.

    The accumulator is a list of (keys, vectors) pieces, cut down to the n smallest only when it
    holds more than 2n: selecting after every batch copied the whole sample once per batch."""

    def __init__(self, n: int):
        self.n = n

    def create_accumulator(self):
        return []

    def _select(self, pieces):
        return _smallest(np.concatenate([k for k, _ in pieces]), np.concatenate([v for _, v in pieces]), self.n)

    def _bounded(self, pieces):
        return pieces if sum(len(k) for k, _ in pieces) <= 2 * self.n else [self._select(pieces)]

    def add_input(self, acc, batch):
        return self._bounded(acc + [(batch.keys, batch.vectors)]) if len(batch) else acc

    def merge_accumulators(self, accs):
        return self._bounded([piece for acc in accs for piece in acc])

    def extract_output(self, acc):
        return self._select(acc) if acc else None


def fit_model(sample: tuple[np.ndarray, np.ndarray] | None, total: int, clusters: int,
              max_size: int, seed: int, niter: int) -> kmeans.ClusterModel:
    """The ClusterModel of the sample: min(clusters, sample) centroids, and children for the
    clusters expected to exceed max_size among the `total` vectors to assign."""
    if sample is None or not len(sample[0]):
        return kmeans.ClusterModel(np.zeros((0, 0), dtype=np.float32), {}, 0)
    vectors = kmeans.normalise(sample[1])
    model = kmeans.ClusterModel(kmeans.fit_kmeans(vectors, clusters, seed, niter), {}, len(vectors))
    return kmeans.split_large_clusters(model, vectors, total, max_size, seed, niter)


class FitOnSample(beam.CombineFn):
    """NodeBatches -> the ClusterModel fitted on the `sample` smallest-key vectors among them.

    The fit runs in extract_output, where the sample already is: the combine's result is then
    the model (kilobytes), not the sample (100 MB at 100,000 512-d vectors), which a global
    combine would otherwise move twice more through the runner (its default-value side input
    and the step after it). The accumulator also counts every node, the `total` the split of
    large clusters needs, so no second pass over the nodes counts them."""

    def __init__(self, clusters: int, sample: int, max_size: int, seed: int, niter: int):
        self.smallest = SmallestKeys(sample)
        self.clusters, self.max_size, self.seed, self.niter = clusters, max_size, seed, niter

    def create_accumulator(self):
        return 0, self.smallest.create_accumulator()

    def add_input(self, acc, batch):
        total, pieces = acc
        return total + len(batch), self.smallest.add_input(pieces, batch)

    def merge_accumulators(self, accs):
        accs = list(accs)
        return sum(t for t, _ in accs), self.smallest.merge_accumulators([p for _, p in accs])

    def extract_output(self, acc):
        total, pieces = acc
        return fit_model(self.smallest.extract_output(pieces), total, self.clusters, self.max_size,
                         self.seed, self.niter)


class FitClusters(beam.PTransform):
    """NodeBatches -> one ClusterModel fitted on the `sample` vectors with the smallest uid hashes."""

    def __init__(self, clusters: int, sample: int, max_size: int, seed: int, niter: int):
        super().__init__()
        self.fit = FitOnSample(clusters, sample, max_size, seed, niter)

    def expand(self, nodes):
        return nodes | "SampleAndFit" >> beam.CombineGlobally(self.fit)


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


def located_and_model(rows, slices: list[Slice], dim: int, buckets: int, fit: FitClusters):
    """Kept row tables -> (LOCATED: the rows by the slice their embedding is in, for a NodesDoFn;
    the ClusterModel fitted on a sample of them; the MISSING counts)."""
    located = rows | "Embeddings" >> LocateEmbeddings(slices, buckets)
    model = located[LOCATED] | "ReadSample" >> beam.ParDo(ReadVectors(slices, dim)) | "Fit" >> fit
    return located[LOCATED], model, located[MISSING]
