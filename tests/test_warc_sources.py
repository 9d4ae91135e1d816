"""WARC and WAT sources: real Common Crawl excerpts, checked against a second parser, and damaged files.

The fixtures in tests/fixtures/commoncrawl/ are byte-identical copies of real crawl files (see
PROVENANCE.md there). Expected images come from Python's own html.parser over payloads cut out
of the raw bytes here, not from the readers under test.
"""

import gzip
import html.parser
import json
import re
from collections import Counter
from pathlib import Path
from urllib.parse import urljoin

import pytest

from witcurate.config import Config
from witcurate.filters.url_format import normalize_url
from witcurate.pipeline import warc_records
from witcurate.pipeline.ingest import IngestStage
from witcurate.pipeline.runner import run_stage
from witcurate.pipeline.tables import read_table
from witcurate.pipeline.sources import detect_format, read_source

FIXTURES = Path(__file__).parent / "fixtures" / "commoncrawl"
CC2014 = FIXTURES / "CC-MAIN-20140820021334-00006-ip-10-180-136-8.ec2.internal.warc"
WIKI_WARC = FIXTURES / "whirlwind.warc.gz"
WIKI_WAT = FIXTURES / "whirlwind.warc.wat.gz"
quiet = dict(progress=lambda s: None)


# ---- an independent reading of the fixtures -------------------------------------------------

def raw_responses(data: bytes) -> list[tuple[str, bytes]]:
    """(target uri, HTTP body) of each response record, cut out of the raw bytes by their markers."""
    out = []
    for chunk in re.split(rb"(?=WARC/1\.0\r\n)", data):
        head, _, rest = chunk.partition(b"\r\n\r\n")
        if b"WARC-Type: response" in head:
            uri = re.search(rb"WARC-Target-URI: (\S+)", head).group(1).decode()
            out.append((uri, rest.partition(b"\r\n\r\n")[2]))
    return out


class ImgScan(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.imgs: list[tuple[str | None, str | None]] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            a = dict(attrs)
            self.imgs.append((a.get("src"), a.get("alt")))


def stdlib_images(data: bytes) -> list[tuple[str, list]]:
    pages = []
    for uri, body in raw_responses(data):
        scan = ImgScan()
        scan.feed(body.decode("utf-8", errors="replace"))
        pages.append((uri, scan.imgs))
    return pages


def images(rows) -> list[tuple[str, str]]:
    return [(r["url"], r["caption"]) for r in rows if "error" not in r]


def reasons(rows) -> Counter:
    return Counter(r["error"].partition(":")[0] for r in rows if "error" in r)


# ---- the real excerpts -----------------------------------------------------------------------

def test_cc2014_every_img_with_alt_of_three_html_pages_two_truncated():
    rows = list(read_source(str(CC2014)))
    pages = stdlib_images(CC2014.read_bytes())
    assert [len(imgs) for _, imgs in pages] == [0, 4, 854, 3]          # msn redirect, then three pages
    expected = [(urljoin(uri, src), alt) for uri, imgs in pages for src, alt in imgs]
    assert len(expected) == 861 and all(alt for _, alt in expected)
    assert images(rows) == expected                                       # same urls, same alt, same order
    assert reasons(rows) == {"warc_truncated": 2, "warc_not_html": 1}
    assert Counter(r["page_url"] for r in rows if "error" not in r) == {
        "http://0pointer.de/photos/?gallery=Australia&photo=496": 4,
        "http://0pointer.de/photos/?gallery=Thailand%202011-01&photo=726&show_thumbs=yes&exif_style=": 854,
        "http://0x20.be/Special:WhatLinksHere/Thread:Talk:Gentse_feesten/foo": 3}
    assert ("http://0pointer.de/photos/galleries/Australia/lq/img-496.jpg", "496") in expected   # relative src


def test_wikipedia_2024_page_has_13_imgs_7_with_alt():
    rows = list(read_source(str(WIKI_WARC)))
    ((uri, imgs),) = stdlib_images(gzip.decompress(WIKI_WARC.read_bytes()))
    assert uri == "https://an.wikipedia.org/wiki/Escopete" and len(imgs) == 13
    assert images(rows) == [(urljoin(uri, src), alt or "") for src, alt in imgs]
    assert sum(1 for _, alt in images(rows) if alt) == 7 and reasons(rows) == {}
    assert {r["page_url"] for r in rows} == {uri}


def test_wat_2024_request_record_yields_nothing_and_no_error():
    assert list(read_source(str(WIKI_WAT))) == []


def test_ingest_stage_on_the_2014_warc_balances_and_keeps_page_urls(tmp_path):
    m = run_stage(IngestStage(), Config(), str(tmp_path / "ingest"), {"in": str(CC2014)}, **quiet)
    c = m["counts"]
    assert c["in"] == 861 + 3 == c["kept"] + c["rejected"]
    assert c["reasons"]["warc_truncated"] == 2 and c["reasons"]["warc_not_html"] == 1
    kept = read_table(str(tmp_path / "ingest")).to_pylist()
    assert kept and all(r["page_url"].startswith("http://0") for r in kept)
    assert {r["url"] for r in kept} <= {normalize_url(urljoin(u, s))
                                        for u, imgs in stdlib_images(CC2014.read_bytes()) for s, _ in imgs}


def test_table_sources_get_a_null_page_url(tmp_path):
    (tmp_path / "a.jsonl").write_text(json.dumps({"url": "http://a.com/1.jpg", "caption": "three pink hearts"}))
    run_stage(IngestStage(), Config(), str(tmp_path / "ingest"), {"in": str(tmp_path / "a.jsonl")}, **quiet)
    (row,) = read_table(str(tmp_path / "ingest")).to_pylist()
    assert row["page_url"] is None


@pytest.mark.parametrize("name,fmt", [("x.warc.gz", "warc"), ("x.warc", "warc"), ("x.warc.zst", "warc"),
                                      ("x.warc.wat.gz", "wat"), ("x.wat", "wat"), ("x.csv.gz", "csv")])
def test_format_by_name(name, fmt):
    assert detect_format(name) == fmt


# ---- generated WARC and WAT files --------------------------------------------------------------

def warc_record(rtype: str, uri: str, block: bytes, length: int | None = None, extra: str = "",
                content_type: str = "application/http; msgtype=response") -> bytes:
    head = (f"WARC/1.0\r\nWARC-Type: {rtype}\r\nWARC-Record-ID: <urn:uuid:{abs(hash((uri, block))):032x}>\r\n"
            f"WARC-Date: 2024-05-01T00:00:00Z\r\nWARC-Target-URI: {uri}\r\n{extra}"
            f"Content-Type: {content_type}\r\nContent-Length: {len(block) if length is None else length}\r\n\r\n")
    return head.encode() + block + b"\r\n\r\n"


def http_response(body: bytes, headers: str = "Content-Type: text/html") -> bytes:
    return f"HTTP/1.1 200 OK\r\n{headers}\r\n\r\n".encode() + body


def page(uri: str, body: bytes, headers: str = "Content-Type: text/html", **kw) -> bytes:
    return warc_record("response", uri, http_response(body, headers), **kw)


def write_gz(path: Path, records: list[bytes]) -> str:
    path.write_bytes(b"".join(gzip.compress(r) for r in records))      # one gzip member per record
    return str(path)


def alt_page(n: int, prefix: str = "p") -> bytes:
    return b"<html><body>" + b"".join(
        f'<img src="/{prefix}{i}.jpg" alt="{prefix} photo {i}">'.encode() for i in range(n)) + b"</body></html>"


def test_cut_gzip_member_yields_the_records_before_it_and_one_reject(tmp_path):
    data = WIKI_WARC.read_bytes()
    bad = tmp_path / "cut.warc.gz"
    bad.write_bytes(data[:10_000])                                     # inside the response's member
    rows = list(read_source(str(bad)))
    assert images(rows) == [] and reasons(rows) == {"warc_record_cut": 1}
    assert "ends after" in rows[0]["error"] and rows[0]["page_url"] == "https://an.wikipedia.org/wiki/Escopete"


def test_damaged_gzip_member_stops_reading_with_one_reject(tmp_path):
    records = [page("http://a.org/1", alt_page(2, "a")), page("http://b.org/2", alt_page(3, "b")),
               page("http://c.org/3", alt_page(4, "c"))]
    members = [gzip.compress(r) for r in records]
    broken = members[1][:20] + bytes(b ^ 0x55 for b in members[1][20:40]) + members[1][40:]
    path = tmp_path / "bad.warc.gz"
    path.write_bytes(members[0] + broken + members[2])
    rows = list(read_source(str(path)))
    assert [u for u, _ in images(rows)] == ["http://a.org/a0.jpg", "http://a.org/a1.jpg"]
    assert reasons(rows) == {"warc_read_error": 1} and "rest of the file" in rows[-1]["error"]


def test_content_length_that_lies(tmp_path):
    good = [page("http://a.org/1", alt_page(2, "a")), page("http://b.org/2", alt_page(3, "b"))]
    short = page("http://s.org/", alt_page(5, "s"), length=40)           # the next "header" is page bytes
    rows = list(read_source(write_gz(tmp_path / "short.warc.gz", [good[0], short, good[1]])))
    assert reasons(rows) == {"warc_read_error": 1}
    assert {u.split("/")[2] for u, _ in images(rows)} <= {"a.org", "s.org"}  # b.org's page is past the damage
    long_ = page("http://l.org/", alt_page(5, "l"), length=10_000)      # promises more than the file holds
    plain = tmp_path / "long.warc"
    plain.write_bytes(good[0] + long_ + good[1])
    rows = list(read_source(str(plain)))
    assert reasons(rows) == {"warc_record_cut": 1}
    assert [u for u, _ in images(rows)] == ["http://a.org/a0.jpg", "http://a.org/a1.jpg"]   # nothing misattributed


def test_a_file_that_is_not_warc_is_one_source_unreadable(tmp_path):
    junk = [b"\x00\x01garbage" * 100, b"hello, this is text\n" * 50, gzip.compress(b"not a warc either\n" * 50)]
    for i, content in enumerate(junk):
        (tmp_path / f"junk{i}.warc.gz").write_bytes(content)
    write_gz(tmp_path / "ok.warc.gz", [page("http://a.org/1", alt_page(3, "a"))])
    (tmp_path / "empty.warc.gz").write_bytes(b"")
    m = run_stage(IngestStage(), Config(), str(tmp_path / "ingest"), {"in": str(tmp_path / "*.warc.gz")}, **quiet)
    c = m["counts"]
    assert c["in"] == 3 + 3 == c["kept"] + c["rejected"] and c["reasons"] == {"source_unreadable": 3}
    details = [json.loads(r["record"])["source"] for r in read_table(str(tmp_path / "ingest" / "rejects")).to_pylist()]
    assert sorted(Path(d).name for d in details) == ["junk0.warc.gz", "junk1.warc.gz", "junk2.warc.gz"]


def test_non_html_responses_and_broken_content_codings_are_rejects(tmp_path):
    body = alt_page(2, "g")
    rows = list(read_source(write_gz(tmp_path / "x.warc.gz", [
        page("http://a.org/pic.jpg", b"\xff\xd8\xff\xe0JFIF", headers="Content-Type: image/jpeg"),
        page("http://a.org/doc", b"%PDF-1.4", headers="Content-Type: application/pdf"),
        page("http://g.org/", gzip.compress(body), headers="Content-Type: text/html\r\nContent-Encoding: gzip"),
        page("http://b.org/", b"\x1f\x8b\x08garbage", headers="Content-Type: text/html\r\nContent-Encoding: gzip"),
        page("http://k.org/", b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body),
             headers="Content-Type: text/html\r\nTransfer-Encoding: chunked"),
        warc_record("request", "http://a.org/", b"GET / HTTP/1.1\r\n\r\n", content_type="application/http")])))
    assert reasons(rows) == {"warc_not_html": 2, "http_decode_error": 1}
    assert "image/jpeg, HTTP 200" in rows[0]["error"]
    assert [u for u, _ in images(rows)] == ["http://g.org/g0.jpg", "http://g.org/g1.jpg",
                                            "http://k.org/g0.jpg", "http://k.org/g1.jpg"]


def test_a_payload_over_the_cap_keeps_the_images_of_its_first_part(tmp_path, monkeypatch):
    monkeypatch.setattr(warc_records, "MAX_PAYLOAD_BYTES", 100)
    body = alt_page(6, "z")                  # <img> tags of ~35 bytes each after a 12-byte <html><body>
    rows = list(read_source(write_gz(tmp_path / "x.warc.gz", [page("http://z.org/", body)])))
    assert 1 <= len(images(rows)) < 6 and reasons(rows) == {"record_too_large": 1}


# ---- charsets, bases, attributes -------------------------------------------------------------

@pytest.mark.parametrize("headers,head,body_alt,expected", [
    ("Content-Type: text/html; charset=windows-1252", "", b"caf\xe9 au lait", "café au lait"),
    ("Content-Type: text/html; charset=iso-8859-1", "", b"\x93quoted\x94 text", "“quoted” text"),  # WHATWG: 1252
    ("Content-Type: text/html", '<meta charset="windows-1252">', b"caf\xe9 au lait", "café au lait"),
    ("Content-Type: text/html", '<meta http-equiv="Content-Type" content="text/html; charset=koi8-r">',
     "кот на окне".encode("koi8-r"), "кот на окне"),
    ("Content-Type: text/html; charset=utf-8", '<meta charset="windows-1252">', "café au lait".encode(), "café au lait"),
    ("Content-Type: text/html", "", "café au lait".encode(), "café au lait"),       # undeclared, valid UTF-8
    ("Content-Type: text/html", "", b"caf\xe9 au lait", "café au lait"),             # undeclared, not UTF-8
    ("Content-Type: text/html; charset=x-no-such", "", "café au lait".encode(), "café au lait"),
])
def test_declared_charset_is_honoured(tmp_path, headers, head, body_alt, expected):
    body = f"<html><head>{head}</head><body><img src='/c.jpg' alt='".encode() + body_alt + b"'></body></html>"
    rows = list(read_source(write_gz(tmp_path / "x.warc.gz", [page("http://a.org/", body, headers=headers)])))
    assert images(rows) == [("http://a.org/c.jpg", expected)]


@pytest.mark.parametrize("base,expected", [
    ("javascript:alert(1)", "http://site.org/dir/img/a.jpg"),
    ("ftp://files.org/pub/", "http://site.org/dir/img/a.jpg"),
    ("data:text/html,x", "http://site.org/dir/img/a.jpg"),
    ("https://cdn.org/assets/", "https://cdn.org/assets/img/a.jpg"),
    ("/static/", "http://site.org/static/img/a.jpg"),
])
def test_base_href_counts_only_when_http(tmp_path, base, expected):
    body = f'<html><head><base href="{base}"></head><body><img src="img/a.jpg" alt="a red kite"></body></html>'
    rows = list(read_source(write_gz(tmp_path / "x.warc.gz", [page("http://site.org/dir/page", body.encode())])))
    assert images(rows) == [(expected, "a red kite")]


def test_which_img_attributes_count(tmp_path):
    body = (b'<img src="/plain.jpg" alt="plain" srcset="/plain-2x.jpg 2x, /plain-3x.jpg 3x">'
            b'<img src="data:image/gif;base64,R0lGOD" data-src="/lazy.jpg" alt="lazy">'
            b'<img data-src="/only-lazy.jpg" alt="only lazy">'
            b'<img src="  /spaced.jpg  " alt="  spaced  ">'
            b'<img alt="no source at all">'
            b'<img src="/no-alt.jpg">')
    rows = list(read_source(write_gz(tmp_path / "x.warc.gz", [page("http://s.org/", body)])))
    assert images(rows) == [("http://s.org/plain.jpg", "plain"), ("http://s.org/lazy.jpg", "lazy"),
                            ("http://s.org/only-lazy.jpg", "only lazy"), ("http://s.org/spaced.jpg", "  spaced  "),
                            (None, "no source at all"), ("http://s.org/no-alt.jpg", "")]


def test_a_real_parser_sees_what_a_browser_sees(tmp_path):
    """Markup inside <title>/<textarea> is text, and a tag cut by the end of the page is no tag."""
    body = (b"<html><head><title>x <img src='/t.jpg' alt='in title'></title></head><body>"
            b"<textarea><img src='/ta.jpg' alt='in textarea'></textarea>"
            b"<!-- <img src='/c.jpg' alt='in comment'> -->"
            b"<img src='/real.jpg' alt='the real one'>"
            b"<img src='/cut.jpg' alt='cut off by the end of the")
    scan = ImgScan()
    scan.feed(body.decode())
    assert len(scan.imgs) == 3                                       # a plain tag scan finds three
    rows = list(read_source(write_gz(tmp_path / "x.warc.gz", [
        page("http://s.org/", body, extra="WARC-Truncated: length\r\n")])))
    assert images(rows) == [("http://s.org/real.jpg", "the real one")]
    assert reasons(rows) == {"warc_truncated": 1}


# ---- WAT -------------------------------------------------------------------------------------

def wat_record(uri: str, payload_meta: dict, warc_meta: dict | None = None) -> bytes:
    env = {"Envelope": {"WARC-Header-Metadata": {"WARC-Type": "response", "WARC-Target-URI": uri, **(warc_meta or {})},
                        "Payload-Metadata": payload_meta}}
    return warc_record("metadata", uri, json.dumps(env).encode(), content_type="application/json")


def html_meta(links: list[dict], base: str | None = None) -> dict:
    head = {"Base": base} if base else {}
    return {"HTTP-Response-Metadata": {"Headers": {"Content-Type": "text/html"},
                                       "HTML-Metadata": {"Head": head, "Links": links}}}


def test_wat_records_cut_json_non_html_truncated_and_bases(tmp_path):
    img = {"path": "IMG@/src", "url": "i.jpg", "alt": "a grey heron"}
    whole = json.dumps({"Envelope": {"WARC-Header-Metadata": {"WARC-Target-URI": "http://cut.org/"},
                                     "Payload-Metadata": html_meta([img])}}).encode()
    cut_json = warc_record("metadata", "http://cut.org/", whole[:-25], content_type="application/json")  # honest length
    rows = list(read_source(write_gz(tmp_path / "x.warc.wat.gz", [
        wat_record("http://a.org/p/", html_meta([img, {"path": "A@/href", "url": "/x"}])),
        wat_record("http://b.org/p/", html_meta([img], base="javascript:void(0)")),
        wat_record("http://c.org/p/", html_meta([img], base="http://cdn.c.org/")),
        wat_record("http://d.org/doc.pdf", {"HTTP-Response-Metadata": {"Headers": {"Content-Type": "application/pdf"}}}),
        wat_record("http://t.org/", html_meta([img]), {"WARC-Truncated": "length"}),
        wat_record("http://r.org/", {"HTTP-Request-Metadata": {}}),
        wat_record("http://n.org/", html_meta([{"path": "IMG@/src", "url": "/n.jpg", "alt": 5}])),
        wat_record("http://m.org/", html_meta([{"path": "IMG@/src", "url": 7, "alt": "x"}])),
        wat_record("http://o.org/", html_meta(["not a link"])),
        cut_json])))
    assert images(rows) == [("http://a.org/p/i.jpg", "a grey heron"), ("http://b.org/p/i.jpg", "a grey heron"),
                            ("http://cdn.c.org/i.jpg", "a grey heron"), ("http://t.org/i.jpg", "a grey heron"),
                            ("http://n.org/n.jpg", "")]
    assert reasons(rows) == {"warc_not_html": 1, "warc_truncated": 1, "invalid_wat_json": 3}
    assert [r["page_url"] for r in rows if "error" not in r][0] == "http://a.org/p/"


def test_wat_file_cut_inside_a_record(tmp_path):
    img = {"path": "IMG@/src", "url": "/i.jpg", "alt": "a grey heron"}
    data = b"".join(wat_record(f"http://{h}.org/", html_meta([img])) for h in "ab")
    (tmp_path / "x.wat").write_bytes(data[:-60])
    rows = list(read_source(str(tmp_path / "x.wat")))
    assert images(rows) == [("http://a.org/i.jpg", "a grey heron")] and reasons(rows) == {"warc_record_cut": 1}


def test_damaged_copies_of_the_real_files_never_crash(tmp_path):
    """Flipped bytes, cuts, insertions: every copy reads to rows and rejects, or is one unreadable file."""
    import os
    import random
    from witcurate.pipeline.warc_records import NotAWarcFile
    rng = random.Random(13)
    outcomes = Counter()
    for i in range(40):
        original = rng.choice([CC2014, WIKI_WARC, WIKI_WAT])
        data = bytearray(original.read_bytes())
        pos = rng.randrange(len(data))
        kind = ("flip", "cut", "insert")[i % 3]
        if kind == "flip":
            for _ in range(8):
                data[rng.randrange(len(data))] = rng.randrange(256)
        elif kind == "cut":
            del data[pos:]
        else:
            data[pos:pos] = os.urandom(64)
        path = tmp_path / f"{i}.{original.name}"
        path.write_bytes(bytes(data))
        try:
            rows = list(read_source(str(path)))
        except NotAWarcFile:
            outcomes["unreadable"] += 1
            continue
        assert all(set(r) >= {"url", "caption", "source", "page_url"} for r in rows)
        outcomes.update(reasons(rows) or {"clean": 1})
    assert outcomes["warc_read_error"] + outcomes["warc_record_cut"] > 0


# ---- resolving image URLs ----------------------------------------------------------------------

def test_resolver_gives_exactly_what_urljoin_gives():
    """The fast resolver against urljoin: the awkward URL forms in pairs, alone and in mixed pages,
    and the real pages' links."""
    import itertools
    import random
    from witcurate.pipeline.url_base import Resolver, absolute
    bases = ["http://a.org", "http://a.org/b/c", "https://a.org/b/c/?q=1#f", "http://a.org/b/c;p?q",
             "http://a.org/b//c/d", "http://u@a.org:8080/x", "HTTP://A.org/x", "http://a.org/x y/z",
             "ftp://a.org/x/", "javascript:void(0)", "", "http://[::1]/a/b", "http://a.org/b/..", "http://:80/x"]
    atoms = ["", "/", "//", ".", "..", "./", "../", "a", "b.jpg", "?", "#", ";", "?x=1", "#f", ";p", ":", "c:",  # boundary-ok: URL parts
             "http:", "https://", "//cdn.org", " ", "\\", "%20", "é", "\t", "x.", ".x", "HTTP://Q.org", "[", "\x00"]
    urls = ["".join(c) for k in (1, 2) for c in itertools.product(atoms, repeat=k)]
    rng = random.Random(7)
    for base in bases:
        resolver = Resolver(base)
        assert [resolver.all([u])[0] for u in urls] == [absolute(base, u) for u in urls]
        for _ in range(200):
            page = rng.sample(urls, rng.randint(1, 8))
            assert resolver.all(page) == [absolute(base, u) for u in page]
    common = ["a", "b.jpg", "/a", "/b.jpg", "./a", "./b.jpg", "//cdn.org/b.jpg", "http://x.org/a", "a?x=1",
              "a/b.jpg#f", "a;p", "%20.jpg", "a b.jpg", "https://x.org:8443/a?b", "/a:b", "a:b/c"]
    for base in bases:
        resolver = Resolver(base)
        for _ in range(300):                       # mostly the common forms, now and then an awkward one
            page = rng.sample(common, rng.randint(1, 6)) + ([rng.choice(urls)] if rng.random() < 0.3 else [])
            rng.shuffle(page)
            assert resolver.all(page) == [absolute(base, u) for u in page]


def test_real_pages_resolve_without_urljoin(monkeypatch):
    """The real pages' links take the fast path (and give urljoin's answers), but for the one page
    with a "../" in a link, which goes to urljoin whole."""  # boundary-ok: a URL, not a path
    from witcurate.pipeline import url_base
    calls = []
    monkeypatch.setattr(url_base, "absolute", lambda base, url: calls.append(url) or urljoin(base, url))
    for uri, imgs in stdlib_images(CC2014.read_bytes()) + stdlib_images(gzip.decompress(WIKI_WARC.read_bytes())):
        srcs = [src for src, _ in imgs if src]
        assert url_base.Resolver(uri).all(srcs) == [urljoin(uri, src) for src in srcs]
    assert calls == ["/smw/skins/vector/images/search-ltr.png?303", "/smw/skins/common/images/poweredby_mediawiki_88x31.png",
                     "/smw/extensions/SemanticMediaWiki/includes/../resources/images/smw_button.png"]
