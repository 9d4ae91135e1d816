"""The demo pool as a crawl would deliver it: part of the candidates as HTML pages in a WARC file,
part as the WAT metadata of such pages, the rest as a listed table.

    pool/sources/listed.parquet           url, caption: the candidates not in a crawl file
    pool/sources/crawl-00000.warc.gz      HTML responses, each page a few <img src alt> of one host
    pool/sources/crawl-00000.warc.wat.gz  WAT metadata records: each page's IMG@/src links and alts

Together they hold every pool candidate exactly once (pool/candidates.parquet still lists them
all, for tools that want the pool as one table). Records are written with fastwarc's own writer,
one gzip member per record as Common Crawl does, with fixed dates and record ids, so the same
world gives the same bytes. A page's `src` is the image's path, resolved against the page's URL
by the reader, as on most sites; a row whose URL or caption would not survive that trip (an
attribute cannot hold a NUL or a bare CR) stays in the listed table.
"""

from __future__ import annotations

import gzip
import html
import io
import json
import os
import uuid
from typing import Sequence
from urllib.parse import urljoin, urlsplit

import pyarrow as pa
import pyarrow.parquet as pq
from fastwarc.warc import WarcRecord, WarcRecordType

SOURCES_DIR = "sources"
LISTED = "listed.parquet"
WARC = "crawl-00000.warc.gz"
WAT = "crawl-00000.warc.wat.gz"
IMAGES_PER_PAGE = 10
CRAWL_DATE = "2026-01-05T12:00:00Z"
_SHARE = 4                 # every 4th candidate from 1 goes to the WARC, from 2 to the WAT


def _travels(url: str, caption: str) -> bool:
    """Whether a pair comes back unchanged through an HTML attribute and a page-relative src."""
    parts = urlsplit(url)
    return (parts.scheme == "http" and bool(parts.netloc) and not parts.query and not parts.fragment
            and urljoin(f"http://{parts.netloc}/pages/x.html", parts.path) == url
            and not any(c in caption for c in "\x00\r") and caption.strip() == caption and caption != ""
            and all(c.isprintable() for c in caption))


def split_pool(urls: Sequence[str], captions: Sequence[str]) -> dict[str, list[int]]:
    """Indices of the pool for each of the three sources."""
    out: dict[str, list[int]] = {"listed": [], "warc": [], "wat": []}
    for i, (url, caption) in enumerate(zip(urls, captions)):
        part = {1: "warc", 2: "wat"}.get(i % _SHARE, "listed") if _travels(url, caption) else "listed"
        out[part].append(i)
    return out


def _pages(urls: Sequence[str], captions: Sequence[str], indices: list[int], tag: str) -> list[dict]:
    """Pages of up to IMAGES_PER_PAGE images, each page on the host its images are on."""
    by_host: dict[str, list[int]] = {}
    for i in indices:
        by_host.setdefault(urlsplit(urls[i]).netloc, []).append(i)
    pages = []
    for host, members in sorted(by_host.items()):
        for start in range(0, len(members), IMAGES_PER_PAGE):
            chunk = members[start:start + IMAGES_PER_PAGE]
            pages.append({"url": f"http://{host}/pages/{tag}-{chunk[0]:06d}.html",
                          "images": [(urlsplit(urls[i]).path, captions[i]) for i in chunk]})
    return pages


def _page_html(page: dict) -> bytes:
    figures = "\n".join(f'<figure><img src="{html.escape(src)}" alt="{html.escape(alt)}" loading="lazy">'
                        f"<figcaption>{html.escape(alt)}</figcaption></figure>" for src, alt in page["images"])
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Gallery</title></head>\n"
            f"<body><h1>Gallery</h1>\n{figures}\n</body></html>\n").encode("utf-8")


def warc_record(kind: WarcRecordType, target: str, content_type: str, body: bytes, n: int,
                date: str = CRAWL_DATE) -> bytes:
    """WARC record number n, gzipped on its own as Common Crawl writes them (fixed id, date and
    gzip mtime: the same bytes every time). The ingest benchmark writes its files with it too."""
    record = WarcRecord()
    record.init_headers(kind, record_urn=f"uuid:{uuid.UUID(int=n)}".encode())
    record.headers["WARC-Date"] = date
    record.headers.append("WARC-Target-URI", target)
    record.headers["Content-Type"] = content_type
    record.set_bytes_content(body)
    buf = io.BytesIO()
    record.write(buf)
    return gzip.compress(buf.getvalue(), compresslevel=6, mtime=0)


def _http_response(body: bytes) -> bytes:
    return (b"HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


def _wat_payload(page: dict, body: bytes) -> bytes:
    """The WAT JSON Common Crawl writes for a response: its envelope and the page's links."""
    links = [{"path": "IMG@/src", "url": src, "alt": alt} for src, alt in page["images"]]
    envelope = {
        "Format": "WARC",
        "WARC-Header-Length": "0",
        "Block-Digest": "",
        "Actual-Content-Length": str(len(body)),
        "WARC-Header-Metadata": {"WARC-Type": "response", "WARC-Date": CRAWL_DATE,
                                 "WARC-Target-URI": page["url"]},
        "Payload-Metadata": {
            "Actual-Content-Type": "application/http; msgtype=response",
            "HTTP-Response-Metadata": {
                "Response-Message": {"Version": "HTTP/1.1", "Status": "200", "Reason": "OK"},
                "Headers": {"Content-Type": "text/html; charset=utf-8", "Content-Length": str(len(body))},
                "Entity-Length": str(len(body)),
                "HTML-Metadata": {"Head": {"Title": "Gallery"}, "Links": links}}}}
    return json.dumps({"Container": {"Filename": WARC, "Compressed": True}, "Envelope": envelope},
                      separators=(",", ":")).encode("utf-8")


def write_sources(pool_dir: str, urls: Sequence[str], captions: Sequence[str]) -> dict[str, int]:
    """pool_dir/sources/: the three files above; returns how many candidates each holds."""
    parts = split_pool(urls, captions)
    out = os.path.join(pool_dir, SOURCES_DIR)
    os.makedirs(out)
    listed = parts["listed"]
    pq.write_table(pa.table({"url": pa.array([urls[i] for i in listed], pa.string()),
                             "caption": pa.array([captions[i] for i in listed], pa.string())}),
                   os.path.join(out, LISTED))
    n = 0
    with open(os.path.join(out, WARC), "wb") as f:
        for page in _pages(urls, captions, parts["warc"], "w"):
            n += 1
            f.write(warc_record(WarcRecordType.response, page["url"], "application/http; msgtype=response",
                            _http_response(_page_html(page)), n))
    with open(os.path.join(out, WAT), "wb") as f:
        for page in _pages(urls, captions, parts["wat"], "m"):
            n += 1
            body = _page_html(page)
            f.write(warc_record(WarcRecordType.metadata, page["url"], "application/json",
                            _wat_payload(page, body), n))
    return {name: len(indices) for name, indices in parts.items()}


def source_globs(world_root: str) -> list[str]:
    """The ingest.sources entries that read the pool as these three files."""
    base = os.path.join(world_root, "pool", SOURCES_DIR)
    return [os.path.join(base, LISTED), os.path.join(base, "*.warc.gz"), os.path.join(base, "*.warc.wat.gz")]
