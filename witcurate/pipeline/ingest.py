"""Ingest: candidate (url, alt text) rows from files -> normalised, validated, URL-deduplicated."""

from __future__ import annotations

import apache_beam as beam
from apache_beam.metrics import Metrics

from witcurate import schemas
from witcurate.config import Config, IngestSection
from witcurate.errors import InputError
from witcurate.filters.text import caption_rules, is_english, normalize_caption
from witcurate.filters.url_format import normalize_url, url_rules
from witcurate.pipeline import fs
from witcurate.pipeline.beam_io import (KEPT, REJECTED, WriteStageOutputs, counter_value,
                                        make_pipeline, reject)
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


def check_candidate(row: dict, cfg: IngestSection):
    """Normalise one raw row; return ("kept", candidate) or ("rejected", reject row)."""
    if row.get("error"):
        reason, _, detail = row["error"].partition(": ")
        return REJECTED, reject(row, reason, detail)
    url, caption = row.get("url"), row.get("caption")
    if url is None:
        return REJECTED, reject(row, "missing_url", f"no {cfg.url_col!r} value")
    if caption is None:
        return REJECTED, reject(row, "missing_caption", f"no {cfg.caption_col!r} value")
    decision = url_rules(url.strip(), cfg.max_url_length)
    if decision is not True:
        return REJECTED, reject({**row, "url": url[:2048]}, decision[1], _clipped(url))
    try:
        url = normalize_url(url)
    except (ValueError, UnicodeError) as e:
        return REJECTED, reject(row, "url_unparseable", str(e)[:200])
    caption = normalize_caption(caption)
    decision = caption_rules(caption, cfg.min_words, cfg.min_chars, cfg.max_chars)
    if decision is True and cfg.english_only:
        decision = is_english(caption)
    if decision is not True:
        return REJECTED, reject({**row, "caption": caption[:2000]}, decision[1], _clipped(caption))
    uid = schemas.candidate_uid(url, caption)
    return KEPT, {"uid": uid, "url": url, "caption": caption, "source": row["source"],
                  "page_url": row.get("page_url")}


def _clipped(text: str) -> str:
    """A reject's detail: the start of the text, and its full length where the record clips it."""
    return text[:200] if len(text) <= 200 else f"{len(text):,} characters: {text[:160]}..."


class CheckCandidates(beam.DoFn):
    def __init__(self, cfg: IngestSection):
        self.cfg = cfg

    def process(self, row):
        tag, value = check_candidate(row, self.cfg)
        yield beam.pvalue.TaggedOutput(tag, value)


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
        checked = (p | "SourceFiles" >> beam.Create(files)
                     | "ReadSources" >> beam.ParDo(ReadSourceFile(cfg.url_col, cfg.caption_col))
                     | "Check" >> beam.ParDo(CheckCandidates(cfg)).with_outputs(KEPT, REJECTED))
        deduped = (checked[KEPT]
                   | "KeyByUrl" >> beam.Map(lambda r: (r["url"], r))
                   | "GroupByUrl" >> beam.GroupByKey()
                   | "PickSurvivor" >> beam.FlatMap(pick_url_survivor).with_outputs(KEPT, REJECTED))
        rejected = ((checked[REJECTED], deduped[REJECTED]) | "AllRejects" >> beam.Flatten())
        ({KEPT: deduped[KEPT], REJECTED: rejected}
         | "Write" >> WriteStageOutputs(ctx.tmp_dir, schemas.INGESTED))
        result = p.run()
        result.wait_until_finish()
        n_in = counter_value(result, ROWS_READ)
        if n_in == 0:
            raise InputError(f"the candidate files hold no rows: {', '.join(files)}",
                             "check ingest.sources points at non-empty files")
        return StageResult(n_in=n_in, units="candidates", extra={"source_files": files})
