"""Match: annotate each caption with the ids of the queries it contains; no match, no candidate."""

from __future__ import annotations

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.utils.shared import Shared

from witcurate import schemas
from witcurate.config import Config
from witcurate.pipeline import fs
from witcurate.pipeline.beam_io import beam_path, make_pipeline, reject, run_pipeline
from witcurate.pipeline.matcher import QueryMatcher, load_queries
from witcurate.pipeline.runner import StageContext, StageResult
from witcurate.pipeline.tables import parquet_files
from witcurate.schemas import REJECTS
from witcurate.pipeline.stages import BaseStage


class _MatcherHandle:
    """Shared-able holder (Beam's Shared needs a weak-referenceable object)."""

    def __init__(self, matcher: QueryMatcher):
        self.matcher = matcher


class MatchFile(beam.DoFn):
    """One input parquet file -> its kept and rejected parts, written directly in batches.

    Matching is cheap next to Beam's per-element costs, so records move as Arrow batches, not
    as one element each: a part file per (input file, batch), named by their indexes so a retried
    bundle rewrites the same files. The automaton is built once per worker process and shared
    by its threads (Beam Shared), or loaded when the queries stage compiled it beside the list.
    """

    def __init__(self, queries_path: str, tmp_dir: str, shared: Shared, batch_rows: int = 20_000):
        self.queries_path = queries_path
        self.tmp_dir = tmp_dir
        self.shared = shared
        self.batch_rows = batch_rows
        self.matcher: QueryMatcher | None = None

    def setup(self):
        path = self.queries_path
        handle = self.shared.acquire(lambda: _MatcherHandle(QueryMatcher.for_list(path)), tag=path)
        self.matcher = handle.matcher

    def process(self, indexed_path):
        index, path = indexed_path
        with fs.open_file(path) as f:
            batches = list(pq.ParquetFile(f).iter_batches(batch_size=self.batch_rows,
                                                         columns=schemas.CANDIDATES.names))
        for b, batch in enumerate(batches or [pa.RecordBatch.from_pylist([], schemas.CANDIDATES)]):
            ids = self.matcher.match_column(batch.column("caption"))
            matched = pc.greater(pc.list_value_length(ids), 0)
            kept = pa.Table.from_batches([batch]).filter(matched).append_column("query_ids", ids.filter(matched))
            unmatched = pa.Table.from_batches([batch]).filter(pc.invert(matched)).to_pylist()
            rejects = pa.Table.from_pylist([reject(r, "no_query_match") for r in unmatched], REJECTS)
            name = f"part-{index:05d}-{b:05d}.parquet"
            with fs.open_file(fs.join(self.tmp_dir, name), "wb") as out:
                pq.write_table(schemas.conform(kept, schemas.MATCHED).select(schemas.MATCHED.names), out)
            with fs.open_file(fs.join(self.tmp_dir, "rejects", name), "wb") as out:
                pq.write_table(rejects, out)
            yield kept.num_rows, rejects.num_rows


class MatchStage(BaseStage):
    name = "match"
    sections = ("match",)
    inputs = ("in", "queries")
    input_schema = schemas.CANDIDATES

    def default_inputs(self, config: Config, out_root: str) -> dict[str, str]:
        return {"in": fs.join(out_root, "ingest"),
                "queries": config.match.queries or fs.join(out_root, "queries")}

    def run(self, ctx: StageContext) -> StageResult:
        load_queries(ctx.input("queries"))  # fail fast, in the driver, on a bad list
        files = parquet_files(ctx.input("in"))
        p = make_pipeline(ctx.beam_args)
        (p | "CandidateFiles" >> beam.Create(list(enumerate(files)))
           | "Reshuffle" >> beam.Reshuffle()
           | "WriteMatchedParts" >> beam.ParDo(MatchFile(ctx.input("queries"), beam_path(ctx.tmp_dir), Shared())))
        run_pipeline(p)
        return StageResult(units="captions")
