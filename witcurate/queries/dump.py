"""Stream pages out of a MediaWiki XML export, split so that several workers read one dump.

Formats read:
- `*-pages-articles*.xml.bz2`: one bz2 stream holding the whole document. One split.
- `*-pages-articles-multistream*.xml*.bz2`: many independent bz2 streams, each holding whole
  `<page>` elements. The first stream holds only `<mediawiki ...><siteinfo>...</siteinfo>` (the
  header); the last ones hold `</mediawiki>` and sometimes an empty stream. The companion index
  (`offset:page_id:title` lines, bz2) gives the byte offset of every page stream, so the file is
  cut into splits of whole streams of about `split_bytes` each. Without an index the file is cut
  into byte ranges and each reader scans its range for the first stream start (the bz2 stream
  magic `BZh1-9` followed by a block or end-of-stream magic); a reader owns every stream that
  *starts* in its range and reads the last one to its end, wherever that is.
- plain `.xml` (or `.xml.gz`, `.xml.xz`): one split.

The header is read on its own (`read_header`): it names the export namespace (schema 0.10,
0.11, ...), which the readers of later streams need because their fragments carry no root element.

Every split is parsed with an incremental (pull) ElementTree parser fed from a streaming
decompressor, and every finished `<page>` element is cleared and detached, so memory stays
bounded by the largest page, whatever the size of the dump. A truncated or corrupt bz2 stream,
or malformed XML, raises `InputError` naming the file and byte offset; nothing waits on input
that will never come.
"""

from __future__ import annotations

import bz2
import contextlib
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Iterator, NamedTuple

from witcurate.errors import InputError
from witcurate.pipeline import fs

CHUNK = 1 << 20                       # compressed bytes read at a time
DEFAULT_SPLIT_BYTES = 64 << 20        # compressed bytes per split of a multistream dump
HEADER_PROBE_BYTES = 16 << 20         # how far to look for the end of a separate header stream

# A bz2 stream starts with "BZh" + block size digit, then either a block header (pi) or, for an
# empty stream, the end-of-stream marker (sqrt(pi)). Both are byte-aligned at a stream start.
STREAM_MAGIC = re.compile(rb"BZh[1-9](?:\x31\x41\x59\x26\x53\x59|\x17\x72\x45\x38\x50\x90)")
_MAGIC_LEN = 10
_REDIRECT_TEXT = re.compile(r"^\s*#\s*redirect\b", re.IGNORECASE)


class Page(NamedTuple):
    page_id: int
    ns: int
    title: str
    redirect: bool
    text: str
    model: str = "wikitext"


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


@dataclass(frozen=True)
class Split:
    """A byte range of one dump that one worker reads on its own.

    mode "bz2": the bz2 streams that start in [start, end) (end None: up to the end of the file);
    `locate` says whether a stream is known to start exactly at `start` (index splits) or must
    be found by scanning forward (byte-range splits). mode "whole": the whole file.
    """
    path: str
    start: int
    end: int | None
    mode: str
    xmlns: str
    locate: bool = False

    def describe(self) -> str:
        if self.mode == "whole":
            return self.path
        return f"{self.path} bytes {self.start}-{'' if self.end is None else self.end}"


def compression_of(path: str) -> str:
    lower = path.lower()
    for suffix, name in ((".bz2", "bz2"), (".gz", "gzip"), (".xz", "xz")):
        if lower.endswith(suffix):
            return name
    return "none"


def is_article(page: Page) -> bool:
    """Main namespace, not a redirect, wikitext content: the pages whose text is counted."""
    return page.ns == 0 and not page.redirect and page.model == "wikitext"


def is_redirect_text(text: str) -> bool:
    return bool(_REDIRECT_TEXT.match(text))


# ---------------------------------------------------------------------------------------------
# Decompression


def _bz2_chunks(path: str, start: int, end: int | None, locate: bool) -> Iterator[bytes]:
    """Decompressed bytes of the bz2 streams starting in [start, end), each read to its end."""
    with fs.open_file(path) as f:
        if locate:
            first = _find_stream_start(f, start, end)
            if first is None:
                return
            start = first
        f.seek(start)
        pos = start                    # offset of the next byte to read
        stream_start = start
        dec = bz2.BZ2Decompressor()
        fed = False
        pending = b""                  # the first bytes of a stream, too few to check its magic
        while True:
            chunk = f.read(CHUNK)
            if not chunk:
                break
            pos += len(chunk)
            data = pending + chunk if pending else chunk
            pending = b""
            while data:
                if not fed:
                    if len(data) < 4:
                        pending = data
                        break
                    if not data.startswith(b"BZh"):
                        raise InputError(
                            f"{path}: no bz2 stream starts at byte {stream_start} (found "
                            f"{data[:4]!r}): the file is corrupt, or the index does not belong to it",
                            "re-download the dump (and its -index file) and check their checksums")
                fed = True
                try:
                    out = dec.decompress(data)
                except (OSError, ValueError) as e:
                    raise InputError(
                        f"{path}: corrupt bz2 data in the stream starting at byte {stream_start}: {e}",
                        "re-download the dump and check its checksum") from None
                if out:
                    yield out
                if dec.eof:
                    data = dec.unused_data
                    stream_end = pos - len(data)
                    if end is not None and stream_end >= end:
                        return
                    dec = bz2.BZ2Decompressor()
                    stream_start = stream_end
                    fed = False
                else:
                    data = b""
        if pending:
            raise InputError(f"{path}: {len(pending)} stray bytes after the bz2 stream ending at "
                             f"byte {stream_start}", "re-download the dump and check its checksum")
        if fed and not dec.eof:
            raise InputError(
                f"{path}: truncated bz2 stream starting at byte {stream_start} "
                f"(the file ends at byte {pos} before the stream does)",
                "the download was cut short: re-download the dump and check its checksum")


def _find_stream_start(f, start: int, end: int | None) -> int | None:
    """The first bz2 stream start at or after `start` and before `end`, by scanning bytes."""
    f.seek(start)
    pos = start
    tail = b""
    while end is None or pos < end + _MAGIC_LEN:      # a magic may straddle `end`
        chunk = f.read(CHUNK)
        if not chunk:
            break
        buf = tail + chunk
        base = pos - len(tail)
        m = STREAM_MAGIC.search(buf)
        if m:
            found = base + m.start()
            return found if end is None or found < end else None
        tail = buf[-(_MAGIC_LEN - 1):]
        pos += len(chunk)
    return None


def _plain_chunks(path: str) -> Iterator[bytes]:
    comp = compression_of(path)
    try:
        with fs.open_file(path, "rb", compression=None if comp == "none" else comp) as f:
            while True:
                chunk = f.read(CHUNK)
                if not chunk:
                    return
                yield chunk
    except (EOFError, OSError) as e:
        raise InputError(f"{path}: cannot decompress: {e}",
                         "re-download the dump and check its checksum") from None


def iter_stream_offsets(path: str) -> Iterator[tuple[int, int]]:
    """(start, end) of every bz2 stream in a file, found by decompressing it (for checks)."""
    with fs.open_file(path) as f:
        data = f.read()
    pos = 0
    while pos < len(data):
        dec = bz2.BZ2Decompressor()
        try:
            dec.decompress(data[pos:])
        except OSError as e:
            raise InputError(f"{path}: corrupt bz2 data at byte {pos}: {e}", "re-download it") from None
        if not dec.eof:
            raise InputError(f"{path}: truncated bz2 stream at byte {pos}", "re-download it")
        end = len(data) - len(dec.unused_data)
        yield pos, end
        pos = end


# ---------------------------------------------------------------------------------------------
# Header


def read_header(path: str) -> DumpInfo:
    """Parse `<mediawiki>` and `<siteinfo>`; for bz2, also find whether stream 0 is header-only.

    A multistream dump's first stream ends right after `</siteinfo>`; a plain bz2 dump's first
    stream is the whole file. Decompression stops as soon as either is known.
    """
    if not fs.exists(path):
        raise InputError(f"dump file not found: {path}", "check queries.dumps / --dump")
    size = fs.size_and_mtime(path)[0]
    comp = compression_of(path)
    parser = ET.XMLPullParser(events=("start", "end", "start-ns"))
    info = DumpInfo(path=path, xmlns="", version="", size=size, compression=comp)
    state = {"depth": 0, "siteinfo_done": False, "saw_page": False}

    def feed(chunk: bytes) -> None:
        try:
            parser.feed(chunk)
            _header_events(parser, info, state)
        except ET.ParseError as e:
            if state["siteinfo_done"]:
                raise InputError(f"{path}: malformed XML: {e}",
                                 "re-download the dump; a hand-edited file must stay well-formed") from None
            raise InputError(f"{path}: not a MediaWiki XML export: {e}",
                             "pass a *-pages-articles*.xml[.bz2] dump") from None

    if comp != "bz2":
        with contextlib.closing(_plain_chunks(path)) as chunks:
            for chunk in chunks:
                feed(chunk)
                if state["siteinfo_done"] or state["saw_page"]:
                    break
    else:
        with fs.open_file(path) as f:
            dec = bz2.BZ2Decompressor()
            pos = 0
            head = f.read(4)
            if not head.startswith(b"BZh"):
                raise InputError(f"{path}: not a bz2 file (starts with {head!r})",
                                 "pass the .bz2 dump as downloaded, or decompress it to .xml")
            f.seek(0)
            while pos < HEADER_PROBE_BYTES:
                chunk = f.read(min(CHUNK, 64 << 10))
                if not chunk:
                    break
                pos += len(chunk)
                try:
                    out = dec.decompress(chunk)
                except OSError as e:
                    raise InputError(f"{path}: corrupt bz2 data at the start of the file: {e}",
                                     "re-download the dump and check its checksum") from None
                if out:
                    feed(out)
                if dec.eof:
                    if not state["saw_page"]:
                        info.header_end = pos - len(dec.unused_data)
                    break
                if state["saw_page"]:
                    break
            if not dec.eof and not state["saw_page"] and pos >= size:
                raise InputError(f"{path}: truncated bz2 stream at byte 0 (the file ends at byte {pos})",
                                 "the download was cut short: re-download the dump")
    if not info.xmlns and not info.version:
        raise InputError(f"{path}: no <mediawiki> root element found",
                         "pass a MediaWiki XML export (*-pages-articles*.xml.bz2)")
    return info


def _header_events(parser: ET.XMLPullParser, info: DumpInfo, state: dict) -> None:
    for event, elem in parser.read_events():
        if event == "start-ns":
            prefix, uri = elem
            if prefix == "" and not info.xmlns:
                info.xmlns = uri
            continue
        tag = _local(elem.tag)
        if event == "start":
            state["depth"] += 1
            if state["depth"] == 1:
                info.version = elem.get("version", "")
                if not info.xmlns and elem.tag.startswith("{"):
                    info.xmlns = elem.tag[1:].split("}", 1)[0]
            elif state["depth"] == 2 and tag == "page":
                state["saw_page"] = True
        else:
            state["depth"] -= 1
            if tag == "siteinfo" and state["depth"] == 1:
                ns = _ns(info.xmlns)
                info.sitename = elem.findtext(f"{ns}sitename") or ""
                info.dbname = elem.findtext(f"{ns}dbname") or ""
                for el in elem.iter(f"{ns}namespace"):
                    try:
                        info.namespaces[int(el.get("key", ""))] = el.text or ""
                    except ValueError:
                        pass
                state["siteinfo_done"] = True


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _ns(xmlns: str) -> str:
    return f"{{{xmlns}}}" if xmlns else ""


# ---------------------------------------------------------------------------------------------
# Splits


def find_index(path: str) -> str | None:
    """The multistream index beside a dump, named the way Wikimedia names it, if it exists.

    enwiki-D-pages-articles-multistream.xml.bz2        -> ...-multistream-index.txt.bz2
    enwiki-D-pages-articles-multistream1.xml-p1p41242.bz2 -> ...-multistream-index1.txt-p1p41242.bz2
    NAME.multistream.xml.bz2                            -> NAME.multistream-index.xml.bz2 / .txt.bz2
    """
    head, sep, tail = path.rpartition("multistream")
    if not sep:
        return None
    candidates = []
    m = re.match(r"(\d*)(.*)$", tail)
    digits, rest = (m.group(1), m.group(2)) if m else ("", tail)
    for r in (rest.replace(".xml", ".txt", 1), rest):
        candidates.append(f"{head}multistream-index{digits}{r}")
    for cand in dict.fromkeys(candidates):
        if cand != path and fs.exists(cand):
            return cand
    return None


def read_index_offsets(index_path: str) -> list[int]:
    """Sorted unique stream offsets from an `offset:page_id:title` index (bz2 or plain)."""
    comp = compression_of(index_path)
    offsets: set[int] = set()
    try:
        with fs.open_file(index_path, "rb", compression=None if comp == "none" else comp) as f:
            for lineno, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                head = line.split(b":", 1)[0]
                if not head.isdigit():
                    raise InputError(f"{index_path}:{lineno}: not an `offset:page_id:title` line: "
                                     f"{line[:80]!r}", "pass the dump's own -index file, or none")
                offsets.add(int(head))
    except (EOFError, OSError) as e:
        raise InputError(f"{index_path}: cannot read the index: {e}",
                         "re-download the index, or remove it to split by scanning") from None
    return sorted(offsets)


def plan_splits(path: str, index: str | None = "auto",
                split_bytes: int = DEFAULT_SPLIT_BYTES) -> tuple[DumpInfo, list[Split]]:
    """The header of a dump and the splits its pages are read in.

    index: "auto" finds the index beside a multistream dump; None splits by scanning; a path
    uses that index.
    """
    info = read_header(path)
    if info.compression != "bz2" or info.header_end is None or info.header_end >= info.size:
        return info, [Split(path, 0, None, "whole", info.xmlns)]
    if index == "auto":
        index = find_index(path)
    if index:
        offsets = read_index_offsets(index)
        if not offsets:
            raise InputError(f"{index}: the index lists no pages", "pass the dump's own -index file")
        if offsets[0] < info.header_end or offsets[-1] >= info.size:
            raise InputError(
                f"{index} does not match {path}: offsets {offsets[0]}..{offsets[-1]} fall outside "
                f"the page streams (header ends at {info.header_end}, file size {info.size})",
                "pass the index from the same dump run, or none")
        info.index = index
        starts = [offsets[0]]
        for off in offsets[1:]:
            if off - starts[-1] >= split_bytes:
                starts.append(off)
        bounds = starts + [None]
        splits = [Split(path, bounds[i], bounds[i + 1], "bz2", info.xmlns, locate=False)
                  for i in range(len(starts))]
        return info, splits
    splits = []
    start = info.header_end
    while start < info.size:
        end = min(start + split_bytes, info.size)
        splits.append(Split(path, start, None if end >= info.size else end, "bz2", info.xmlns,
                            locate=True))
        start = end
    return info, splits


# ---------------------------------------------------------------------------------------------
# Pages


def read_split(split: Split) -> Iterator[Page]:
    """Every page in a split, in file order (all namespaces, redirects flagged)."""
    if split.mode == "whole":
        chunks = _plain_chunks(split.path) if compression_of(split.path) != "bz2" else \
            _bz2_chunks(split.path, 0, None, locate=False)
    else:
        chunks = _bz2_chunks(split.path, split.start, split.end, split.locate)
    synthetic_root = split.mode != "whole" and split.start > 0
    yield from parse_pages(chunks, split.xmlns, synthetic_root, split.describe())


def parse_pages(chunks, xmlns: str, synthetic_root: bool, where: str) -> Iterator[Page]:
    """Pages from XML bytes; a fragment of `<page>` elements gets a root element around it."""
    parser = ET.XMLPullParser(events=("start", "end"))
    ns = _ns(xmlns)
    page_tag = f"{ns}page"
    depth = 0
    root = None
    root_closed = False
    fed_anything = False

    def events():
        nonlocal depth, root, root_closed
        for event, elem in parser.read_events():
            if event == "start":
                depth += 1
                if depth == 1:
                    root = elem
                continue
            depth -= 1
            if depth == 1:
                if elem.tag == page_tag:
                    yield _page(elem, ns, where)
                elem.clear()
                if root is not None:
                    root.clear()
            elif depth == 0:
                root_closed = True

    def feed(data: bytes):
        try:
            parser.feed(data)
            yield from events()
        except ET.ParseError as e:
            raise InputError(f"{where}: malformed XML: {e}",
                             "re-download the dump; a hand-edited file must stay well-formed") from None

    if synthetic_root:
        yield from feed(f'<mediawiki xmlns="{xmlns}">'.encode() if xmlns else b"<mediawiki>")
    for chunk in chunks:
        if not fed_anything and chunk.strip():
            fed_anything = True
        yield from feed(chunk)
    if not root_closed:
        if synthetic_root:
            yield from feed(b"</mediawiki>")
        elif fed_anything:
            raise InputError(f"{where}: the XML ends before </mediawiki>: the file is truncated",
                             "re-download the dump and check its checksum")
    try:
        parser.close()
    except ET.ParseError as e:
        raise InputError(f"{where}: malformed XML: {e}", "re-download the dump") from None


def _page(elem: ET.Element, ns: str, where: str) -> Page:
    title = elem.findtext(f"{ns}title") or ""
    try:
        page_id = int(elem.findtext(f"{ns}id") or -1)
        page_ns = int(elem.findtext(f"{ns}ns") or 0)
    except ValueError:
        raise InputError(f"{where}: page {title!r} has a non-numeric <id> or <ns>",
                         "re-download the dump") from None
    revisions = elem.findall(f"{ns}revision")
    text = ""
    model = "wikitext"
    if revisions:
        rev = revisions[-1]
        text = rev.findtext(f"{ns}text") or ""
        model = rev.findtext(f"{ns}model") or "wikitext"
    redirect = elem.find(f"{ns}redirect") is not None or is_redirect_text(text)
    return Page(page_id, page_ns, title, redirect, text, model)


def iter_pages(path: str, index: str | None = "auto",
               split_bytes: int = DEFAULT_SPLIT_BYTES) -> Iterator[Page]:
    """Every page of a dump in one process (the splits one after the other)."""
    _, splits = plan_splits(path, index, split_bytes)
    for split in splits:
        yield from read_split(split)
