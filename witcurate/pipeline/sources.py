"""Candidate sources: (url, caption) rows from Parquet, CSV/TSV, JSONL and Common Crawl WAT and WARC files.

Column names follow img2dataset's `url_col` / `caption_col` conventions. Each reader yields plain
dicts `{"url", "caption", "source"}`; a row without a usable url or caption still comes out
(with None) so the ingest stage can reject it with a reason instead of losing it. WAT and WARC
rows (sources_warc) also carry the `page_url` the image was found on.
"""

from __future__ import annotations

import json
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from witcurate.errors import InputError
from witcurate.pipeline import fs
from witcurate.pipeline.sources_warc import read_warc, read_wat

FORMATS = ("parquet", "csv", "tsv", "jsonl", "wat", "warc")
_COMPRESSIONS = (".gz", ".bz2", ".zst", ".lz4")


def detect_format(path: str) -> str:
    name = path.lower()
    for suffix in _COMPRESSIONS:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    for fmt, exts in (("wat", (".wat",)), ("warc", (".warc",)), ("parquet", (".parquet",)),
                      ("csv", (".csv",)), ("tsv", (".tsv",)), ("jsonl", (".jsonl", ".json", ".ndjson"))):
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


def read_source(path: str, url_col: str = "url", caption_col: str = "caption") -> Iterator[dict]:
    fmt = detect_format(path)
    if fmt == "parquet":
        return read_parquet(path, url_col, caption_col)
    if fmt in ("csv", "tsv"):
        return read_delimited(path, url_col, caption_col, "," if fmt == "csv" else "\t")
    if fmt == "jsonl":
        return read_jsonl(path, url_col, caption_col)
    if fmt == "warc":
        return read_warc(path, url_col, caption_col)
    return read_wat(path, url_col, caption_col)
