"""Every file output of a pipeline through one Beam sink.

Each of Beam's file sinks (WriteToParquet, WriteToText) adds its own initialise, write,
pre-finalise and finalise steps, with side inputs, to the graph, and on the local runner each
costs a fixed 0.2-0.25 s per pipeline run: more than a small stage's work, and 1.2 s for the
download stage's five outputs. `WriteTables` sends all of a pipeline's outputs through one
`iobase.Sink` that keeps the protocol of Beam's file sinks: each bundle writes temporary files
(one per table it saw), and the finalise step, run once with the results of the bundles the
runner committed, renames them to PREFIX-SSSSS-of-NNNNN SUFFIX. A retried bundle's files are
never renamed, so each row lands once, on Dataflow as locally, and a retried finalise skips
what it already renamed.

A table is parquet (elements are row dicts or Arrow tables of its schema; row groups as
WriteToParquet cuts them, so the files do not change) or JSON lines (elements are str). A table
nothing was written to gets one empty file, as Beam's sinks give it.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io import iobase
from apache_beam.io.filesystem import BeamIOError
from apache_beam.io.filesystems import FileSystems

_LOG = logging.getLogger(__name__)

RECORD_BATCH_ROWS = 1000                 # rows per Arrow record batch (WriteToParquet's default)
ROW_GROUP_BYTES = 64 * 1024 * 1024       # a row group is written once this much is buffered (same)
# WriteToParquet's defaults, so files written here equal those it wrote.
PARQUET_DEFAULTS = {"compression": "none", "use_compliant_nested_type": False}


@dataclass(frozen=True)
class Table:
    """One output: PREFIX-SSSSS-of-NNNNN SUFFIX files; parquet of `schema`, or JSON lines when
    `schema` is None."""
    prefix: str
    schema: pa.Schema | None = None
    suffix: str = ".parquet"
    writer_options: dict[str, Any] = field(default_factory=dict)

    def final_name(self, shard: int, shards: int) -> str:
        return f"{self.prefix}-{shard:05d}-of-{shards:05d}{self.suffix}"


def parquet_table(prefix: str, schema: pa.Schema, **writer_options: Any) -> Table:
    """A parquet table; `writer_options` go to pyarrow's ParquetWriter over WriteToParquet's
    defaults (no compression, Arrow's own list field names)."""
    return Table(prefix, schema, ".parquet", {**PARQUET_DEFAULTS, **writer_options})


def json_lines_table(prefix: str) -> Table:
    """One str element per line, as WriteToText(prefix, file_name_suffix=".jsonl") writes them."""
    return Table(prefix, None, ".jsonl")


class WriteTables(beam.PTransform):
    """`{name: PCollection}` -> every table's files, through one sink; returns the final paths.

    `tables` names each output's Table; temporary files live under `temp_root` (a directory on
    the same filesystem) until the finalise step renames them.
    """

    def __init__(self, temp_root: str, tables: dict[str, Table]):
        super().__init__()
        if not tables:
            raise ValueError("WriteTables needs at least one table")
        bad = [name for name in tables if not re.fullmatch(r"\w+", name)]
        if bad:       # a name is part of each temporary file's name
            raise ValueError(f"WriteTables: table names must be word characters only, not {bad}")
        prefixes = [t.prefix + t.suffix for t in tables.values()]
        if len(set(prefixes)) < len(prefixes):
            raise ValueError(f"WriteTables: two tables would write the same files: {sorted(prefixes)}")
        self.temp_root = temp_root
        self.tables = dict(tables)

    def expand(self, pcolls: dict[str, beam.PCollection]):
        missing = set(self.tables) ^ set(pcolls)
        if missing:
            raise ValueError(f"WriteTables: tables and inputs differ in {sorted(missing)}")
        tagged = [pcolls[name] | f"Tag{name.capitalize()}" >> beam.Map(_tag, name) for name in self.tables]
        return (tagged | "AllTables" >> beam.Flatten()
                | "Write" >> beam.io.Write(_TablesSink(self.temp_root, self.tables)))


def _tag(element: Any, name: str) -> tuple[str, Any]:
    return name, element


class _TablesSink(iobase.Sink):
    def __init__(self, temp_root: str, tables: dict[str, Table]):
        self.temp_root = temp_root
        self.tables = tables

    def initialize_write(self) -> str:
        for table in self.tables.values():          # local renames need the directories
            _mkdirs(FileSystems.split(table.prefix)[0])
        temp_dir = FileSystems.join(self.temp_root, f"beam-temp-tables-{uuid.uuid4().hex}")
        _mkdirs(temp_dir)
        return temp_dir

    def open_writer(self, init_result: str, uid: str) -> "_TablesWriter":
        return _TablesWriter(self.tables, FileSystems.join(init_result, uid))

    def pre_finalize(self, init_result, writer_results):
        return None

    def finalize_write(self, init_result: str, writer_results, pre_finalize_results) -> list[str]:
        written: dict[str, list[str]] = defaultdict(list)
        for result in writer_results:
            for name, path in result:
                written[name].append(path)
        finals = []
        for name, table in self.tables.items():
            temps = sorted(written[name]) or [_write_empty(table, FileSystems.join(init_result, f"empty.{name}"))]
            finals += _rename(temps, [table.final_name(i, len(temps)) for i in range(len(temps))])
        try:
            FileSystems.delete([init_result])
        except (IOError, BeamIOError):
            _LOG.info("could not delete the sink's temporary directory %s", init_result)
        return finals


class _TablesWriter(iobase.Writer):
    """One bundle's files: a temporary file per table the bundle wrote to, opened on its first
    element."""

    def __init__(self, tables: dict[str, Table], base: str):
        self.tables = tables
        self.base = base
        self.files: dict[str, _TableFile] = {}

    def write(self, value: tuple[str, Any]) -> None:
        name, element = value
        out = self.files.get(name)
        if out is None:
            out = self.files[name] = _TableFile(self.tables[name], f"{self.base}.{name}")
        out.write(element)

    def close(self) -> list[tuple[str, str]]:
        for out in self.files.values():
            out.close()
        return [(name, out.path) for name, out in self.files.items()]


class _TableFile:
    def __init__(self, table: Table, path: str):
        self.table = table
        self.path = path
        self.handle = FileSystems.create(path)
        self.parquet = None if table.schema is None else pq.ParquetWriter(self.handle, table.schema,
                                                                          **table.writer_options)
        self.rows: list[dict[str, Any]] = []
        self.batches: list[pa.RecordBatch] = []
        self.batch_bytes = 0

    def write(self, element: Any) -> None:
        if self.parquet is None:
            self.handle.write(element.encode("utf-8") + b"\n")
        elif isinstance(element, pa.Table):
            self._add(element.to_batches())
        else:
            self.rows.append(element)
            if len(self.rows) >= RECORD_BATCH_ROWS:
                self._add([_record_batch(self.rows, self.table.schema)])
                self.rows = []

    def _add(self, batches: list[pa.RecordBatch]) -> None:
        self.batches += batches
        self.batch_bytes += sum(b.nbytes for b in batches)
        if self.batch_bytes >= ROW_GROUP_BYTES:
            self._flush()

    def _flush(self) -> None:
        if self.batches:
            self.parquet.write_table(pa.Table.from_batches(self.batches, schema=self.table.schema))
        self.batches, self.batch_bytes = [], 0

    def close(self) -> None:
        if self.parquet is not None:
            if self.rows:
                self._add([_record_batch(self.rows, self.table.schema)])
                self.rows = []
            self._flush()
            self.parquet.close()
        self.handle.close()


def _record_batch(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.RecordBatch:
    """Rows as one record batch, column by column as WriteToParquet converts them: a missing
    nullable field is null, a missing required one a KeyError."""
    columns = []
    for f in schema:
        values = [row.get(f.name) for row in rows] if f.nullable else [row[f.name] for row in rows]
        columns.append(pa.array(values, type=f.type))
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def _write_empty(table: Table, path: str) -> str:
    _TableFile(table, path).close()
    return path


def _rename(temps: list[str], finals: list[str]) -> list[str]:
    """Rename temps[i] to finals[i]; a pair already renamed by an earlier try is skipped."""
    todo = [(src, dst) for src, dst in zip(temps, finals) if _needs_rename(src, dst)]
    if todo:
        FileSystems.rename([s for s, _ in todo], [d for _, d in todo])
    return finals


def _needs_rename(src: str, dst: str) -> bool:
    if FileSystems.exists(src):
        return True
    if FileSystems.exists(dst):
        return False
    raise BeamIOError(f"neither the temporary file {src} nor its final name {dst} exists")


def _mkdirs(path: str) -> None:
    if not FileSystems.exists(path):
        try:
            FileSystems.mkdirs(path)
        except (IOError, BeamIOError):        # made meanwhile, by another worker
            if not FileSystems.exists(path):
                raise
