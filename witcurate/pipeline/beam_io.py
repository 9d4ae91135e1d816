"""Beam plumbing shared by the stages: a pinned local runner, stage reads, kept/rejects writes."""

from __future__ import annotations

import json
from typing import Any, Iterable

import apache_beam as beam
import pyarrow as pa
from apache_beam.options.pipeline_options import PipelineOptions

from witcurate.pipeline import fs
from witcurate.pipeline.runner import parquet_files
from witcurate.schemas import REJECTS

KEPT = "kept"
REJECTED = "rejected"


def make_pipeline(beam_args: list[str] | None = None) -> beam.Pipeline:
    """A Beam pipeline; without `--runner` it runs on the in-process FnApiRunner.

    Beam's own default may try to download a runner binary, which never works offline, so the
    local runner is pinned unless the user names one (`--runner=DataflowRunner ...`).
    `--direct_num_workers=2 --direct_running_mode=multi_processing` also work here.
    """
    args = list(beam_args or [])
    options = PipelineOptions(args, save_main_session=False)
    if not any(a.startswith("--runner") for a in args):
        from apache_beam.runners.portability.fn_api_runner import FnApiRunner
        return beam.Pipeline(runner=FnApiRunner(), options=options)
    return beam.Pipeline(options=options)


def reject(record: dict[str, Any], reason: str, detail: str = "") -> dict[str, Any]:
    """A rejects row: the record's uid, a stable reason code, specifics, and the record itself."""
    return {
        "uid": str(record.get("uid", "")),
        "reason": reason,
        "detail": detail,
        "record": json.dumps(record, default=_json_default, ensure_ascii=False, sort_keys=True),
    }


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def read_stage(p: beam.Pipeline, directory: str, label: str) -> beam.PCollection:
    """The kept rows of a stage directory as dicts (an empty PCollection if it kept nothing)."""
    files = parquet_files(directory)
    if not files:
        return p | f"{label}/Empty" >> beam.Create([])
    return (p | f"{label}/Files" >> beam.Create(files)
              | f"{label}/Read" >> beam.io.ReadAllFromParquet())


class WriteStageOutputs(beam.PTransform):
    """Write a stage's kept records and rejects as parquet parts in its temporary directory.

    Apply it to a dict: `{KEPT: outs[KEPT], REJECTED: outs[REJECTED]} | WriteStageOutputs(...)`,
    or to the result of `.with_outputs(KEPT, REJECTED)` through `stage_outputs(...)`.
    """

    def __init__(self, tmp_dir: str, kept_schema: pa.Schema, num_shards: int = 0):
        super().__init__()
        self.tmp_dir = tmp_dir
        self.kept_schema = kept_schema
        self.num_shards = num_shards

    def expand(self, outputs):
        kept, rejected = outputs[KEPT], outputs[REJECTED]
        kept | "WriteKept" >> beam.io.WriteToParquet(
            fs.join(self.tmp_dir, "part"), self.kept_schema, file_name_suffix=".parquet",
            num_shards=self.num_shards)
        rejected | "WriteRejects" >> beam.io.WriteToParquet(
            fs.join(self.tmp_dir, "rejects", "part"), REJECTS, file_name_suffix=".parquet",
            num_shards=self.num_shards)
        return outputs


def stage_outputs(outputs) -> dict[str, beam.PCollection]:
    """The kept and rejected PCollections of a `.with_outputs(KEPT, REJECTED)` result."""
    return {KEPT: outputs[KEPT], REJECTED: outputs[REJECTED]}


def run_pipeline(p: beam.Pipeline) -> None:
    result = p.run()
    result.wait_until_finish()


def tagged(items: Iterable[tuple[str, Any]]):
    """Turn (tag, value) pairs from a plain generator into Beam tagged outputs."""
    for tag, value in items:
        yield beam.pvalue.TaggedOutput(tag, value)


def counter_value(result, name: str) -> int:
    """The committed (else attempted) value of a Beam counter after the pipeline ran."""
    from apache_beam.metrics.metric import MetricsFilter
    counters = result.metrics().query(MetricsFilter().with_name(name))["counters"]
    return int(sum(c.committed if c.committed is not None else c.attempted for c in counters))
