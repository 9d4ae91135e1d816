"""The records of one WARC or WAT file, read through fastwarc, with the damage a real file carries named.

fastwarc reads gzip-per-record, zstd and plain files alike. Where the file is damaged it does one
of two things, and both become facts here instead of lost data:

- the file ends inside a record (a cut download, or a Content-Length that reaches past the end):
  fastwarc hands back the bytes that are there and stops quietly. `Record.cut_at` says how many
  of the promised bytes were missing.
- a record header or a gzip member is unreadable (garbage, a Content-Length that stops short of
  the real record): fastwarc raises. Reading stops there and one `Damage` names where; the
  records before it keep their rows. When not even the first record can be read the file is not
  a WARC file at all, and `NotAWarcFile` lets the ingest stage make it one `source_unreadable`.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Iterator

from fastwarc import ArchiveIterator, WarcRecordType
from fastwarc.stream_io import BrotliReader, ChunkedReader, GzipReader

from witcurate.pipeline import fs

# The most of one record's payload that is read. Common Crawl truncates payloads at 1 MiB; a
# payload past this cap (from another crawler, or a lying Content-Length) is read up to the cap
# and the rest is skipped, so one record can never hold a worker's memory.
MAX_PAYLOAD_BYTES = 16 << 20


class NotAWarcFile(ValueError):
    """The first record of the file is unreadable: the file is not WARC (or its start is damaged)."""


@dataclass
class Record:
    """One record's headers and payload (the HTTP body for a response, the JSON for a WAT record)."""
    record_type: WarcRecordType
    target_uri: str | None
    truncated: str | None          # WARC-Truncated: the crawler's reason for storing a prefix only
    payload: bytes
    promised: int                  # payload bytes the record's Content-Length promises
    skipped: int                   # bytes past MAX_PAYLOAD_BYTES, not read
    content_type: str | None       # HTTP Content-Type media type (responses only)
    charset: str | None            # HTTP Content-Type charset (responses only)
    status: int | None             # HTTP status (responses only)
    codings: tuple[str, ...] = ()  # HTTP transfer and content codings still on the payload, in order

    @property
    def cut_at(self) -> int | None:
        """Bytes actually present when the file ends inside this record, else None."""
        present = len(self.payload) + self.skipped
        return present if present < self.promised else None


@dataclass
class Damage:
    """Where reading stopped: the rest of the file is lost, and this says so as one reject."""
    reason: str
    detail: str


def _target_uri(value: str | None) -> str | None:
    # WARC/1.0 wrote the target URI in angle brackets; some writers still do.
    return value.strip().strip("<>").strip() if value else None


def _codings(record) -> tuple[str, ...]:
    """The codings to undo on a response payload: chunked transfer first, then content codings."""
    if not record.is_http:
        return ()
    headers = record.http_headers
    found = []
    for name in ("Transfer-Encoding", "Content-Encoding"):
        for value in headers.get_multiple(name):
            found += [c.strip().lower() for c in value.split(",") if c.strip()]
    return tuple(c for c in found if c not in ("identity", ""))


def _read(record) -> Record:
    payload = record.reader.read(MAX_PAYLOAD_BYTES)
    skipped = record.reader.consume() if len(payload) == MAX_PAYLOAD_BYTES else 0
    http = record.is_http and record.record_type == WarcRecordType.response
    headers = record.headers
    return Record(record_type=record.record_type,
                  target_uri=_target_uri(headers.get("WARC-Target-URI")),
                  truncated=headers.get("WARC-Truncated"),
                  payload=payload, promised=record.content_length, skipped=skipped,
                  content_type=record.http_content_type if http else None,
                  charset=record.http_charset if http else None,
                  status=record.http_headers.status_code if http else None,
                  codings=_codings(record) if http else ())


def read_records(path: str, record_types: WarcRecordType, parse_http: bool) -> Iterator[Record | Damage]:
    """Every record of `record_types` in the file, then a `Damage` where reading had to stop."""
    with fs.open_file(path) as raw:
        records = iter(ArchiveIterator(raw, parse_http=parse_http))
        seen = 0                    # records of any type read so far
        last_uri = None
        while True:
            try:
                record = next(records)
                seen += 1
                if not record.record_type & record_types:
                    continue
                last_uri = _target_uri(record.headers.get("WARC-Target-URI"))
                yield _read(record)
            except StopIteration:
                return
            except (OSError, ValueError) as e:
                if seen == 0:
                    raise NotAWarcFile(f"not a WARC file: {e}") from e
                where = f"after record {seen}" + (f" ({last_uri})" if last_uri else "")
                yield Damage("warc_read_error", f"{where}: {e}; the rest of the file was not read")
                return


_DECODERS = {"chunked": ChunkedReader, "gzip": GzipReader, "x-gzip": GzipReader, "br": BrotliReader}


def _already_decoded(payload: bytes) -> bool:
    """True when the payload reads as markup: a crawler stored it decoded and kept the coding header."""
    return payload.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] == b"<"


def undo_codings(payload: bytes, codings: tuple[str, ...]) -> bytes:
    """The payload with its HTTP codings undone (fastwarc's stream readers); ValueError if one fails.

    Common Crawl now stores payloads decoded and renames the headers (X-Crawler-Content-Encoding);
    its 2014 crawls stored them decoded but kept `Content-Encoding: gzip`, and other crawlers
    (Heritrix) store the bytes as the server sent them. So a coding that fails on a payload that
    already reads as markup is taken as undone already.
    """
    for coding in codings:
        if coding == "deflate":
            reader = GzipReader(io.BytesIO(payload), zlib=True)
        elif coding in _DECODERS:
            reader = _DECODERS[coding](io.BytesIO(payload))
        elif _already_decoded(payload):
            continue
        else:
            raise ValueError(f"unknown HTTP coding {coding!r}")
        try:
            payload = reader.read()
        except OSError as e:
            if not _already_decoded(payload):
                raise ValueError(f"{coding}: {e}") from e
    return payload
