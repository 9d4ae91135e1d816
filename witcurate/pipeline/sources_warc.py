"""Candidate rows from Common Crawl files: WAT metadata (`*.wat[.gz]`) and WARC HTML responses (`*.warc[.gz]`).

Every `<img>` becomes one row `{"url", "caption", "source", "page_url"}`; one without alt text
still comes out (caption "") so the ingest stage rejects it as `caption_empty` instead of losing
it. What cannot become candidates is one row with an "error" (`reason: detail`), which ingest
turns into a reject:

- `warc_truncated`: the crawler stored only a prefix of the page (`WARC-Truncated`). The images
  in that prefix still count: HTML parsers drop a tag cut by the end of the input, so every
  `<img>` that comes out is whole, with the src and alt the server sent. The reject records
  that the rest of the page, and any images in it, are missing.
- `warc_record_cut`: the file ends inside the record (a cut download, or a Content-Length past
  the end). The record yields no images: unlike a crawler's truncation, nothing says its bytes
  are one page (a lying length swallows the records after it, and their pages' images would be
  credited to this one). It is at most one record per file.
- `warc_read_error`: a damaged record header or gzip member; reading stops there.
- `warc_not_html`: a response that is not HTML (PDF, image, redirect without a body, ...).
- `http_decode_error`: a payload whose HTTP content coding (gzip, br, chunked) is broken.
- `record_too_large`: a payload over warc_records.MAX_PAYLOAD_BYTES; an HTML page's first part
  still yields its images.
- `invalid_wat_json`: a WAT record whose JSON does not parse or has an unexpected shape.

A file whose first record cannot be read raises, and ingest makes it one `source_unreadable`.
"""

from __future__ import annotations

import json
from typing import Any, Iterator

from fastwarc import WarcRecordType

from witcurate.pipeline.html_images import decode_html, page_images
from witcurate.pipeline.url_base import Resolver, resolve_base
from witcurate.pipeline.warc_records import Damage, Record, read_records, undo_codings

HTML_TYPES = ("text/html", "application/xhtml+xml")


def _row(url: str | None, caption: str | None, source: str, page_url: str | None) -> dict[str, Any]:
    return {"url": url, "caption": caption, "source": source, "page_url": page_url}


def _error(source: str, page_url: str | None, reason: str, detail: str) -> dict[str, Any]:
    return {**_row(None, None, source, page_url), "error": f"{reason}: {detail}"}


def _loss(record: Record, what: str) -> tuple[str, str] | None:
    """The reason and detail for the part of a record that was not read, or None when it is whole."""
    if record.cut_at is not None:
        return "warc_record_cut", (f"the file ends after {record.cut_at:,} of the {record.promised:,} "
                                   f"{what} bytes the record promises")
    if record.skipped:
        return "record_too_large", (f"{record.promised:,} {what} bytes; read the first "
                                    f"{len(record.payload):,}")
    if record.truncated:
        return "warc_truncated", (f"WARC-Truncated: {record.truncated}; the crawler kept the first "
                                  f"{len(record.payload):,} {what} bytes")
    return None


# ---- WAT ---------------------------------------------------------------------------------------

def wat_image_rows(payload: dict[str, Any], source: str, page_url: str | None) -> list[dict[str, Any]]:
    """A row for every IMG link in one WAT metadata record, its URL made absolute."""
    html_meta = ((payload["Envelope"].get("Payload-Metadata") or {}).get("HTTP-Response-Metadata")
                 or {}).get("HTML-Metadata") or {}
    imgs = [link for link in html_meta.get("Links") or () if link.get("path") == "IMG@/src" and link.get("url")]
    if not imgs:
        return []
    resolver = Resolver(resolve_base((html_meta.get("Head") or {}).get("Base"), page_url or ""))
    urls = resolver.all([link["url"] for link in imgs])
    # an alt that is not a string (a damaged record) counts as none: caption_empty, not a crash
    return [{"url": url, "caption": alt if (alt := link.get("alt")).__class__ is str else "", "source": source,
             "page_url": page_url} for url, link in zip(urls, imgs)]


def _wat_record_rows(record: Record, source: str) -> list[dict[str, Any]]:
    loss = _loss(record, "JSON")
    if loss and loss[0] != "warc_truncated":
        return [_error(source, record.target_uri, *loss)]
    try:
        payload = json.loads(record.payload)
        page_url = payload["Envelope"]["WARC-Header-Metadata"].get("WARC-Target-URI") or record.target_uri
        return wat_image_rows(payload, source, page_url) + _wat_response_rejects(payload, source, page_url)
    except (ValueError, TypeError, KeyError, AttributeError) as e:   # UnicodeDecodeError is a ValueError
        return [_error(source, record.target_uri, "invalid_wat_json", f"{type(e).__name__}: {str(e)[:160]}")]


def _wat_response_rejects(payload: dict[str, Any], source: str, page_url: str | None) -> list[dict]:
    """The rejects a WARC response yields, from its WAT record: the same crawl reads the same either way."""
    env = payload["Envelope"]
    response = (env.get("Payload-Metadata") or {}).get("HTTP-Response-Metadata")
    if not isinstance(response, dict):
        return []                           # a request or metadata record's WAT: nothing to say
    if "HTML-Metadata" not in response:
        content_type = (response.get("Headers") or {}).get("Content-Type") or "no content type"
        return [_error(source, page_url, "warc_not_html", f"{content_type}")]
    truncated = (env.get("WARC-Header-Metadata") or {}).get("WARC-Truncated")
    if truncated:
        return [_error(source, page_url, "warc_truncated",
                       f"WARC-Truncated: {truncated}; links from the part the crawler kept")]
    return []


def _rows_of_records(path: str, record_type: WarcRecordType, parse_http: bool, rows_of) -> Iterator[dict]:
    """Rows of one file's records of `record_type`: `rows_of(record, path)` for each readable one,
    an error row for each stretch the reader could not read."""
    for item in read_records(path, record_type, parse_http=parse_http):
        if isinstance(item, Damage):
            yield _error(path, None, item.reason, item.detail)
        else:
            yield from rows_of(item, path)


def read_wat(path: str, url_col: str = "url", caption_col: str = "caption") -> Iterator[dict]:
    """Rows of a WAT file (`url_col`/`caption_col` do not apply: a WAT's columns are fixed)."""
    return _rows_of_records(path, WarcRecordType.metadata, False, _wat_record_rows)


# ---- WARC HTML responses -----------------------------------------------------------------------

def _not_html(record: Record) -> str | None:
    """Why a response is not an HTML page, or None when it is."""
    if record.content_type in HTML_TYPES:
        return None
    status = f"HTTP {record.status}" if record.status is not None else "no HTTP status"
    return f"{record.content_type or 'no content type'}, {status}, {len(record.payload):,} bytes"


def _warc_record_rows(record: Record, source: str) -> Iterator[dict[str, Any]]:
    page_url = record.target_uri
    why = _not_html(record)
    if why:
        yield _error(source, page_url, "warc_not_html", why)
        return
    body = record.payload
    if record.codings:
        try:
            body = undo_codings(body, record.codings)
        except ValueError as e:
            yield _error(source, page_url, "http_decode_error", str(e)[:200])
            return
    loss = _loss(record, "HTML")
    if not loss or loss[0] != "warc_record_cut":
        html, _ = decode_html(body, record.charset)
        for url, alt in page_images(html, page_url or ""):
            yield _row(url, alt, source, page_url)
    if loss:
        yield _error(source, page_url, *loss)


def read_warc(path: str, url_col: str = "url", caption_col: str = "caption") -> Iterator[dict]:
    """Rows of a WARC file's HTML responses (`url_col`/`caption_col` do not apply)."""
    return _rows_of_records(path, WarcRecordType.response, True, _warc_record_rows)
