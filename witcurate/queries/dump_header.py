"""The header of a MediaWiki XML export: `<mediawiki>` and `<siteinfo>`, and the dump's layout.

The header names the export namespace (schema 0.10, 0.11, ...), which the readers of later
streams need because their fragments carry no root element, and the site's namespaces. For a
bz2 file it also tells the two layouts apart: a multistream dump's first stream ends right
after `</siteinfo>` (`header_end`), a plain bz2 dump's first stream is the whole file.
Decompression stops as soon as either is known.
"""

from __future__ import annotations

import bz2
import contextlib
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from witcurate.errors import InputError
from witcurate.pipeline import fs
from witcurate.queries.bz2_streams import compression_of, plain_chunks

HEADER_PROBE_BYTES = 16 << 20         # how far to look for the end of a separate header stream
_HEADER_READ = 64 << 10               # compressed bytes read at a time while probing


@dataclass
class DumpInfo:
    """What the header says about a dump, and how its bytes are laid out."""
    path: str
    xmlns: str                         # e.g. http://www.mediawiki.org/xml/export-0.10/
    version: str                       # export schema version, e.g. "0.10"
    sitename: str = ""
    dbname: str = ""
    namespaces: dict[int, str] = field(default_factory=dict)
    size: int = 0
    compression: str = "bz2"           # bz2 | gzip | xz | none
    header_end: int | None = None      # end of a header-only first stream (multistream layout)
    index: str | None = None           # the multistream index used to split, if any

    @property
    def multistream(self) -> bool:
        return self.header_end is not None


def read_header(path: str) -> DumpInfo:
    """Parse `<mediawiki>` and `<siteinfo>`; for bz2, also find whether stream 0 is header-only."""
    if not fs.exists(path):
        raise InputError(f"dump file not found: {path}", "check queries.dumps / --dump")
    size = fs.size_and_mtime(path)[0]
    comp = compression_of(path)
    reader = _HeaderReader(DumpInfo(path=path, xmlns="", version="", size=size, compression=comp))
    if comp != "bz2":
        _read_plain(path, reader)
    else:
        _read_bz2(path, size, reader)
    info = reader.info
    if not info.xmlns and not info.version:
        raise InputError(f"{path}: no <mediawiki> root element found",
                         "pass a MediaWiki XML export (*-pages-articles*.xml.bz2)")
    return info


def _read_plain(path: str, reader: "_HeaderReader") -> None:
    with contextlib.closing(plain_chunks(path)) as chunks:
        for chunk in chunks:
            reader.feed(chunk)
            if reader.siteinfo_done or reader.saw_page:
                break


def _read_bz2(path: str, size: int, reader: "_HeaderReader") -> None:
    """Decompress the first stream until the header is read; note where a header-only stream ends."""
    with fs.open_file(path) as f:
        head = f.read(4)
        if not head.startswith(b"BZh"):
            raise InputError(f"{path}: not a bz2 file (starts with {head!r})",
                             "pass the .bz2 dump as downloaded, or decompress it to .xml")
        f.seek(0)
        dec = bz2.BZ2Decompressor()
        pos = 0
        while pos < HEADER_PROBE_BYTES:
            chunk = f.read(_HEADER_READ)
            if not chunk:
                break
            pos += len(chunk)
            try:
                out = dec.decompress(chunk)
            except OSError as e:
                raise InputError(f"{path}: corrupt bz2 data at the start of the file: {e}",
                                 "re-download the dump and check its checksum") from None
            if out:
                reader.feed(out)
            if dec.eof:
                if not reader.saw_page:
                    reader.info.header_end = pos - len(dec.unused_data)
                break
            if reader.saw_page:
                break
        if not dec.eof and not reader.saw_page and pos >= size:
            raise InputError(f"{path}: truncated bz2 stream at byte 0 (the file ends at byte {pos})",
                             "the download was cut short: re-download the dump")


class _HeaderReader:
    """Feeds XML bytes to a pull parser and fills a DumpInfo from the root and `<siteinfo>`."""

    def __init__(self, info: DumpInfo):
        self.info = info
        self.parser = ET.XMLPullParser(events=("start", "end", "start-ns"))
        self.depth = 0
        self.siteinfo_done = False
        self.saw_page = False

    def feed(self, chunk: bytes) -> None:
        try:
            self.parser.feed(chunk)
            self._events()
        except ET.ParseError as e:
            path = self.info.path
            if self.siteinfo_done:
                raise InputError(f"{path}: malformed XML: {e}",
                                 "re-download the dump; a hand-edited file must stay well-formed") from None
            raise InputError(f"{path}: not a MediaWiki XML export: {e}",
                             "pass a *-pages-articles*.xml[.bz2] dump") from None

    def _events(self) -> None:
        info = self.info
        for event, elem in self.parser.read_events():
            if event == "start-ns":
                prefix, uri = elem
                if prefix == "" and not info.xmlns:
                    info.xmlns = uri
                continue
            tag = local_name(elem.tag)
            if event == "start":
                self.depth += 1
                if self.depth == 1:
                    info.version = elem.get("version", "")
                    if not info.xmlns and elem.tag.startswith("{"):
                        info.xmlns = elem.tag[1:].split("}", 1)[0]
                elif self.depth == 2 and tag == "page":
                    self.saw_page = True
            else:
                self.depth -= 1
                if tag == "siteinfo" and self.depth == 1:
                    _read_siteinfo(elem, info)
                    self.siteinfo_done = True


def _read_siteinfo(elem: ET.Element, info: DumpInfo) -> None:
    ns = ns_prefix(info.xmlns)
    info.sitename = elem.findtext(f"{ns}sitename") or ""
    info.dbname = elem.findtext(f"{ns}dbname") or ""
    for el in elem.iter(f"{ns}namespace"):
        try:
            info.namespaces[int(el.get("key", ""))] = el.text or ""
        except ValueError:
            pass


def local_name(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def ns_prefix(xmlns: str) -> str:
    """`{namespace}` as ElementTree spells it in tags, or "" for no namespace."""
    return f"{{{xmlns}}}" if xmlns else ""
