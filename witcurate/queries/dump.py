"""Stream pages out of a MediaWiki XML export, split so that several workers read one dump.

Formats read:
- `*-pages-articles*.xml.bz2`: one bz2 stream holding the whole document. One split.
- `*-pages-articles-multistream*.xml*.bz2`: many independent bz2 streams, each holding whole
  `<page>` elements. The first stream holds only `<mediawiki ...><siteinfo>...</siteinfo>` (the
  header); the last ones hold `</mediawiki>` and sometimes an empty stream. The companion index
  (`offset:page_id:title` lines, bz2) gives the byte offset of every page stream, so the file is
  cut into splits of whole streams of about `split_bytes` each. Without an index the file is cut
  into byte ranges and each reader scans its range for the first stream start (see
  `bz2_streams`).
- plain `.xml` (or `.xml.gz`, `.xml.xz`): one split.

The header is read on its own (`dump_header.read_header`): it names the export namespace, which
the readers of later streams need because their fragments carry no root element.

Every split is parsed with an incremental (pull) ElementTree parser fed from a streaming
decompressor, and every finished `<page>` element is cleared and detached, so memory stays
bounded by the largest page, whatever the size of the dump. Malformed XML raises `InputError`
naming the split.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Iterator, NamedTuple

from witcurate.errors import InputError
from witcurate.pipeline import fs
from witcurate.queries.bz2_streams import bz2_chunks, compression_of, plain_chunks
from witcurate.queries.dump_header import DumpInfo, ns_prefix, read_header

DEFAULT_SPLIT_BYTES = 64 << 20        # compressed bytes per split of a multistream dump
_REDIRECT_TEXT = re.compile(r"^\s*#\s*redirect\b", re.IGNORECASE)


class Page(NamedTuple):
    page_id: int
    ns: int
    title: str
    redirect: bool
    text: str
    model: str = "wikitext"


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


def is_article(page: Page) -> bool:
    """Main namespace, not a redirect, wikitext content: the pages whose text is counted."""
    return page.ns == 0 and not page.redirect and page.model == "wikitext"


def is_redirect_text(text: str) -> bool:
    return bool(_REDIRECT_TEXT.match(text))


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
        chunks = plain_chunks(split.path) if compression_of(split.path) != "bz2" else \
            bz2_chunks(split.path, 0, None, locate=False)
    else:
        chunks = bz2_chunks(split.path, split.start, split.end, split.locate)
    synthetic_root = split.mode != "whole" and split.start > 0
    yield from parse_pages(chunks, split.xmlns, synthetic_root, split.describe())


def parse_pages(chunks, xmlns: str, synthetic_root: bool, where: str) -> Iterator[Page]:
    """Pages from XML bytes; a fragment of `<page>` elements gets a root element around it."""
    parser = ET.XMLPullParser(events=("start", "end"))
    ns = ns_prefix(xmlns)
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
