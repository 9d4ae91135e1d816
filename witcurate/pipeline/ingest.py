"""Ingest: candidate (url, alt text) rows from files -> normalised, validated, URL-deduplicated."""

from __future__ import annotations

import apache_beam as beam
from apache_beam.metrics import Metrics

from witcurate import schemas
from witcurate.config import Config, IngestSection
from witcurate.errors import InputError
from witcurate.filters.base import Required
from witcurate.filters.candidates import ValidCaption, ValidUrl, read_cleanly
from witcurate.filters.text import normalize_caption
from witcurate.filters.url_format import normalize_url
from witcurate.pipeline import fs
from witcurate.pipeline.beam_io import (KEPT, REJECTED, FilterRecords, WriteStageOutputs,
                                        counter_value, make_pipeline, reject)
from witcurate.pipeline.runner import StageContext, StageResult
from witcurate.pipeline.sources import detect_format, read_source
from witcurate.pipeline.stages import BaseStage, Option

ROWS_READ = "ingest_rows_read"


class ReadSourceFile(beam.DoFn):
    """One source file -> raw rows. An unreadable file becomes one reject row, not a crash."""

    def __init__(self, url_col: str, caption_col: str):
        self.url_col = url_col
        self.caption_col = caption_col
        self.rows_read = Metrics.counter("witcurate", ROWS_READ)

    def process(self, path: str):
        try:
            for row in read_source(path, self.url_col, self.caption_col):
                self.rows_read.inc()
                yield row
        except Exception as e:  # corrupt file: count it once, reject it with the error
            self.rows_read.inc()
            yield {"url": None, "caption": None, "source": path,
                   "error": f"source_unreadable: {type(e).__name__}: {str(e)[:200]}"}


def candidate_filters(cfg: IngestSection) -> tuple:
    """What a raw source row must pass before its caption is normalised, in order."""
    return (read_cleanly,
            Required("url", "missing_url", f"no {cfg.url_col!r} value"),
            Required("caption", "missing_caption", f"no {cfg.caption_col!r} value"),
            ValidUrl(cfg.max_url_length))


def caption_filters(cfg: IngestSection) -> tuple:
    """What a normalised caption must pass."""
    return (ValidCaption(cfg.min_words, cfg.min_chars, cfg.max_chars, cfg.english_only),)


def with_normalized_caption(row: dict) -> dict:
    return {**row, "caption": normalize_caption(row["caption"])}


def to_candidate(row: dict) -> dict:
    """A checked row as a candidate: normalised URL, and the uid of (URL, caption)."""
    url = normalize_url(row["url"])
    return {"uid": schemas.candidate_uid(url, row["caption"]), "url": url,
            "caption": row["caption"], "source": row["source"], "page_url": row.get("page_url")}


def pick_url_survivor(url_and_rows):
    """Exact URL dedupe: the smallest uid survives; the others are rejects naming it."""
    _, rows = url_and_rows
    rows = sorted(rows, key=lambda r: r["uid"])
    yield beam.pvalue.TaggedOutput(KEPT, rows[0])
    for dup in rows[1:]:
        yield beam.pvalue.TaggedOutput(REJECTED, reject(dup, "duplicate_url", f"kept {rows[0]['uid']}"))


class IngestStage(BaseStage):
    name = "ingest"
    sections = ("ingest",)
    inputs = ("in",)
    options = (
        Option("--url-col", "ingest.url_col", "column holding the image URL"),
        Option("--caption-col", "ingest.caption_col", "column holding the alt text"),
        Option("--min-words", "ingest.min_words", "captions with fewer words are rejected", int),
        Option("--english-only", "ingest.english_only", "reject captions not identified as English", bool),
    )

    def default_inputs(self, config: Config, out_root: str) -> dict[str, str]:
        return {f"source{i}": s for i, s in enumerate(config.ingest.sources)}

    def run(self, ctx: StageContext) -> StageResult:
        cfg = ctx.config.ingest
        patterns = list(ctx.inputs.values())
        files = fs.expand(patterns)
        if not files:
            raise InputError(f"no candidate files match {', '.join(patterns) or '(nothing given)'}",
                             "set ingest.sources or pass --in with parquet/csv/tsv/jsonl/wat/warc files")
        for path in files:
            detect_format(path)  # fail fast on an unknown extension
        p = make_pipeline(ctx.beam_args)
        raw = (p | "SourceFiles" >> beam.Create(files)
                 | "ReadSources" >> beam.ParDo(ReadSourceFile(cfg.url_col, cfg.caption_col))
                 | "CheckRow" >> FilterRecords(*candidate_filters(cfg)))
        captioned = (raw[KEPT]
                     | "NormalizeCaption" >> beam.Map(with_normalized_caption)
                     | "CheckCaption" >> FilterRecords(*caption_filters(cfg)))
        deduped = (captioned[KEPT]
                   | "ToCandidate" >> beam.Map(to_candidate)
                   | "KeyByUrl" >> beam.Map(lambda r: (r["url"], r))
                   | "GroupByUrl" >> beam.GroupByKey()
                   | "PickSurvivor" >> beam.FlatMap(pick_url_survivor).with_outputs(KEPT, REJECTED))
        rejected = ((raw[REJECTED], captioned[REJECTED], deduped[REJECTED])
                    | "AllRejects" >> beam.Flatten())
        ({KEPT: deduped[KEPT], REJECTED: rejected}
         | "Write" >> WriteStageOutputs(ctx.tmp_dir, schemas.INGESTED))
        result = p.run()
        result.wait_until_finish()
        n_in = counter_value(result, ROWS_READ)
        if n_in == 0:
            raise InputError(f"the candidate files hold no rows: {', '.join(files)}",
                             "check ingest.sources points at non-empty files")
        return StageResult(n_in=n_in, units="candidates", extra={"source_files": files})
