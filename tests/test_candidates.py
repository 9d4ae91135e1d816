"""Ingest: sources in every format, normalisation, rules with reasons, URL dedupe, accounting."""

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from witcurate.config import Config
from witcurate.errors import InputError
from witcurate.filters.base import Drop
from witcurate.filters.text import caption_rules, normalize_caption
from witcurate.filters.url_format import normalize_url, url_rules
from witcurate.pipeline.ingest import IngestStage
from witcurate.pipeline.runner import run_stage
from witcurate.pipeline.tables import read_table
from witcurate.pipeline.sources import read_source

quiet = dict(progress=lambda s: None)


@pytest.mark.parametrize("caption,reason", [
    ("IMG_1234.jpg", "caption_filename"), ("DSC00042.JPG", "caption_filename"),
    ("image", "caption_boilerplate"), ("Click here", "caption_boilerplate"),
    ("dog", "caption_too_short"), ("", "caption_empty"), ("12345 67890", "caption_no_letters"),
    ("a " * 600, "caption_too_long"),
])
def test_caption_rules_name_the_reason(caption, reason):
    assert caption_rules(normalize_caption(caption), 2, 5, 1000) == Drop(reason)


def test_caption_normalisation_fixes_mojibake_entities_whitespace():
    assert normalize_caption("caf\u00c3\u00a9 &amp;  a\tred\n dog\x07") == "café & a red dog"
    assert caption_rules("two red circles on the grass", 2, 5, 1000) is True


@pytest.mark.parametrize("url,reason", [
    ("ftp://h/x.jpg", "url_scheme"), ("http://u:p@h.com/x.jpg", "url_credentials"),
    ("http:///x.jpg", "url_no_host"), ("http://h.com:99999/x", "url_unparseable"),
    ("http://h.com/" + "a" * 3000, "url_too_long"), ("", "url_empty"),
])
def test_url_rules(url, reason):
    assert url_rules(url, 2048) == Drop(reason)


def test_url_normalisation_is_idempotent():
    url = normalize_url("HTTP://Example.COM:80/a b/ü.jpg?x=1#frag")
    assert url == "http://example.com/a%20b/%C3%BC.jpg?x=1"
    assert normalize_url(url) == url


def _wat(path):
    meta = {"Envelope": {"WARC-Header-Metadata": {"WARC-Target-URI": "http://site.org/page/"},
            "Payload-Metadata": {"HTTP-Response-Metadata": {"HTML-Metadata": {"Links": [
                {"path": "IMG@/src", "url": "img/cat.jpg", "alt": "a black cat on a sofa"},
                {"path": "A@/href", "url": "/other", "text": "x"},
                {"path": "IMG@/src", "url": "http://cdn.org/d.png", "alt": "two dogs"}]}}}}}
    body = json.dumps(meta).encode()
    rec = (b"WARC/1.0\r\nWARC-Type: metadata\r\nContent-Type: application/json\r\n"
           + f"Content-Length: {len(body)}\r\n\r\n".encode() + body + b"\r\n\r\n")
    info = b"WARC/1.0\r\nWARC-Type: warcinfo\r\nContent-Length: 3\r\n\r\nabc\r\n\r\n"
    with gzip.open(path, "wb") as f:
        f.write(info + rec)


def test_wat_reader_resolves_image_links(tmp_path):
    _wat(tmp_path / "x.warc.wat.gz")
    rows = list(read_source(str(tmp_path / "x.warc.wat.gz")))
    assert [(r["url"], r["caption"]) for r in rows] == [
        ("http://site.org/page/img/cat.jpg", "a black cat on a sofa"), ("http://cdn.org/d.png", "two dogs")]


def test_ingest_stage_all_formats_balance(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    rows = [{"url": "http://a.com/1.jpg", "caption": "two red circles on the grass"},
            {"url": "http://A.com/1.jpg#top", "caption": "two red circles on the grass"},   # dup after normalising
            {"url": "http://a.com/2.jpg", "caption": "IMG_2.jpg"},
            {"url": None, "caption": "a blue star in the sky"}]
    pq.write_table(pa.Table.from_pylist(rows), src / "a.parquet")
    (src / "b.csv").write_text('URL,TEXT\nhttp://b.com/1.jpg,"a green square, on snow"\nhttp://b.com/2.jpg,\n')
    (src / "c.jsonl").write_text(json.dumps({"url": "http://c.com/1.jpg", "caption": "three pink hearts"}) + "\n{oops\n")
    (src / "d.parquet").write_bytes(b"PAR1 not really")
    _wat(src / "e.warc.wat.gz")
    cfg = Config()
    m = run_stage(IngestStage(), cfg, str(tmp_path / "out" / "ingest"),
                  {"source0": str(src / "*.parquet"), "source1": str(src / "c.jsonl"),
                   "source2": str(src / "e.warc.wat.gz")}, **quiet)
    c = m["counts"]
    assert c["in"] == 4 + 2 + 1 + 2 == c["kept"] + c["rejected"]  # + corrupt parquet file counted once
    assert c["reasons"]["duplicate_url"] == 1 and c["reasons"]["caption_filename"] == 1
    assert c["reasons"]["missing_url"] == 1 and c["reasons"]["source_unreadable"] == 1
    assert c["reasons"]["invalid_json"] == 1
    kept = read_table(str(tmp_path / "out" / "ingest")).to_pylist()
    assert {r["url"] for r in kept} >= {"http://a.com/1.jpg", "http://c.com/1.jpg", "http://cdn.org/d.png"}
    assert all(len(r["uid"]) == 32 for r in kept)
    # csv with other column names
    cfg.ingest.url_col, cfg.ingest.caption_col = "URL", "TEXT"
    m = run_stage(IngestStage(), cfg, str(tmp_path / "out" / "ingest_csv"), {"in": str(src / "b.csv")}, **quiet)
    assert m["counts"]["kept"] == 1 and m["counts"]["reasons"] == {"caption_empty": 1}


def test_ingest_without_files_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="no candidate files"):
        run_stage(IngestStage(), Config(), str(tmp_path / "ingest"), {"in": str(tmp_path / "*.parquet")}, **quiet)
    pq.write_table(pa.table({"url": pa.array([], pa.string()), "caption": pa.array([], pa.string())}),
                   tmp_path / "empty.parquet")
    with pytest.raises(InputError, match="hold no rows"):
        run_stage(IngestStage(), Config(), str(tmp_path / "ingest"), {"in": str(tmp_path / "empty.parquet")}, **quiet)


def test_english_only_rule():
    from witcurate.filters.text import is_english
    assert is_english("a photo of three blue stars in the night sky") is True
    assert is_english("zwei rote Kreise auf dem grünen Gras") == Drop("caption_not_english")
    assert is_english("12 34") is True                       # nothing to judge: other rules decide


def test_wat_image_without_alt_text_is_a_reject(tmp_path):
    _wat(tmp_path / "x.warc.wat.gz")
    meta = {"Envelope": {"WARC-Header-Metadata": {"WARC-Target-URI": "http://s.org/"},
            "Payload-Metadata": {"HTTP-Response-Metadata": {"HTML-Metadata": {"Links": [
                {"path": "IMG@/src", "url": "/noalt.jpg"}]}}}}}
    body = json.dumps(meta).encode()
    with gzip.open(tmp_path / "y.warc.wat.gz", "wb") as f:
        f.write(b"WARC/1.0\r\nWARC-Type: metadata\r\n" + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    m = run_stage(IngestStage(), Config(), str(tmp_path / "ingest"), {"in": str(tmp_path / "*.wat.gz")}, **quiet)
    assert m["counts"]["in"] == 3 and m["counts"]["reasons"] == {"caption_empty": 1}


def test_invalid_utf8_and_null_caption_land_in_rejects(tmp_path):
    (tmp_path / "a.jsonl").write_bytes(
        b'{"url": "http://a.com/1.jpg", "caption": null}\n'
        b'{"url": "http://a.com/2.jpg", "caption": "caf\xe9 au lait \xff on a table"}\n')
    m = run_stage(IngestStage(), Config(), str(tmp_path / "ingest"), {"in": str(tmp_path / "a.jsonl")}, **quiet)
    assert m["counts"]["in"] == 2 and m["counts"]["reasons"] == {"missing_caption": 1}
    (row,) = read_table(str(tmp_path / "ingest")).to_pylist()
    assert row["caption"].startswith("caf") and "\ufffd" in row["caption"]   # replaced, never a crash
