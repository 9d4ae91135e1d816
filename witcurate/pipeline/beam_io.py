"""Beam plumbing shared by the stages: a pinned local runner, stage reads, the one transform that
applies filters, and the stage outputs' writes."""

from __future__ import annotations

import json
import shutil
import weakref
from typing import Any, Sequence

import apache_beam as beam
import pyarrow as pa
from apache_beam.options.pipeline_options import PipelineOptions

from witcurate.errors import UserError
from witcurate.filters.base import Drop, RecordFilter, apply_filters
from witcurate.pipeline import beam_data_plane, beam_state_weight, dofn_specs, fs
from witcurate.pipeline.options_views import ViewCachingOptions
from witcurate.pipeline.table_sink import Table, WriteTables, parquet_table
from witcurate.pipeline.tables import parquet_files
from witcurate.schemas import REJECTS

dofn_specs.install()      # Beam's per-ParDo scans of a DoFn (state, arguments), once per kind of DoFn
beam_state_weight.install()   # the state cache's weighing, without re-listing every module

KEPT = "kept"
REJECTED = "rejected"
# A reject carries its record; string fields longer than this are clipped there (the detail
# says how long the text was), so one 10 MB caption cannot bloat the rejects.
REJECT_FIELD_CHARS = 2048


def make_pipeline(beam_args: list[str] | None = None) -> beam.Pipeline:
    """A Beam pipeline; without `--runner` it runs on the in-process FnApiRunner.

    Beam's own default may try to download a runner binary, which never works offline, so the
    local runner is pinned unless the user names one (`--runner=DataflowRunner ...`).
    `--direct_num_workers=2 --direct_running_mode=multi_processing` also work here, on a data
    plane that no longer drops bytes (beam_data_plane).
    """
    args = list(beam_args or [])
    options = ViewCachingOptions(args, save_main_session=False)
    if not any(a.startswith("--runner") for a in args):
        from apache_beam.runners.portability.fn_api_runner import FnApiRunner
        beam_data_plane.install()
        return _cleaned_up(beam.Pipeline(runner=FnApiRunner(), options=options))
    return _cleaned_up(beam.Pipeline(options=options))


def _cleaned_up(p: beam.Pipeline) -> beam.Pipeline:
    """`p`, whose local temporary directory goes when `p` does. Beam makes one per Pipeline
    (/tmp/beam-pipeline-temp*) and removes it only in run(), so a stage that stops on bad input
    before running its pipeline, or a graph that is only checked, left an empty directory in
    /tmp every time."""
    weakref.finalize(p, shutil.rmtree, p.local_tempdir, ignore_errors=True)
    return p


def runs_in_this_process(beam_args: list[str] | None) -> bool:
    """Whether make_pipeline's runner runs the DoFns in this very process (the pinned FnApiRunner
    in its default mode): then what a DoFn's set-up would start, the stage may start before the
    graph is even built, and the DoFn finds it running."""
    from apache_beam.options.pipeline_options import DirectOptions
    args = list(beam_args or [])
    if any(a.startswith("--runner") for a in args):
        return False
    return PipelineOptions(args).view_as(DirectOptions).direct_running_mode != "multi_processing"


def reject(record: dict[str, Any], reason: str, detail: str = "") -> dict[str, Any]:
    """A rejects row: the record's uid, a stable reason code, specifics, and the record itself."""
    clipped = {k: v[:REJECT_FIELD_CHARS] if isinstance(v, str) else v for k, v in record.items()}
    return {
        "uid": str(record.get("uid") or ""),
        "reason": reason,
        "detail": detail,
        "record": json.dumps(clipped, default=_json_default, ensure_ascii=False, sort_keys=True),
    }


def rejected(record: dict[str, Any], drop: Drop) -> dict[str, Any]:
    """The rejects row of a record a filter dropped."""
    return reject(record, drop.reason, drop.detail)


class _ApplyFilters(beam.DoFn):
    def __init__(self, filters: Sequence[RecordFilter]):
        self.filters = tuple(filters)

    def process(self, record):
        decision = apply_filters(record, self.filters)
        if decision is True:
            yield beam.pvalue.TaggedOutput(KEPT, record)
        else:
            yield beam.pvalue.TaggedOutput(REJECTED, rejected(record, decision))


class FilterRecords(beam.PTransform):
    """Apply a chain of filters (see witcurate.filters.base) to every record.

    A record every filter keeps goes to KEPT unchanged; the first Drop sends it to REJECTED as a
    rejects row with that drop's reason and detail, so nothing a filter drops is lost. Returns
    `{KEPT: ..., REJECTED: ...}`, ready for WriteStageOutputs or for the next FilterRecords.
    Filters must pickle (module-level functions or small frozen dataclasses), since Beam ships
    them to its workers.
    """

    def __init__(self, *filters: RecordFilter):
        super().__init__()
        if not filters:
            raise ValueError("FilterRecords needs at least one filter")
        self.filters = filters

    def expand(self, records):
        outs = records | "Filter" >> beam.ParDo(_ApplyFilters(self.filters)).with_outputs(KEPT, REJECTED)
        return {KEPT: outs[KEPT], REJECTED: outs[REJECTED]}


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def beam_path(path: str) -> str:
    """`path`, once Beam's own file IO is known to handle its scheme; a clear error otherwise.

    The stages' parquet reads and writes go through Beam's FileSystems (local paths, gs:// with
    apache-beam[gcp], s3:// with apache-beam[aws], hdfs://), not fsspec: an fsspec-only URL
    such as memory:// would otherwise fail deep inside a running pipeline.
    """
    from apache_beam.io.filesystems import FileSystems
    try:
        FileSystems.get_filesystem(path)
    except ValueError:
        scheme = path.split("://", 1)[0] if "://" in path else "local"
        raise UserError(f"Beam's file IO cannot use {scheme}:// paths: {path}",
                        "use a local directory, gs://BUCKET/... (pip install 'apache-beam[gcp]' "
                        "gcsfs) or s3://... (apache-beam[aws] s3fs)") from None
    return path


def read_stage(p: beam.Pipeline, directory: str, label: str) -> beam.PCollection:
    """The kept rows of a stage directory as dicts (an empty PCollection if it kept nothing)."""
    files = parquet_files(directory)
    if not files:
        return p | f"{label}/Empty" >> beam.Create([])
    beam_path(files[0])
    return (p | f"{label}/Files" >> beam.Create(files)
              | f"{label}/Read" >> beam.io.ReadAllFromParquet())


class WriteStageOutputs(beam.PTransform):
    """Write a stage's kept records and rejects as parquet parts in its temporary directory,
    with any `extra` tables of the same pipeline, all through one sink (table_sink.py).

    Apply it to a dict: `{KEPT: outs[KEPT], REJECTED: outs[REJECTED]} | WriteStageOutputs(...)`,
    or to the result of `.with_outputs(KEPT, REJECTED)` through `stage_outputs(...)`; each extra
    table's PCollection goes in the same dict under its name. Elements of a parquet table are row
    dicts or Arrow tables of its schema.
    """

    def __init__(self, tmp_dir: str, kept_schema: pa.Schema, rejects_schema: pa.Schema = REJECTS,
                 extra: dict[str, Table] | None = None):
        super().__init__()
        self.tmp_dir = beam_path(tmp_dir)
        self.tables = {KEPT: parquet_table(fs.join(self.tmp_dir, "part"), kept_schema),
                       REJECTED: parquet_table(fs.join(self.tmp_dir, "rejects", "part"), rejects_schema),
                       **(extra or {})}

    def expand(self, outputs):
        {name: outputs[name] for name in self.tables} | "Tables" >> WriteTables(self.tmp_dir, self.tables)
        return outputs


def stage_outputs(outputs) -> dict[str, beam.PCollection]:
    """The kept and rejected PCollections of a `.with_outputs(KEPT, REJECTED)` result."""
    return {KEPT: outputs[KEPT], REJECTED: outputs[REJECTED]}


def run_pipeline(p: beam.Pipeline) -> None:
    result = p.run()
    result.wait_until_finish()


def check_graph(p: beam.Pipeline):
    """Do offline what Dataflow does to a pipeline before any worker starts; submit nothing.

    A broken graph on Dataflow otherwise shows up minutes into a paid job. This applies the
    runner's own graph rewrites (side inputs, combiners; GroupByKey inputs must be key-value
    pairs with deterministic key coders unless --allow_non_deterministic_key_coders), translates
    the pipeline to the portable proto that is sent to the service (every DoFn, CombineFn and
    coder is pickled there), loads each pickled function back the way a worker does, and
    checks that a --setup_file exists under the name Beam's stager accepts. It needs no Google
    Cloud libraries or credentials; the pipeline is changed by the rewrites, so it is not run
    afterwards. Returns the pipeline proto; raises on the first problem.
    """
    import os

    from apache_beam.internal import pickler
    from apache_beam.options.pipeline_options import SetupOptions, TypeOptions
    from apache_beam.portability import common_urns, python_urns
    from apache_beam.portability.api import beam_runner_api_pb2
    from apache_beam.runners.dataflow.dataflow_runner import DataflowRunner
    from apache_beam.runners.pipeline_utils import group_by_key_input_visitor
    from apache_beam.utils import proto_utils

    options = p.options
    setup_file = options.view_as(SetupOptions).setup_file
    if setup_file is not None:
        if not os.path.isfile(setup_file):
            raise RuntimeError(f"--setup_file {setup_file} does not exist")
        if os.path.basename(setup_file) not in ("setup.py", "pyproject.toml"):
            raise RuntimeError(f"--setup_file must name setup.py or pyproject.toml, not {setup_file}")
    deterministic = not options.view_as(TypeOptions).allow_non_deterministic_key_coders
    p.visit(DataflowRunner.combinefn_visitor())
    p.visit(DataflowRunner.side_input_visitor(deterministic_key_coders=deterministic))
    p.replace_all(DataflowRunner._PTRANSFORM_OVERRIDES)
    p.visit(group_by_key_input_visitor(deterministic))
    proto = p.to_runner_api()
    combines = {common_urns.composites.COMBINE_PER_KEY.urn, common_urns.composites.COMBINE_GLOBALLY.urn,
                common_urns.combine_components.COMBINE_PER_KEY_PRECOMBINE.urn,
                common_urns.combine_components.COMBINE_PER_KEY_MERGE_ACCUMULATORS.urn,
                common_urns.combine_components.COMBINE_PER_KEY_EXTRACT_OUTPUTS.urn}
    for name, transform in proto.components.transforms.items():
        spec = transform.spec
        if spec.urn == common_urns.primitives.PAR_DO.urn:
            fn = proto_utils.parse_Bytes(spec.payload, beam_runner_api_pb2.ParDoPayload).do_fn
        elif spec.urn in combines:
            fn = proto_utils.parse_Bytes(spec.payload, beam_runner_api_pb2.CombinePayload).combine_fn
        else:
            continue
        if fn.urn in (python_urns.PICKLED_DOFN_INFO, python_urns.PICKLED_COMBINE_FN):
            try:
                pickler.loads(fn.payload)
            except Exception as e:
                raise RuntimeError(f"step {transform.unique_name!r}: its function does not "
                                   f"unpickle on a worker: {type(e).__name__}: {e}") from e
    return proto



def counter_value(result, name: str) -> int:
    """The committed (else attempted) value of a Beam counter after the pipeline ran."""
    from apache_beam.metrics.metric import MetricsFilter
    counters = result.metrics().query(MetricsFilter().with_name(name))["counters"]
    return int(sum(c.committed if c.committed is not None else c.attempted for c in counters))


def read_json_lines(prefix: str) -> list[dict[str, Any]]:
    """Every record of the `WriteToText(prefix, file_name_suffix=".jsonl")` files of a pipeline
    (a stage's small side output, read back by the driver once the pipeline has run)."""
    records = []
    for path in fs.glob(prefix + "*.jsonl"):
        with fs.open_file(path, "r", encoding="utf-8") as f:
            records.extend(json.loads(line) for line in f if line.strip())
    return records
