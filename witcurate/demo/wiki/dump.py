"""The demo dump on disk: MediaWiki export XML (schema 0.10) in Wikimedia's multistream layout,
with its bz2 index of `offset:page_id:title` lines."""

from __future__ import annotations

import bz2
import hashlib
import os
from xml.sax.saxutils import escape, quoteattr

from witcurate.demo.wiki.pages import Page
from witcurate.demo.wiki.words import TALK_ONLY_WORD

DUMP_NAME = "enwiki-demo-pages-articles-multistream.xml.bz2"
INDEX_NAME = "enwiki-demo-pages-articles-multistream-index.txt.bz2"
PAGES_PER_STREAM = 100

NAMESPACES = [
    (-2, "Media"), (-1, "Special"), (0, ""), (1, "Talk"), (2, "User"), (3, "User talk"),
    (4, "Wikipedia"), (5, "Wikipedia talk"), (6, "File"), (7, "File talk"), (8, "MediaWiki"),
    (9, "MediaWiki talk"), (10, "Template"), (11, "Template talk"), (12, "Help"),
    (13, "Help talk"), (14, "Category"), (15, "Category talk"), (100, "Portal"),
    (101, "Portal talk"), (118, "Draft"), (119, "Draft talk"), (828, "Module"),
    (829, "Module talk"),
]
_NS_BY_NAME = {name: key for key, name in NAMESPACES if name}

def _sha1_base36(text: str) -> str:
    """MediaWiki's revision sha1: the SHA-1 of the text in base 36, 31 digits."""
    n = int.from_bytes(hashlib.sha1(text.encode("utf-8")).digest(), "big")
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while n:
        n, d = divmod(n, 36)
        out = digits[d] + out
    return out.rjust(31, "0")


def header_xml() -> str:
    ns_lines = "\n".join(
        f'      <namespace key="{k}" case="first-letter" />' if not name else
        f'      <namespace key="{k}" case="first-letter">{escape(name)}</namespace>'
        for k, name in NAMESPACES)
    return (
        '<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
        'xsi:schemaLocation="http://www.mediawiki.org/xml/export-0.10/ '
        'http://www.mediawiki.org/xml/export-0.10.xsd" version="0.10" xml:lang="en">\n'
        "  <siteinfo>\n"
        "    <sitename>Wikipedia</sitename>\n"
        "    <dbname>enwiki</dbname>\n"
        "    <base>https://en.wikipedia.org/wiki/Main_Page</base>\n"
        "    <generator>MediaWiki 1.41.0-wmf.demo</generator>\n"
        "    <case>first-letter</case>\n"
        "    <namespaces>\n" + ns_lines + "\n    </namespaces>\n"
        "  </siteinfo>\n")


def page_xml(p: Page) -> str:
    redirect = f"    <redirect title={quoteattr(p.redirect)} />\n" if p.redirect else ""
    nbytes = len(p.text.encode("utf-8"))
    return (
        "  <page>\n"
        f"    <title>{escape(p.title)}</title>\n"
        f"    <ns>{p.ns}</ns>\n"
        f"    <id>{p.id}</id>\n"
        f"{redirect}"
        "    <revision>\n"
        f"      <id>{p.rev_id}</id>\n"
        f"      <parentid>{p.rev_id - 17}</parentid>\n"
        f"      <timestamp>{p.timestamp}</timestamp>\n"
        "      <contributor>\n"
        f"        <username>{TALK_ONLY_WORD}</username>\n"
        "        <id>4242</id>\n"
        "      </contributor>\n"
        "      <comment>demo edit</comment>\n"
        "      <model>wikitext</model>\n"
        "      <format>text/x-wiki</format>\n"
        f'      <text bytes="{nbytes}" xml:space="preserve">{escape(p.text)}</text>\n'
        f"      <sha1>{_sha1_base36(p.text)}</sha1>\n"
        "    </revision>\n"
        "  </page>\n")


FOOTER = "</mediawiki>\n"


def write_dump(dump_dir: str, pages: list[Page]) -> dict:
    """Write the multistream dump and its index into dump_dir; returns paths and counts."""
    os.makedirs(dump_dir, exist_ok=True)
    dump_path = os.path.join(dump_dir, DUMP_NAME)
    index_path = os.path.join(dump_dir, INDEX_NAME)
    index_lines: list[str] = []
    offsets: list[int] = []
    with open(dump_path + ".part", "wb") as f:
        f.write(bz2.compress(header_xml().encode("utf-8"), 9))
        for start in range(0, len(pages), PAGES_PER_STREAM):
            chunk = pages[start:start + PAGES_PER_STREAM]
            offset = f.tell()
            offsets.append(offset)
            f.write(bz2.compress("".join(page_xml(p) for p in chunk).encode("utf-8"), 9))
            index_lines.extend(f"{offset}:{p.id}:{p.title}\n" for p in chunk)
        f.write(bz2.compress(FOOTER.encode("utf-8"), 9))
    os.replace(dump_path + ".part", dump_path)
    with open(index_path + ".part", "wb") as f:
        f.write(bz2.compress("".join(index_lines).encode("utf-8"), 9))
    os.replace(index_path + ".part", index_path)
    return {
        "dump": dump_path, "index": index_path, "pages": len(pages),
        "articles": sum(1 for p in pages if p.ns == 0 and not p.redirect),
        "redirects": sum(1 for p in pages if p.redirect),
        "other_namespaces": sum(1 for p in pages if p.ns != 0),
        "page_streams": len(offsets),
    }


def namespace_of(title: str) -> int:
    """The namespace number a prefixed title belongs to (0 for the main namespace)."""
    prefix, sep, _ = title.partition(":")
    return _NS_BY_NAME.get(prefix, 0) if sep else 0
