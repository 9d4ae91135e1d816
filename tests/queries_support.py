"""Hand-made MediaWiki dumps and pageview files in the real formats, for the queries tests."""

from __future__ import annotations

import bz2
import gzip
from pathlib import Path
from xml.sax.saxutils import escape

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "wikipedia"
ENWIKI = FIXTURES / "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
MULTISTREAM = FIXTURES / "pages-articles-p2566p2583.multistream.xml.bz2"
MULTISTREAM_INDEX = FIXTURES / "pages-articles-p2566p2583.multistream-index.xml.bz2"
MULTISTREAM_PAGE_IDS = [2566, 2567, 2568, 2570, 2571, 2572, 2573, 2574, 2575, 2576, 2577,
                        2578, 2579, 2580, 2581, 2582, 2583]
MULTISTREAM_OFFSETS = [0, 718, 4735, 8475, 12237, 15407, 15462]

SCHEMA = "0.10"


def header(schema: str = SCHEMA) -> str:
    ns = f"http://www.mediawiki.org/xml/export-{schema}/"
    return (f'<mediawiki xmlns="{ns}" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
            f'xsi:schemaLocation="{ns} {ns[:-1]}.xsd" version="{schema}" xml:lang="en">\n'
            "  <siteinfo>\n    <sitename>Wikipedia</sitename>\n    <dbname>enwiki</dbname>\n"
            "    <base>https://en.wikipedia.org/wiki/Main_Page</base>\n"
            "    <generator>MediaWiki 1.42.0-wmf.1</generator>\n    <case>first-letter</case>\n"
            "    <namespaces>\n"
            '      <namespace key="0" case="first-letter" />\n'
            '      <namespace key="1" case="first-letter">Talk</namespace>\n'
            '      <namespace key="14" case="first-letter">Category</namespace>\n'
            "    </namespaces>\n  </siteinfo>\n")


FOOTER = "</mediawiki>\n"


def page(page_id: int, title: str, text: str, ns: int = 0, redirect: str | None = None) -> str:
    red = f'    <redirect title="{escape(redirect)}" />\n' if redirect else ""
    return (f"  <page>\n    <title>{escape(title)}</title>\n    <ns>{ns}</ns>\n    <id>{page_id}</id>\n"
            f"{red}    <revision>\n      <id>{page_id * 10}</id>\n"
            "      <timestamp>2024-01-01T00:00:00Z</timestamp>\n"
            "      <contributor>\n        <username>Example</username>\n        <id>1</id>\n"
            "      </contributor>\n      <model>wikitext</model>\n      <format>text/x-wiki</format>\n"
            f'      <text bytes="{len(text.encode())}" xml:space="preserve">{escape(text)}</text>\n'
            "      <sha1>0</sha1>\n    </revision>\n  </page>\n")


# A corpus whose counts are worked out by hand (see test_queries_stage.py).
ALPHA = ("'''cat''' sat.<ref>dog dog dog</ref> cat sat.{{Infobox animal|name=dog dog}}\n"
         "[[Dog|dog]] ran\n<!-- dog dog -->\n[[Category:Dogs]]\n[[File:Dog.jpg|thumb|dog dog]]\n"
         '{| class="wikitable"\n|-\n| dog || dog\n|}\n')
BETA = "== cat sat ==\ncat sat on [[Mouse]]\n"
# (id, title, wikitext, namespace, redirect target): two articles, a redirect by element, a
# talk page, and a redirect by text only (older exports have no <redirect/> element).
PAGES = [
    (1, "Alpha", ALPHA, 0, None),
    (2, "Beta", BETA, 0, None),
    (3, "Gamma", "#REDIRECT [[Alpha]]", 0, "Alpha"),
    (4, "Talk:Alpha", "dog dog dog dog", 1, None),
    (5, "Delta", "#redirect [[Beta]]", 0, None),
]


def pages_xml(pages=PAGES) -> list[str]:
    return [page(pid, title, text, ns, red) for pid, title, text, ns, red in pages]


def write_plain(path: Path, pages=PAGES, schema: str = SCHEMA, compress: bool = True) -> Path:
    doc = header(schema) + "".join(pages_xml(pages)) + FOOTER
    path.write_bytes(bz2.compress(doc.encode()) if compress else doc.encode())
    return path


def write_multistream(path: Path, pages=PAGES, per_stream: int = 2, schema: str = SCHEMA,
                      with_index: bool = True, empty_stream: bool = True) -> tuple[Path, Path | None]:
    """A multistream dump the way Wikimedia writes one: header stream, page streams, footer."""
    blobs = [bz2.compress(header(schema).encode())]
    index_lines = []
    xml = pages_xml(pages)
    offset = len(blobs[0])
    for i in range(0, len(xml), per_stream):
        chunk = "".join(xml[i:i + per_stream]).encode()
        for pid, title, *_ in pages[i:i + per_stream]:
            index_lines.append(f"{offset}:{pid}:{title}")
        blob = bz2.compress(chunk)
        blobs.append(blob)
        offset += len(blob)
    blobs.append(bz2.compress(FOOTER.encode()))
    if empty_stream:
        blobs.append(bz2.compress(b""))
    path.write_bytes(b"".join(blobs))
    index = None
    if with_index:
        index = path.with_name(path.name.replace("multistream", "multistream-index", 1)
                               .replace(".xml", ".txt", 1))
        index.write_bytes(bz2.compress(("\n".join(index_lines) + "\n").encode()))
    return path, index


def write_pageviews(path: Path, lines: list[str | bytes]) -> Path:
    data = b"".join((l if isinstance(l, bytes) else l.encode()) + b"\n" for l in lines)
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(data))
    elif path.suffix == ".bz2":
        path.write_bytes(bz2.compress(data))
    else:
        path.write_bytes(data)
    return path


def wordnet_data_dir(tmp_path_factory) -> str:
    """WordNet for NLTK under the session's temp dir, from /usr/share/wordnet (no network).

    One fixed place per test session, so every module that asks reuses the files and the
    names `wordnet.synset_names` already read. Skips when Debian's WordNet is not installed.
    """
    import os

    import pytest

    from witcurate.queries import wordnet_setup
    if not all(os.path.isfile(os.path.join(wordnet_setup.DEBIAN_DIR, f)) for f in wordnet_setup.REQUIRED):
        pytest.skip("WordNet data not set up (apt-get install wordnet-base wordnet-sense-index)")
    data_dir = tmp_path_factory.getbasetemp() / "nltk_data_wordnet"
    wordnet_setup.setup(str(data_dir), download=False)
    return str(data_dir)
