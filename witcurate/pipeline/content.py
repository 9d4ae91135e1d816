"""What a finished stage holds, by content: the digest that later stages' fingerprints use.

A stage's fingerprint names each input stage by this digest rather than by that stage's own
fingerprint, so rerunning an upstream stage that lands the same content (balance with another
`per_query` that keeps the same rows at the same probabilities) leaves the stages after it
skipped. The digest covers everything a later stage can read:

- the kept rows, as a multiset: the sum mod 2^64 of a 64-bit hash of each row (duckdb's `hash`
  over all its columns, in name order), so neither the number of parts nor the order of rows
  changes it. duckdb reads the parts itself, streaming, so no process holds all the rows;
- every other Parquet table the stage wrote (balance's query_counts.parquet, score's
  embeddings), the same way, one digest per directory of parts;
- every other file by its sha256 (queries.json, the shards' tars and sizes.json, a model's
  weights);

except the files the stage declares in `content_skips`: files no stage reads (the dataset card)
or whose content the kept rows already fix (download's image tars: each kept row names its
image's tar and key and carries the sha256 of its bytes). Rejects are left out: no stage reads
another's rejects except the shards stage's dataset card, which reruns through `reports_on`.

A changed duckdb `hash` (a new duckdb) changes every digest once: later stages rerun, none is
skipped wrongly.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import json
import os
import posixpath
import threading
import time
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from witcurate.pipeline import fs
from witcurate.pipeline.tables import open_parquet

MANIFEST = "_SUCCESS.json"           # a finished stage's manifest (the runner writes it)
SCHEME = "rowsum-v1"                 # changes when the way rows are digested changes
BATCH_ROWS = 65_536                  # rows per batch when a part is streamed through pyarrow
CHUNK_BYTES = 1 << 20


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _is_local(path: str) -> bool:
    return "://" not in path and not any(c in path for c in "*?[")


def _duckdb_type(t: pa.DataType) -> pa.DataType:
    """`t` with float16 (which duckdb's Arrow scan refuses; its Parquet reader reads it as float32,
    score's embeddings are float16) as float32, so both paths hash the same values."""
    if pa.types.is_float16(t):
        return pa.float32()
    if pa.types.is_list(t):
        return pa.list_(_duckdb_type(t.value_type))
    if pa.types.is_large_list(t):
        return pa.large_list(_duckdb_type(t.value_type))
    if pa.types.is_fixed_size_list(t):
        return pa.list_(_duckdb_type(t.value_type), t.list_size)
    if pa.types.is_struct(t):
        return pa.struct([f.with_type(_duckdb_type(f.type)) for f in t])
    return t


_connection: tuple[int, Any] | None = None      # (the process it was made in, the connection)
_connection_lock = threading.Lock()


@contextlib.contextmanager
def _duckdb() -> Iterator[Any]:
    """The process's one in-memory duckdb connection, for one caller at a time. Connecting costs
    about 45 ms, a tenth of a small stage's whole run, and a stage digests two or three tables.
    A forked child makes its own (a connection's threads do not cross a fork)."""
    global _connection
    import duckdb

    with _connection_lock:
        if _connection is None or _connection[0] != os.getpid():
            _connection = (os.getpid(), duckdb.connect())
        yield _connection[1]


def _part_digest(con, path: str) -> tuple[int, int, str]:
    """(rows, sum of row hashes mod 2^64, schema) of one Parquet file."""
    schema = open_parquet(path, footer_only=True).schema.to_arrow_schema()
    if not schema.names:
        return 0, 0, ""
    columns = ", ".join(_quote(n) for n in sorted(schema.names))
    select = f"SELECT count(*), sum(hash({columns})) FROM "
    if _is_local(path):                 # duckdb reads the file itself: the fast path
        (rows, total), = con.execute(select + "read_parquet('" + path.replace("'", "''") + "')").fetchall()
    else:                               # gs://, memory://, ...: stream it through fsspec
        scannable = pa.schema([f.with_type(_duckdb_type(f.type)) for f in schema])
        with fs.open_file(path) as f:
            batches = pq.ParquetFile(f).iter_batches(batch_size=BATCH_ROWS)
            reader = pa.RecordBatchReader.from_batches(scannable, (b.cast(scannable) for b in batches))
            con.register("part_batches", reader)
            try:
                (rows, total), = con.execute(select + "part_batches").fetchall()
            finally:
                con.unregister("part_batches")
    text = ",".join(f"{f.name}:{f.type}" for f in sorted(schema, key=lambda f: f.name))
    return int(rows), int(total or 0) % 2**64, text


def table_digest(files: list[str]) -> dict[str, Any]:
    """The rows of these Parquet files as a multiset: {"rows": n, "digest": hex}.

    The same whatever the number of files, their order and the order of rows in them.
    """
    rows, total, schemas = 0, 0, set()
    with _duckdb() as con:
        for path in files:
            n, s, schema = _part_digest(con, path)
            rows, total = rows + n, (total + s) % 2**64
            if n:
                schemas.add(schema)
    payload = json.dumps({"scheme": SCHEME, "rows": rows, "sum": total, "schemas": sorted(schemas)})
    return {"rows": rows, "digest": hashlib.sha256(payload.encode()).hexdigest()[:32]}


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with fs.open_file(path) as f:
        while chunk := f.read(CHUNK_BYTES):
            h.update(chunk)
    return h.hexdigest()


def side_entries(files: list[str], skips: tuple[str, ...]) -> dict[str, list[str]]:
    """{entry: relative paths} for the files a digest covers besides the kept rows: each
    directory's Parquet parts together as `DIR/*.parquet`, every other file on its own."""
    entries: dict[str, list[str]] = {}
    for rel in files:
        if any(fnmatch.fnmatch(rel, pattern) for pattern in skips):
            continue
        if rel.endswith(".parquet"):
            entries.setdefault(posixpath.join(posixpath.dirname(rel), "*.parquet"), []).append(rel)
        else:
            entries[rel] = [rel]
    return entries


def entry_for(rel: str) -> str:
    """The entry of a content record that covers the file at `rel` (see side_entries)."""
    return posixpath.join(posixpath.dirname(rel), "*.parquet") if rel.endswith(".parquet") else rel


def stage_content(stage_dir: str, kept_glob: str | None, skips: tuple[str, ...] = ()) -> dict[str, Any]:
    """The content record of a stage directory: its kept rows (None for a model stage) and every
    other file it holds but its manifest, rejects and `skips`; `hash` digests all of them."""
    start = time.time()
    files = [rel for rel in fs.files_under(stage_dir)
             if rel != MANIFEST and not rel.startswith("rejects/")]
    kept = [rel for rel in files if kept_glob and "/" not in rel and fnmatch.fnmatch(rel, kept_glob)]
    record: dict[str, Any] = {"scheme": SCHEME}
    if kept_glob:
        record["kept"] = table_digest([fs.join(stage_dir, rel) for rel in kept])
    record["files"] = {}
    for entry, rels in side_entries([rel for rel in files if rel not in kept], skips).items():
        if entry.endswith("*.parquet"):
            t = table_digest([fs.join(stage_dir, rel) for rel in rels])
            record["files"][entry] = f"rows:{t['rows']}:{t['digest']}"
        else:
            record["files"][entry] = "sha256:" + file_sha256(fs.join(stage_dir, entry))
    record["skips"] = list(skips)
    payload = json.dumps({k: record.get(k) for k in ("scheme", "kept", "files", "skips")}, sort_keys=True)
    record["hash"] = hashlib.sha256(payload.encode()).hexdigest()[:32]
    record["seconds"] = round(time.time() - start, 3)
    return record
