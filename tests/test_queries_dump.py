"""Reading MediaWiki XML dumps: the real enwiki and multistream fixtures, splits, broken files."""

from __future__ import annotations

import bz2
import collections
import threading

import pytest

from queries_support import (ENWIKI, MULTISTREAM, MULTISTREAM_INDEX, MULTISTREAM_OFFSETS,
                             MULTISTREAM_PAGE_IDS, PAGES, write_multistream, write_plain)
from witcurate.errors import InputError
from witcurate.queries import bz2_streams, dump


def _ids(splits):
    return [p.page_id for s in splits for p in dump.read_split(s)]


def test_enwiki_fixture_pages_namespaces_and_redirects():
    info, splits = dump.plan_splits(str(ENWIKI))
    assert info.xmlns == "http://www.mediawiki.org/xml/export-0.10/"
    assert info.version == "0.10" and info.dbname == "enwiki"
    assert info.namespaces[14] == "Category" and info.namespaces[1] == "Talk"
    assert not info.multistream and len(splits) == 1 and splits[0].mode == "whole"

    pages = list(dump.read_split(splits[0]))
    assert len(pages) == 206
    kinds = collections.Counter((p.ns, p.redirect) for p in pages)
    assert kinds == {(0, False): 106, (0, True): 99, (4, True): 1}
    articles = [p for p in pages if dump.is_article(p)]
    assert len(articles) == 106
    titles = {p.title for p in articles}
    assert {"Anarchism", "Autism", "Albedo"} <= titles
    assert "AccessibleComputing" not in titles            # the first page: a redirect
    albedo = next(p for p in articles if p.title == "Albedo")
    assert albedo.page_id == 39 and "{{" in albedo.text and "albedo" in albedo.text.lower()
    assert len({p.page_id for p in pages}) == 206


def test_multistream_fixture_index_split_reads_header_separately():
    info, splits = dump.plan_splits(str(MULTISTREAM))
    assert info.index == str(MULTISTREAM_INDEX)            # found by Wikimedia's naming
    assert info.multistream and info.header_end == 718
    assert info.xmlns.endswith("export-0.11/") and info.dbname == "elwikivoyage"
    assert all(s.start >= 718 for s in splits)              # the header is not a page split
    pages = [p for s in splits for p in dump.read_split(s)]
    assert [p.page_id for p in pages] == MULTISTREAM_PAGE_IDS
    main = [p for p in pages if dump.is_article(p)]
    assert len(main) == 16                                  # plus one category page (ns 14)
    assert {p.ns for p in pages} == {0, 14}


@pytest.mark.parametrize("split_bytes", [1, 700, 3000, 1 << 20])
def test_multistream_fixture_index_splits_of_any_size(split_bytes):
    _, splits = dump.plan_splits(str(MULTISTREAM), "auto", split_bytes)
    assert _ids(splits) == MULTISTREAM_PAGE_IDS
    if split_bytes == 1:
        assert [s.start for s in splits] == [718, 4735, 8475, 12237]


@pytest.mark.parametrize("split_bytes", [1, 500, 1000, 3000, 1 << 20])
def test_multistream_fixture_scan_splits_find_every_page_once(split_bytes):
    """Without the index, byte ranges are scanned for stream starts; the empty stream is fine."""
    info, splits = dump.plan_splits(str(MULTISTREAM), None, split_bytes)
    assert info.index is None and all(s.locate for s in splits)
    assert _ids(splits) == MULTISTREAM_PAGE_IDS


@pytest.mark.parametrize("chunk", [1, 3, 7, 719])
def test_stream_boundaries_anywhere_in_a_read(monkeypatch, chunk):
    """A stream start cut by a read boundary (even inside "BZh") is still found."""
    monkeypatch.setattr(bz2_streams, "CHUNK", chunk)
    for index in ("auto", None):
        _, splits = dump.plan_splits(str(MULTISTREAM), index, 1000)
        assert _ids(splits) == MULTISTREAM_PAGE_IDS


def test_multistream_stream_layout_matches_provenance():
    starts = [start for start, _ in bz2_streams.iter_stream_offsets(str(MULTISTREAM))]
    assert starts == MULTISTREAM_OFFSETS
    assert dump.read_index_offsets(str(MULTISTREAM_INDEX)) == [718, 4735, 8475, 12237]


def test_handmade_plain_and_multistream_agree(tmp_path):
    plain = write_plain(tmp_path / "enwiki-20240101-pages-articles.xml.bz2")
    multi, index = write_multistream(tmp_path / "enwiki-20240101-pages-articles-multistream.xml.bz2")
    assert index.name == "enwiki-20240101-pages-articles-multistream-index.txt.bz2"
    expected = [(pid, ns, title) for pid, title, _, ns, _ in PAGES]
    for path, index_arg in ((plain, "auto"), (multi, "auto"), (multi, None)):
        got = [(p.page_id, p.ns, p.title) for p in dump.iter_pages(str(path), index_arg, 1)]
        assert got == expected
    pages = {p.title: p for p in dump.iter_pages(str(multi))}
    assert pages["Gamma"].redirect and pages["Delta"].redirect      # element / #redirect text
    assert not pages["Alpha"].redirect and pages["Talk:Alpha"].ns == 1
    assert [t for t, p in pages.items() if dump.is_article(p)] == ["Alpha", "Beta"]


def test_schema_011_and_plain_xml(tmp_path):
    path = write_plain(tmp_path / "dump.xml", schema="0.11", compress=False)
    info, splits = dump.plan_splits(str(path))
    assert info.version == "0.11" and info.compression == "none"
    assert [p.title for p in dump.read_split(splits[0])][:2] == ["Alpha", "Beta"]


def test_find_index_names(tmp_path):
    assert dump.find_index(str(tmp_path / "x-pages-articles.xml.bz2")) is None
    part = tmp_path / "enwiki-20240101-pages-articles-multistream1.xml-p1p41242.bz2"
    index = tmp_path / "enwiki-20240101-pages-articles-multistream-index1.txt-p1p41242.bz2"
    index.write_bytes(b"")
    assert dump.find_index(str(part)) == str(index)


def test_index_that_is_not_an_index(tmp_path):
    bad = tmp_path / "x-multistream-index.txt.bz2"
    bad.write_bytes(bz2.compress(b"718:2566:A\nthis is not an index line\n"))
    with pytest.raises(InputError, match=":2: not an `offset:page_id:title` line"):
        dump.read_index_offsets(str(bad))


def _run_with_deadline(fn, seconds=20):
    """Run fn in a thread; a reader that hangs fails the test instead of blocking it."""
    out = {}

    def target():
        try:
            out["value"] = fn()
        except BaseException as e:    # noqa: BLE001 - handed to the test
            out["error"] = e
    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), "reader hung"
    if "error" in out:
        raise out["error"]
    return out["value"]


def test_truncated_plain_bz2_is_a_clear_error(tmp_path):
    data = ENWIKI.read_bytes()
    cut = tmp_path / "enwiki-cut-pages-articles.xml.bz2"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated bz2 stream starting at byte 0"):
        _run_with_deadline(lambda: list(dump.iter_pages(str(cut))))


def test_truncated_multistream_names_the_broken_stream(tmp_path):
    data = MULTISTREAM.read_bytes()
    cut = tmp_path / "cut.multistream.xml.bz2"
    cut.write_bytes(data[:10000])                            # inside the stream at 8475
    (tmp_path / "cut.multistream-index.xml.bz2").write_bytes(MULTISTREAM_INDEX.read_bytes())
    with pytest.raises(InputError, match="index .*does not match|outside"):
        dump.plan_splits(str(cut))                           # index points past the end
    _, splits = dump.plan_splits(str(cut), None, 1)
    got, errors = [], []

    def read_all():                                          # one thread for the 9,000 splits
        for s in splits:
            try:
                got.extend(p.page_id for p in dump.read_split(s))
            except InputError as e:
                errors.append(str(e))
    _run_with_deadline(read_all)
    assert got == MULTISTREAM_PAGE_IDS[:10]                  # the two intact page streams
    assert len(errors) == 1 and "truncated bz2 stream starting at byte 8475" in errors[0]


def test_corrupt_bz2_block_is_a_clear_error(tmp_path):
    data = bytearray(MULTISTREAM.read_bytes())
    for i in range(5000, 5040):                              # inside the stream at 4735
        data[i] ^= 0x5A
    bad = tmp_path / "bad.multistream.xml.bz2"
    bad.write_bytes(bytes(data))
    _, splits = dump.plan_splits(str(bad), None, 1 << 20)
    with pytest.raises(InputError, match="corrupt bz2 data in the stream starting at byte 4735"):
        _run_with_deadline(lambda: _ids(splits))


def test_index_offset_that_is_not_a_stream_start(tmp_path):
    bad = tmp_path / "x.multistream.xml.bz2"
    bad.write_bytes(MULTISTREAM.read_bytes())
    (tmp_path / "x.multistream-index.xml.bz2").write_bytes(bz2.compress(b"1000:2566:A\n"))
    _, splits = dump.plan_splits(str(bad))
    with pytest.raises(InputError, match="no bz2 stream starts at byte 1000"):
        list(dump.read_split(splits[0]))


def test_malformed_xml_is_a_clear_error(tmp_path):
    path = write_plain(tmp_path / "dump.xml.bz2")
    text = bz2.decompress(path.read_bytes()).replace(b"</title>", b"</titel>", 1)
    path.write_bytes(bz2.compress(text))
    with pytest.raises(InputError, match="malformed XML: mismatched tag"):
        list(dump.iter_pages(str(path)))


def test_not_a_dump(tmp_path):
    path = tmp_path / "notes.xml.bz2"
    path.write_bytes(bz2.compress(b"<html><body>hello</body></html>"))
    with pytest.raises(InputError, match="no <mediawiki> root|not a MediaWiki"):
        list(dump.iter_pages(str(path)))
    with pytest.raises(InputError, match="not found"):
        dump.read_header(str(tmp_path / "missing.xml.bz2"))
