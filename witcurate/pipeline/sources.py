"""Candidate sources: (url, caption) rows from Parquet, CSV/TSV, JSONL and Common Crawl WAT files.

Column names follow img2dataset's `url_col` / `caption_col` conventions. Each reader yields plain
dicts `{"url", "caption", "source"}`; a row without a usable url or caption still comes out
(with None) so the ingest stage can reject it with a reason instead of losing it.
"""

from __future__ import annotations

import gzip
import io
import json
from typing import Any, Iterator
from urllib.parse import urljoin

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from witcurate.errors import InputError
from witcurate.pipeline import fs

FORMATS = ("parquet", "csv", "tsv", "jsonl", "wat")


def detect_format(path: str) -> str:
    name = path.lower()
    for suffix in (".gz", ".bz2", ".zst"):
        if name.endswith(suffix) and not name.endswith(".wat.gz"):
            name = name[: -len(suffix)]
    if name.endswith(".wat.gz") or name.endswith(".wat"):
        return "wat"
    for fmt, exts in (("parquet", (".parquet",)), ("csv", (".csv",)), ("tsv", (".tsv",)),
                      ("jsonl", (".jsonl", ".json", ".ndjson"))):
        if name.endswith(exts):
            return fmt
    raise InputError(f"cannot tell the format of candidate source {path}",
                     f"name it with one of the extensions for {', '.join(FORMATS)}")


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):                 # CSV/TSV cells: bad UTF-8 becomes U+FFFD
        return value.decode("utf-8", errors="replace")
    return value if isinstance(value, str) else None


def _row(url: Any, caption: Any, source: str) -> dict[str, Any]:
    return {"url": _text(url), "caption": _text(caption), "source": source}


def _read_table_rows(table, url_col: str, caption_col: str, source: str) -> Iterator[dict]:
    names = table.column_names
    urls = table.column(url_col).to_pylist() if url_col in names else [None] * table.num_rows
    caps = table.column(caption_col).to_pylist() if caption_col in names else [None] * table.num_rows
    for url, cap in zip(urls, caps):
        yield _row(url, cap, source)


def read_parquet(path: str, url_col: str, caption_col: str) -> Iterator[dict]:
    with fs.open_file(path) as f:
        pf = pq.ParquetFile(f)
        cols = [c for c in (url_col, caption_col) if c in pf.schema_arrow.names]
        for batch in pf.iter_batches(columns=cols, batch_size=65536):
            yield from _read_table_rows(batch, url_col, caption_col, path)


def read_delimited(path: str, url_col: str, caption_col: str, delimiter: str) -> Iterator[dict]:
    malformed: list[str] = []                    # rows with the wrong number of fields

    def keep_aside(row) -> str:
        malformed.append(row.text)
        return "skip"

    with fs.open_file(path, compression="infer") as f:
        table = pacsv.read_csv(
            f, parse_options=pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True,
                                                invalid_row_handler=keep_aside),
            # read as bytes: one invalid UTF-8 byte must cost one cell (replaced), not the file
            convert_options=pacsv.ConvertOptions(column_types={url_col: pa.binary(), caption_col: pa.binary()}))
    yield from _read_table_rows(table, url_col, caption_col, path)
    for text in malformed:
        yield {"url": None, "caption": None, "source": path,
               "error": f"malformed_row: {text[:200]}"}


def read_jsonl(path: str, url_col: str, caption_col: str) -> Iterator[dict]:
    with fs.open_file(path, "rb", compression="infer") as f:
        for raw in f:
            line = raw.decode("utf-8", errors="replace").strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                yield {"url": None, "caption": None, "source": path, "error": "invalid_json"}
                continue
            if not isinstance(obj, dict):
                obj = {}
            yield _row(obj.get(url_col), obj.get(caption_col), path)


def _warc_records(stream: io.BufferedIOBase) -> Iterator[tuple[dict[str, str], bytes]]:
    """(headers, body) of each WARC record in an (uncompressed) stream."""
    while True:
        line = stream.readline()
        if not line:
            return
        if not line.strip():
            continue
        if not line.startswith(b"WARC/"):
            raise ValueError(f"not a WARC record header: {line[:40]!r}")
        headers: dict[str, str] = {}
        while True:
            h = stream.readline()
            if not h or not h.strip():
                break
            key, _, value = h.decode("utf-8", errors="replace").partition(":")
            headers[key.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        yield headers, stream.read(length)


def wat_links(payload: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(absolute image url, alt text) of every <img> with alt text in one WAT metadata record."""
    env = payload.get("Envelope", {})
    base = env.get("WARC-Header-Metadata", {}).get("WARC-Target-URI", "")
    html_meta = (env.get("Payload-Metadata", {}).get("HTTP-Response-Metadata", {})
                 .get("HTML-Metadata", {}))
    base = html_meta.get("Head", {}).get("Base") or base
    for link in html_meta.get("Links", []) or []:
        if link.get("path") == "IMG@/src" and link.get("url"):
            yield urljoin(base, link["url"]), link.get("alt", "")


def read_wat(path: str, url_col: str, caption_col: str) -> Iterator[dict]:
    with fs.open_file(path) as raw:
        stream = gzip.GzipFile(fileobj=raw) if path.endswith(".gz") else raw
        for headers, body in _warc_records(stream):
            if headers.get("warc-type") != "metadata":
                continue
            try:
                payload = json.loads(body)
            except json.JSONDecodeError:
                yield {"url": None, "caption": None, "source": path, "error": "invalid_wat_json"}
                continue
            for url, alt in wat_links(payload):
                yield _row(url, alt, path)


def read_source(path: str, url_col: str = "url", caption_col: str = "caption") -> Iterator[dict]:
    fmt = detect_format(path)
    if fmt == "parquet":
        return read_parquet(path, url_col, caption_col)
    if fmt in ("csv", "tsv"):
        return read_delimited(path, url_col, caption_col, "," if fmt == "csv" else "\t")
    if fmt == "jsonl":
        return read_jsonl(path, url_col, caption_col)
    return read_wat(path, url_col, caption_col)
