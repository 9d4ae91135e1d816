"""The demo world: deterministic, in the real formats, with the noise its ground truth claims."""

from __future__ import annotations

import bz2
import collections
import gzip
import hashlib
import io
import json
import math
import os
import re
import struct
import tarfile
import xml.etree.ElementTree as ET

import imagehash
import mwparserfromhell
import pyarrow.parquet as pq
import pytest
from PIL import Image

from witcurate.config import DemoSection
from witcurate.demo import pageviews, wiki
from witcurate.demo.vocab import COLOURS, SHAPES, caption_words
from witcurate.demo.world import FAULT_KINDS, KINDS, NO_IMAGE_KINDS, generate_world
from witcurate.errors import UserError
from witcurate.pipeline.sources import read_source
from witcurate.queries.tokenize import words_and_bigrams

NS = "{http://www.mediawiki.org/xml/export-0.10/}"
POOL = 400


def small_cfg(root, seed=0, port=18999) -> DemoSection:
    return DemoSection(root=str(root), host="127.0.0.1", port=port, pool_size=POOL,
                       trusted_size=120, eval_size=40, image_size=96, seed=seed)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo") / "world"
    info = generate_world(small_cfg(root), progress=lambda m: None)
    return root, info


def _tree_digest(root) -> dict[str, str]:
    """sha256 of every file under root except world.json (which records the wall time)."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            if rel != "world.json":
                with open(path, "rb") as f:
                    out[rel] = hashlib.sha256(f.read()).hexdigest()
    return out


def _truth(root) -> list[dict]:
    return pq.read_table(os.path.join(root, "truth", "truth.parquet")).to_pylist()


def _served_file(root, url: str) -> str:
    return os.path.join(root, "images", url.rsplit("/", 1)[1])


# --------------------------------------------------------------------------- determinism

def tiny_cfg(root, seed=0) -> DemoSection:
    """A world small enough to generate three times in a test (2 CPU-s each against 5 to 7)."""
    return DemoSection(root=str(root), host="127.0.0.1", port=18999, pool_size=60, trusted_size=12,
                       eval_size=8, image_size=96, seed=seed)


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    digests = {}
    for name, seed in (("first", 0), ("again", 0), ("other", 1)):
        generate_world(tiny_cfg(tmp_path / name, seed), progress=lambda m: None)
        digests[name] = _tree_digest(tmp_path / name)
    first, second, third = digests["first"], digests["again"], digests["other"]
    assert first == second
    assert any(k.startswith("images/") for k in first) and "pool/candidates.parquet" in first
    assert third["pool/candidates.parquet"] != first["pool/candidates.parquet"]
    first_images = {v for k, v in first.items() if k.startswith("images/")}
    shared = {v for k, v in third.items() if k.startswith("images/")} & first_images
    assert len(shared) <= 1              # only the decompression bomb, the same in every world


def test_generation_is_idempotent_and_refuses_foreign_dirs(world, tmp_path):
    root, info = world
    before = os.stat(root / "pool" / "candidates.parquet").st_mtime_ns
    messages = []
    again = generate_world(small_cfg(root), progress=messages.append)
    assert again == info
    assert os.stat(root / "pool" / "candidates.parquet").st_mtime_ns == before
    assert any("up to date" in m for m in messages)

    foreign = tmp_path / "not_a_world"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(UserError):
        generate_world(small_cfg(foreign), progress=lambda m: None)
    assert (foreign / "notes.txt").read_text() == "mine"


def test_world_json_and_urls(world):
    root, info = world
    assert info["base_url"] == "http://127.0.0.1:18999/"
    assert info["params"]["pool_size"] == POOL and info["params"]["seed"] == 0
    table = pq.read_table(root / "pool" / "candidates.parquet")
    assert table.column_names == ["url", "caption"]
    assert table.num_rows == POOL
    urls = table.column("url").to_pylist()
    # the demo's hosts: 127.0.0.1 (demo.host) and the next seven, each serving /i/ (robots.txt
    # decides about /private/i/)
    hosts = [f"http://127.0.0.{i}:18999/" for i in range(1, 9)]
    assert all(re.fullmatch(r"http://127\.0\.0\.[1-8]:18999(/private)?/i/[0-9a-f]{14}\.(jpg|png)", u) for u in urls)
    assert {u[:len(hosts[0])] for u in urls} == set(hosts)
    assert info["allow_private"] == [h[len("http://"):-1] for h in hosts]
    assert len(set(urls)) == POOL
    for rel in ("dump/" + wiki.DUMP_NAME, "dump/" + wiki.INDEX_NAME, "host.json",
                "truth/truth.parquet", "eval/retrieval-00000.tar", "trusted/trusted-00000.tar",
                "eval/zeroshot/classnames.json", "eval/zeroshot/templates.json"):
        assert (root / rel).is_file(), rel


def test_the_pool_also_comes_as_a_crawl_delivers_it(world):
    # pool/sources/ splits the same candidates over a table, a WARC of HTML pages and a WAT, and
    # the ingest readers (fastwarc, the HTML parser) give back every pair exactly once, unchanged.
    root, info = world
    pool = sorted(tuple(r.values()) for r in pq.read_table(root / "pool" / "candidates.parquet").to_pylist())
    counts, rows = info["sources"]["candidates"], []
    assert sum(counts.values()) == POOL and counts["warc"] > POOL // 8 and counts["wat"] > POOL // 8
    for pattern in info["sources"]["files"]:
        for path in sorted((root).glob(pattern)):
            got = list(read_source(str(path)))
            assert not [r for r in got if r.get("error")], path
            if path.suffix == ".gz":
                assert all(r["page_url"].startswith("http://127.0.0.") for r in got)
            rows += [(r["url"], r["caption"]) for r in got]
    assert sorted(rows) == pool
    with gzip.open(root / "pool" / "sources" / "crawl-00000.warc.gz") as f:
        assert f.read(9) == b"WARC/1.1\r"


# --------------------------------------------------------------------------- ground truth

def test_truth_covers_every_noise_kind_in_proportion(world):
    root, info = world
    rows = _truth(root)
    kinds = collections.Counter(r["kind"] for r in rows)
    assert set(kinds) == set(KINDS)
    assert info["counts"] == {k: kinds[k] for k in KINDS}
    share = {k: v / POOL for k, v in kinds.items()}
    assert 0.30 <= share["clean"] <= 0.40
    assert 0.06 <= share["mismatched"] <= 0.10
    assert 0.02 <= share["junk"] <= 0.06
    assert 0.02 <= share["exact_dup"] <= 0.04 and 0.02 <= share["near_dup"] <= 0.04
    assert 0.10 <= share["semantic_dup"] <= 0.14 and 0.13 <= share["off_target"] <= 0.17
    for kind in FAULT_KINDS:
        assert 0.008 <= share[kind] <= 0.02, kind


def test_truth_rows_mean_what_they_say(world):
    root, _ = world
    rows = _truth(root)
    by_url = {r["url"]: r for r in rows}
    colour_words = set(COLOURS)
    near_distances, copy_distances = [], []
    for r in rows:
        kind = r["kind"]
        path = _served_file(root, r["url"])
        if kind in NO_IMAGE_KINDS or kind == "off_target":
            assert r["true_caption"] is None
        else:
            assert r["true_caption"] and r["colour"] in r["true_caption"]
            assert SHAPES[r["shape"]] in r["true_caption"] or r["shape"] in r["true_caption"]
        if kind in ("clean", "exact_dup", "near_dup", "semantic_dup"):
            assert r["caption"] == r["true_caption"]
        if kind == "off_target":
            # Its alt text is a clean caption (it matches the queries); the image is a banner,
            # chart, logo or screenshot in the caption's colour, showing no shape.
            assert r["style"] in ("banner", "chart", "logo", "screenshot") and r["shape"] is None
            assert colour_words & set(re.findall(r"[a-z]+", r["caption"]))
        else:
            assert r["style"] is None
        if kind == "mismatched":
            assert r["caption"] != r["true_caption"]
            words = set(re.findall(r"[a-z]+", r["caption"]))
            assert not {r["shape"], SHAPES[r["shape"]]} & words
        if kind == "junk":
            assert not colour_words & set(re.findall(r"[a-z]+", r["caption"]))
        if kind in ("exact_dup", "near_dup", "semantic_dup"):
            orig = by_url[r["dup_of"]]
            assert orig["kind"] == "clean" and orig["url"] != r["url"]
            with open(path, "rb") as f, open(_served_file(root, orig["url"]), "rb") as g:
                a, b = f.read(), g.read()
            if kind == "exact_dup":
                assert a == b
            elif kind == "semantic_dup":
                assert a != b and a[:2] == b"\xff\xd8"
                assert (r["count"], r["colour"], r["shape"], r["scene"]) == (
                    orig["count"], orig["colour"], orig["shape"], orig["scene"])
                copy_distances.append(imagehash.phash(Image.open(io.BytesIO(a)))
                                      - imagehash.phash(Image.open(io.BytesIO(b))))
            else:
                assert a != b
                near_distances.append(imagehash.phash(Image.open(io.BytesIO(a)))
                                      - imagehash.phash(Image.open(io.BytesIO(b))))
        else:
            assert r["dup_of"] is None
        if kind in ("http_404", "http_500", "reset", "html", "redirect_private"):
            assert not os.path.exists(path)
        if kind == "tiny":
            assert Image.open(path).size == (24, 24)
        if kind == "oversized":
            with Image.open(path) as im:
                assert sorted(im.size) == [2000, 3000] and im.format == "JPEG"
        if kind == "bomb":
            with open(path, "rb") as f:
                head = f.read(24)
            assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR"
            width, height = struct.unpack(">II", head[16:24])
            assert width * height >= 20_000 * 20_000
            assert os.path.getsize(path) < 200_000
        if r["sha256"] is not None:
            with open(path, "rb") as f:
                blob = f.read()
            assert hashlib.sha256(blob).hexdigest() == r["sha256"]
            assert blob.startswith(b"\x89PNG") if path.endswith(".png") else blob[:2] == b"\xff\xd8"
    # Near duplicates are near under the perceptual hash the dedupe stage uses.
    assert near_distances and sum(d <= 4 for d in near_distances) >= 0.9 * len(near_distances)
    # Semantic duplicates mostly are not (the dedupe stage's max_hamming is 4).
    assert copy_distances and sum(d > 4 for d in copy_distances) >= 0.5 * len(copy_distances)


def test_semantic_duplicates_come_in_groups_up_to_template_spam(world):
    root, _ = world
    rows = _truth(root)
    groups = collections.Counter(r["dup_of"] for r in rows if r["kind"] == "semantic_dup")
    copies = sum(groups.values())
    sizes = sorted(groups.values(), reverse=True)
    assert sizes[0] == round(copies / 3)                 # the template spam: one scene, a third of them
    assert 1 in sizes and len(sizes) >= 5 and max(sizes[1:]) <= 20
    # Clean scenes are distinct while the vocabulary lasts: a copy is the only thing like its original.
    scenes = collections.Counter((r["count"], r["colour"], r["shape"], r["scene"]) for r in rows if r["kind"] == "clean")
    assert max(scenes.values()) == 1


def test_trusted_and_eval_are_disjoint_from_the_pool(world):
    root, _ = world
    pool = {r["sha256"] for r in _truth(root) if r["sha256"]}
    held_out: dict[str, set[str]] = {"trusted": set(), "eval": set()}
    for sub, pattern in (("trusted", ("trusted", "named")), ("eval", "retrieval")):
        for name in sorted(os.listdir(root / sub)):
            if name.startswith(pattern) and name.endswith(".tar"):
                with tarfile.open(root / sub / name) as tar:
                    for m in tar.getmembers():
                        if m.name.endswith(".jpg"):
                            held_out[sub].add(hashlib.sha256(tar.extractfile(m).read()).hexdigest())
    for dirpath, _, files in os.walk(root / "eval" / "zeroshot"):
        for name in files:
            if name.endswith(".jpg"):
                with open(os.path.join(dirpath, name), "rb") as f:
                    held_out["eval"].add(hashlib.sha256(f.read()).hexdigest())
    assert len(held_out["trusted"]) == 120 and len(held_out["eval"]) == 80
    assert pool.isdisjoint(held_out["trusted"]) and pool.isdisjoint(held_out["eval"])
    assert held_out["trusted"].isdisjoint(held_out["eval"])


def test_the_trusted_set_names_a_share_of_off_target_kinds_as_what_they_are(world):
    # 10% of the 120 trusted pairs are banners, charts, logos and screenshots, in their own tar,
    # each captioned with its kind (a curated caption set holds such images under their names).
    root, info = world
    assert info["trusted"] == ["trusted/trusted-00000.tar", "trusted/named-00000.tar"]
    with tarfile.open(root / "trusted" / "named-00000.tar") as tar:
        names = tar.getnames()
        captions = [tar.extractfile(n).read().decode() for n in names if n.endswith(".txt")]
    assert names[:2] == ["n000001.jpg", "n000001.txt"] and len(captions) == 12
    kinds = ("banner", "chart", "logo", "screenshot")
    assert all(sum(k in c for k in kinds) == 1 for c in captions), captions
    assert len({k for c in captions for k in kinds if k in c}) >= 2
    with tarfile.open(root / "trusted" / "trusted-00000.tar") as tar:
        scenes = [n for n in tar.getnames() if n.endswith(".txt")]
    assert len(scenes) == 108


def test_webdataset_tars_and_zeroshot_layout(world):
    root, _ = world
    with tarfile.open(root / "trusted" / "trusted-00000.tar") as tar:
        names = tar.getnames()
        assert names[:4] == ["t000001.jpg", "t000001.txt", "t000002.jpg", "t000002.txt"]
        caption = tar.extractfile("t000001.txt").read().decode()
        img = Image.open(io.BytesIO(tar.extractfile("t000001.jpg").read()))
        assert img.format == "JPEG" and min(img.size) == 96
    assert any(c in caption for c in COLOURS)
    with tarfile.open(root / "eval" / "retrieval-00000.tar") as tar:
        keys = collections.Counter(n.rsplit(".", 1)[0] for n in tar.getnames())
    assert len(keys) == 40 and set(keys.values()) == {2} and min(keys) == "r000001"

    zs = root / "eval" / "zeroshot"
    classes = json.loads((zs / "classnames.json").read_text())
    templates = json.loads((zs / "templates.json").read_text())
    assert classes == list(SHAPES)
    assert sorted(p.name for p in zs.iterdir() if p.is_dir()) == sorted(classes)
    assert templates and all("{}" in t for t in templates)
    assert sum(len(os.listdir(zs / c)) for c in classes) == 40
    assert all(len(os.listdir(zs / c)) >= 40 // len(classes) for c in classes)


# --------------------------------------------------------------------------- the dump

def _iter_pages(fileobj):
    """(title, ns, id, redirect target, text) from a dump file object via iterparse."""
    for _, el in ET.iterparse(fileobj, events=("end",)):
        if el.tag == NS + "page":
            rev = el.find(NS + "revision")
            text_el = rev.find(NS + "text")
            redirect = el.find(NS + "redirect")
            yield {"title": el.findtext(NS + "title"), "ns": int(el.findtext(NS + "ns")),
                   "id": int(el.findtext(NS + "id")),
                   "redirect": redirect.get("title") if redirect is not None else None,
                   "text": text_el.text or "", "bytes": int(text_el.get("bytes"))}
            el.clear()


def test_dump_parses_in_schema_0_10(world):
    root, info = world
    path = root / "dump" / wiki.DUMP_NAME
    with bz2.open(path, "rb") as f:
        head = f.read(400).decode()
    assert head.startswith('<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/"')
    assert 'version="0.10"' in head
    with bz2.open(path, "rb") as f:
        pages = list(_iter_pages(f))
    assert len(pages) == info["dump"]["pages"] > 900
    assert all(p["bytes"] == len(p["text"].encode("utf-8")) for p in pages)
    ids = [p["id"] for p in pages]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    titles = {p["title"] for p in pages}
    assert {"Red circle", "Night sky", "Red", "Circle"} <= titles
    redirects = [p for p in pages if p["redirect"]]
    assert redirects and all(p["text"].startswith("#REDIRECT [[") for p in redirects)
    other = [p for p in pages if p["ns"] != 0]
    assert {p["ns"] for p in other} >= {1, 14}
    assert all(wiki.namespace_of(p["title"]) == p["ns"] for p in pages)
    article = next(p["text"] for p in pages if p["title"] == "Red circle")
    for markup in ("{{Infobox", "<ref>", "[[File:", "'''red circle'''", "== Use ==", "[[Circle|circle]]"):
        assert markup in article, markup
    assert any("{|" in p["text"] and "|}" in p["text"] for p in pages)


def test_every_stream_decompresses_alone_from_the_index(world):
    root, _ = world
    data = (root / "dump" / wiki.DUMP_NAME).read_bytes()
    index = bz2.decompress((root / "dump" / wiki.INDEX_NAME).read_bytes()).decode("utf-8")
    lines = index.splitlines()
    by_offset: dict[int, list[int]] = collections.defaultdict(list)
    for line in lines:
        offset, page_id, title = line.split(":", 2)
        assert title
        by_offset[int(offset)].append(int(page_id))
    offsets = sorted(by_offset)
    assert offsets[0] > 0                                   # the header is a stream of its own

    def one_stream(start):
        dec = bz2.BZ2Decompressor()
        out = dec.decompress(data[start:])
        assert dec.eof
        return out.decode("utf-8"), len(data) - start - len(dec.unused_data)

    header, header_len = one_stream(0)
    assert header.rstrip().endswith("</siteinfo>") and "<page>" not in header
    assert header_len == offsets[0]
    end = None
    for i, off in enumerate(offsets):
        text, n = one_stream(off)
        assert i == 0 or off == end
        end = off + n
        assert 0 < len(by_offset[off]) <= wiki.PAGES_PER_STREAM
        doc = ET.fromstring(f'<mediawiki xmlns="{NS[1:-1]}">{text}</mediawiki>')
        assert [int(p.findtext(NS + "id")) for p in doc.findall(NS + "page")] == by_offset[off]
    footer, _ = one_stream(end)
    assert footer.strip() == "</mediawiki>"


def _prose(text: str) -> str:
    """Article text without templates, refs, tables, file and category links (as a careful
    extractor does); one line per paragraph."""
    code = mwparserfromhell.parse(text)
    for node in code.filter_templates(recursive=False):
        code.remove(node)
    for node in code.filter_tags(recursive=False):
        if str(node.tag).lower() in ("ref", "table"):
            code.remove(node)
    for node in code.filter_wikilinks(recursive=False):
        if str(node.title).split(":")[0].strip().lower() in ("file", "category"):
            code.remove(node)
    return code.strip_code(normalize=True, collapse=True).replace("'''", "")


def test_dump_vocabulary_meets_the_demo_query_thresholds(world):
    """configs/demo.yaml: unigrams >= 20, bigrams >= 5 with PMI >= 3 (log2; ln is stricter
    by a factor 0.69 and is checked too)."""
    root, _ = world
    uni, bi = collections.Counter(), collections.Counter()
    n_words = 0
    with bz2.open(root / "dump" / wiki.DUMP_NAME, "rb") as f:
        for p in _iter_pages(f):
            if p["ns"] != 0 or p["redirect"]:
                continue
            for line in _prose(p["text"]).split("\n"):
                words, bigrams = words_and_bigrams(line)
                uni.update(words)
                bi.update(bigrams)
                n_words += len(words)
    missing = {w: uni[w] for w in caption_words() if uni[w] < 20}
    assert not missing
    for colour in COLOURS:
        for shape, plural in SHAPES.items():
            for word in (shape, plural):
                c = bi[(colour, word)]
                assert c >= 5, (colour, word, c)
                assert math.log(c * n_words / (uni[colour] * uni[word])) >= 3.0, (colour, word)
    # Words that only live in markup or outside articles never reach article prose.
    for word in (wiki.TALK_ONLY_WORD, wiki.REF_ONLY_WORD, wiki.TEMPLATE_ONLY_WORD, wiki.REDIRECT_WORD):
        assert uni[word] == 0, word
    raw = bz2.decompress((root / "dump" / wiki.DUMP_NAME).read_bytes()).decode()
    for word in (wiki.TALK_ONLY_WORD, wiki.REF_ONLY_WORD, wiki.TEMPLATE_ONLY_WORD):
        assert raw.count(word) >= 20, word


# --------------------------------------------------------------------------- pageviews

def test_pageview_files_in_the_wikimedia_format(world):
    root, info = world
    files = sorted(os.listdir(root / "pageviews"))
    assert len(files) >= 3 and all(re.fullmatch(r"pageviews-\d{8}-\d{2}0000\.gz", f) for f in files)
    english: collections.Counter = collections.Counter()
    domains, namespaces = set(), set()
    for name in files:
        with gzip.open(root / "pageviews" / name, "rt", encoding="utf-8") as f:
            for line in f:
                fields = line.rstrip("\n").split(" ")
                assert len(fields) == 4, line
                domain, title, views, size = fields
                assert int(views) > 0 and size == "0" and " " not in title
                domains.add(domain)
                if ":" in title:
                    namespaces.add(title.split(":")[0])
                if domain in ("en", "en.m") and wiki.namespace_of(title.replace("_", " ")) == 0:
                    english[title.replace("_", " ")] += int(views)
    assert {"en", "en.m"} < domains and domains - {"en", "en.m"}
    assert {"Talk", "Special"} <= namespaces
    assert english[pageviews.AT_THRESHOLD] == 70 and english[pageviews.BELOW_THRESHOLD] == 69
    above = [t for t, v in english.items() if v >= 70]
    below = [t for t, v in english.items() if v < 70]
    assert len(above) >= 40 and len(below) >= 100
    assert "Night sky" in english and "Red circle" in english


# --------------------------------------------------------------------------- judging the embedding stages

def _truth_of(rows):
    from witcurate.demo.semantic_truth import Truth
    return Truth([{"url": u, "kind": k, "dup_of": d} for u, k, d in rows])


def test_semdedup_is_judged_by_truth_groups():
    from witcurate.demo.semantic_truth import judge_dedup
    truth = _truth_of([("o", "clean", None), ("c1", "semantic_dup", "o"), ("c2", "semantic_dup", "o"),
                       ("p", "clean", None), ("q", "clean", None), ("x", "off_target", None)])
    reached = ["o", "c1", "c2", "p", "q", "x"]
    # The original removed while a copy stays is right; p, a scene of its own, is a clean pair lost.
    judged = judge_dedup(reached, {"o", "c1", "p"}, truth)
    assert (judged["right"], judged["possible"], judged["recall"]) == (2, 2, 1.0)
    assert (judged["clean_removed"], judged["clean_at_stage"]) == (1, 3)
    assert judged["clean_removed_share"] == pytest.approx(1 / 3, abs=1e-4)
    # Removing a whole group keeps nothing of it: one removal too many, a clean pair lost.
    judged = judge_dedup(reached, {"o", "c1", "c2"}, truth)
    assert (judged["right"], judged["clean_removed"], judged["other_pairs_lost"]) == (2, 1, 0)
    judged = judge_dedup(reached, {"x"}, truth)
    assert (judged["recall"], judged["clean_removed"], judged["other_pairs_lost"]) == (0.0, 0, 1)


def test_target_filter_is_judged_on_off_target_and_clean_pairs():
    from witcurate.demo.semantic_truth import judge_target
    truth = _truth_of([("a", "clean", None), ("b", "clean", None), ("c", "semantic_dup", "a"),
                       ("x", "off_target", None), ("y", "off_target", None)])
    judged = judge_target(["a", "b", "c", "x", "y"], {"x", "b"}, truth)
    assert (judged["off_target_removed"], judged["off_target_at_stage"], judged["recall"]) == (1, 2, 0.5)
    assert (judged["clean_removed"], judged["clean_at_stage"], judged["clean_removed_share"]) == (1, 2, 0.5)
