"""`witcurate browse` on a small fake run: what the report holds, that the same run gives the same
files, bounded size, and bad input (failed and missing stages, reasons without samples, an image
that does not decode, captions holding markup). The browser checks are in test_browse_chromium.py."""

from __future__ import annotations

import filecmp
import json
import shutil
import subprocess
import sys
import tarfile
import urllib.request
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fake_run import make_run, uid_of, write_img2dataset_tar

import local_server
from witcurate import schemas
from witcurate.browse import thumbs
from witcurate.browse.build import Budget, build_report
from witcurate.browse.serve import make_server
from witcurate.errors import InputError

REPO = Path(__file__).resolve().parents[1]
HOSTILE = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2"> & "quotes"'
BAD_UID = uid_of(500)


def make_browse_run(out: Path) -> dict:
    """fake_run's run, plus a near duplicate whose caption holds markup and whose image bytes do
    not decode, and whose survivor is among dedupe's kept rows."""
    expect = make_run(out)
    capped = expect["rows"]
    kept = pa.concat_tables([capped, pa.table({"uid": [f"dedupe-{i}" for i in range(3)]})], promote_options="default")
    pq.write_table(kept, out / "dedupe" / "part-00000.parquet")
    write_img2dataset_tar(out / "download" / "images" / "00002.tar",
                          {"0000099.jpg": b"\xff\xd8 not really a jpeg", "0000099.txt": b"x"})
    record = {"uid": BAD_UID, "url": "http://example.invalid/a.jpg", "caption": HOSTILE,
              "shard": "images/00002.tar", "key": "0000099"}
    reject = {"uid": BAD_UID, "reason": "near_duplicate",
              "detail": f"duplicate of {capped['uid'][0].as_py()} (Hamming 2)", "record": json.dumps(record)}
    pq.write_table(pa.Table.from_pylist([reject], schema=schemas.REJECTS), out / "dedupe" / "rejects" / "part-00000.parquet")
    return expect


def load_view(report: Path, view_id: str) -> dict:
    text = (report / "data" / f"{view_id}.js").read_text(encoding="utf-8")
    assert text.startswith("witcurateData(") and text.endswith(");\n")
    return json.loads(text[len("witcurateData("):-3])


@pytest.fixture
def run(tmp_path) -> tuple[Path, dict]:
    out = tmp_path / "run"
    return out, make_browse_run(out)


def test_first_page_shows_every_stage_and_links_every_reason(run):
    out, _ = run
    build_report(str(out), progress=lambda _: None)
    index = (out / "browse" / "index.html").read_text()
    for stage in ("ingest", "match", "balance", "download", "dedupe", "score", "cap"):
        assert f'<th scope="row">{stage}</th>' in index
    for stage, reason in [("ingest", "bad_url"), ("download", "http_404"), ("dedupe", "near_duplicate"),
                          ("score", "clip_score_below"), ("cap", "over_query_cap")]:
        assert f'href="view.html#rejects-{stage}-{reason}"' in index
        assert load_view(out / "browse", f"rejects-{stage}-{reason}")["stage"] == stage
    assert "shards" in index and "not run" in index


def test_model_stage_shows_what_it_produced(run):
    out, _ = run
    (out / "scorer").mkdir()
    (out / "scorer" / "_SUCCESS.json").write_text(json.dumps(
        {"stage": "scorer", "produces": "model", "outputs": {"checkpoint.pt": 10, "metrics.jsonl": 2}}))
    build_report(str(out), progress=lambda _: None)
    index = (out / "browse" / "index.html").read_text()
    assert "produced checkpoint.pt, metrics.jsonl (a model, not a filter)" in index


def test_reason_without_rows_in_its_files_says_so(run):
    out, _ = run
    build_report(str(out), progress=lambda _: None)
    view = load_view(out / "browse", "rejects-ingest-bad_url")
    assert view["total"] == 6 and view["samples"] == [] and "no row with this reason" in view["empty"]


def test_duplicate_shows_its_survivor_and_undecodable_image_gets_a_placeholder(run):
    out, expect = run
    build_report(str(out), progress=lambda _: None)
    [sample] = load_view(out / "browse", "rejects-dedupe-near_duplicate")["samples"]
    assert sample["caption"] == HOSTILE and "thumb" not in sample
    assert sample["image_error"] == "image does not decode (UnidentifiedImageError)"
    survivor = sample["survivor"]
    assert survivor["uid"] == expect["rows"]["uid"][0].as_py()
    assert (out / "browse" / survivor["thumb"]).stat().st_size > 0


def test_markup_in_captions_is_data_never_markup(run):
    out, _ = run
    build_report(str(out), progress=lambda _: None)
    text = (out / "browse" / "data" / "rejects-dedupe-near_duplicate.js").read_text()
    assert "<" not in text and ">" not in text                # escaped: \u003cscript\u003e
    assert "\\u003cscript\\u003e" in text
    assert "<script>window" not in "".join(p.read_text() for p in (out / "browse").glob("*.html"))


def test_score_view_orders_both_sides_of_the_threshold(run):
    out, _ = run
    build_report(str(out), progress=lambda _: None)
    view = load_view(out / "browse", "score")
    kept = [s["score"] for s in view["kept"]]
    rejected = [s["score"] for s in view["rejected"]]
    assert kept == sorted(kept) and len(kept) == 17
    assert rejected == sorted(rejected, reverse=True) == [0.06, 0.05]
    assert view["threshold"] == 0.2 and max(rejected) < min(kept)


def test_queries_view_counts_pairs_per_query_and_marks_the_cap(run):
    out, expect = run
    build_report(str(out), progress=lambda _: None)
    view = load_view(out / "browse", "queries")
    counts: dict[str, int] = {}
    for q in expect["rows"]["query"].to_pylist():
        counts[q] = counts.get(q, 0) + 1
    assert {q["q"]: q["n"] for q in view["queries"]} == counts
    assert view["total_pairs"] == expect["rows"].num_rows
    assert all(q["at_cap"] is False for q in view["queries"])      # the fake cap manifest has no cap config


def test_same_run_gives_the_same_files_byte_for_byte(run, tmp_path):
    out, _ = run
    build_report(str(out), progress=lambda _: None)
    first = tmp_path / "first"
    shutil.copytree(out / "browse", first)
    build_report(str(out), progress=lambda _: None)
    compared = filecmp.dircmp(first, out / "browse")
    assert not compared.left_only and not compared.right_only
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert len(files) > 10
    _, mismatch, errors = filecmp.cmpfiles(first, out / "browse", [str(f) for f in files], shallow=False)
    assert mismatch == [] and errors == []


def test_report_of_a_run_on_a_non_local_filesystem_is_the_same(run):
    """Every read and write goes through fsspec: a run on memory:// (as on gs://) gives the
    same report, file for file, as the same run on local disk."""
    import fsspec
    out, _ = run
    memory = fsspec.filesystem("memory")
    root = f"/browse-{out.parent.name}/run"
    memory.put(str(out), root, recursive=True)
    try:
        build_report(f"memory://{root}", progress=lambda _: None)
        build_report(str(out), progress=lambda _: None)
        local = sorted(p.relative_to(out / "browse") for p in (out / "browse").rglob("*") if p.is_file())
        remote = sorted(p[len(root + "/browse/"):] for p in memory.find(root + "/browse"))
        assert [str(p) for p in local] == remote and len(remote) > 10
        for rel in local:
            assert memory.cat(f"{root}/browse/{rel}") == (out / "browse" / rel).read_bytes(), rel
    finally:
        memory.rm(root.rsplit("/", 1)[0], recursive=True)


def test_failed_and_missing_stages_are_named_and_the_rest_is_shown(run):
    out, _ = run
    shutil.rmtree(out / "balance")
    (out / ".tmp-dedupe").mkdir()
    shutil.move(out / "dedupe", out / ".tmp-dedupe" / "x")
    (out / "match" / "_SUCCESS.json").write_text("{ not json")
    build_report(str(out), progress=lambda _: None)
    index = (out / "browse" / "index.html").read_text()
    assert "Not all of this run" in index
    assert "<strong>balance</strong>: missing" in index
    assert "<strong>dedupe</strong>: failed" in index and ".tmp-dedupe" in index
    assert "<strong>match</strong>: failed" in index and "does not read" in index
    assert 'href="view.html#rejects-score-clip_score_below"' in index


def test_damaged_rejects_file_is_a_note_not_a_crash(run):
    out, _ = run
    (out / "score" / "rejects" / "part-00000.parquet").write_bytes(b"PAR1 broken")
    build_report(str(out), progress=lambda _: None)
    index = (out / "browse" / "index.html").read_text()
    assert "score: its rejects files do not read" in index
    assert load_view(out / "browse", "rejects-score-clip_score_below")["samples"] == []


def test_manifest_with_nonsense_counts_still_gives_a_report(run):
    out, _ = run
    manifest = json.loads((out / "download" / "_SUCCESS.json").read_text())
    manifest["counts"] = {"in": "lots", "kept": None, "rejected": [1], "reasons": ["http_404"]}
    (out / "download" / "_SUCCESS.json").write_text(json.dumps(manifest))
    score = json.loads((out / "score" / "_SUCCESS.json").read_text())
    score["threshold_used"], score["keep_rule"] = "high", "top"
    (out / "score" / "_SUCCESS.json").write_text(json.dumps(score))
    build_report(str(out), progress=lambda _: None)
    index = (out / "browse" / "index.html").read_text()
    assert '<th scope="row">download</th>' in index and 'href="view.html#rejects-dedupe-near_duplicate"' in index
    assert load_view(out / "browse", "score")["threshold"] is None


def test_budget_bounds_samples_and_thumbnails(run):
    out, _ = run
    report = build_report(str(out), budget=Budget(per_reason=1, per_side=2, per_query=1, max_thumbnails=3),
                          progress=lambda _: None)
    assert report["thumbnails"] <= 3
    assert len(list((out / "browse" / "thumbs").glob("*.jpg"))) <= 3
    assert len(load_view(out / "browse", "rejects-score-clip_score_below")["samples"]) == 1
    view = load_view(out / "browse", "score")
    assert len(view["kept"]) == 2
    notes = [s.get("note", "") for q in load_view(out / "browse", "queries")["queries"] for s in q["samples"]]
    assert any("budget" in n for n in notes)


def test_queries_view_bounds_its_samples_and_keeps_the_busiest_queries_first(run):
    from witcurate.browse.queries import samples_each
    assert samples_each(10, 8, 1000) == 8 and samples_each(3000, 8, 20_000) == 6
    assert samples_each(50_000, 8, 20_000) == 1
    out, _ = run
    build_report(str(out), budget=Budget(per_query=4, max_query_samples=2), progress=lambda _: None)
    queries = load_view(out / "browse", "queries")["queries"]
    assert [len(q["samples"]) for q in queries] == [1, 1, 0]
    assert [q["n"] for q in queries] == sorted((q["n"] for q in queries), reverse=True)


def test_outside_demo_mode_nothing_refers_to_ground_truth(run, tmp_path):
    out, expect = run
    build_report(str(out), progress=lambda _: None)
    site = "".join(p.read_text() for p in (out / "browse").rglob("*") if p.suffix in (".html", ".js", ".css"))
    for word in ("truth", "demo world", "injected", "mismatched"):
        assert word not in site.lower()
    truth = tmp_path / "truth.parquet"
    urls = expect["rows"]["url"].to_pylist()
    distinct = sorted(set(urls))
    pq.write_table(pa.table({"url": distinct, "kind": ["mismatched"] + ["clean"] * (len(distinct) - 1)}), truth)
    report = build_report(str(out), truth=str(truth), progress=lambda _: None)
    assert report["demo"]
    view = load_view(out / "browse", "kind-mismatched")
    assert view["total"] == sum(u == distinct[0] for u in urls) and view["samples"][0]["tag"] == "demo world: mismatched"
    assert "ground truth" in (out / "browse" / "index.html").read_text()


def test_thumbnails_read_a_window_of_the_tar_never_the_whole_of_it(tmp_path, monkeypatch):
    """Headers are walked through a bounded window and a member larger than the window is
    skipped with a seek: a wanted image after an 8 MB member, in a 12 MB tar, costs two windows."""
    from fake_run import _image
    from witcurate.browse.tar_index import WINDOW
    members = {"0000000.bin": bytes(8 << 20)}
    for i in range(1, 400):
        members.update({f"{i:07d}.jpg": _image(i % 50) + bytes(10_000), f"{i:07d}.txt": b"caption"})
    images = tmp_path / "download" / "images"
    images.mkdir(parents=True)
    write_img2dataset_tar(images / "00000.tar", members)
    reads = []
    real_open = thumbs.fs.open_file

    def counting_open(path, mode="rb", **kw):
        handle = real_open(path, mode, **kw)
        original = handle.read
        handle.read = lambda n=-1: reads.append(n) or original(n)     # noqa: E731
        return handle

    monkeypatch.setattr(thumbs.fs, "open_file", counting_open)
    problems = thumbs.write_thumbnails(str(tmp_path / "download"), {"u1": ("images/00000.tar", "0000003")},
                                       str(tmp_path / "out"))
    assert problems == {} and (tmp_path / "out" / "thumbs" / "u1.jpg").exists() is False   # not a hex uid
    assert len(list((tmp_path / "out" / "thumbs").glob("*.jpg"))) == 1
    assert (images / "00000.tar").stat().st_size > 12 << 20
    assert -1 not in reads and max(reads) <= WINDOW and sum(reads) <= 2 * WINDOW


@pytest.mark.parametrize("tar_format", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_tar_walk_finds_what_tarfile_finds(tar_format):
    """Long names (ustar prefix, GNU longname, pax), directories, upper-case extensions, a key
    that is absent: the header walk gives tarfile's offsets, or hands the tar to tarfile."""
    import io
    from witcurate.browse import tar_index
    names = ["0000001.jpg", "0000001.txt", "d/0000002.png", "x" * 120 + "/0000003.jpg", "ünï/0000004.webp",
             "0000005.JPG", "0000006.jpg.txt"]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tar_format) as tar:
        directory = tarfile.TarInfo("somedir")
        directory.type = tarfile.DIRTYPE
        tar.addfile(directory)
        for name in names:
            info = tarfile.TarInfo(name)
            info.size = len(name) * 3
            tar.addfile(info, io.BytesIO(name.encode() * 3))
    keys = {"0000001", "d/0000002", "x" * 120 + "/0000003", "ünï/0000004", "0000005", "0000006", "absent"}
    with tarfile.open(fileobj=io.BytesIO(buf.getvalue())) as tar:
        expected = {tar_index.sample_key(m.name)[0]: (m.offset_data, m.size) for m in tar
                    if m.isfile() and not m.name.endswith(".txt")}
    assert tar_index.index_tar(tar_index.Window(io.BytesIO(buf.getvalue())), keys) == expected
    assert set(expected) == keys - {"absent", "0000006"}


def test_thumbnails_say_why_an_image_is_missing(tmp_path):
    (tmp_path / "download" / "images").mkdir(parents=True)
    write_img2dataset_tar(tmp_path / "download" / "images" / "00000.tar", {"0000001.txt": b"no image"})
    problems = thumbs.write_thumbnails(str(tmp_path / "download"),
                                       {"a": ("images/00000.tar", "0000001"), "b": ("images/00009.tar", "0000002")},
                                       str(tmp_path / "out"))
    assert problems == {"a": "image not found in images/00000.tar",
                        "b": "image not found: images/00009.tar does not exist"}


def test_thumbnail_is_small_and_the_same_every_time():
    from fake_run import _image
    from PIL import Image
    import io
    big = Image.new("RGBA", (640, 300), (10, 200, 30, 128))
    buf = io.BytesIO()
    big.save(buf, "PNG")
    first, second = thumbs.make_thumbnail(buf.getvalue()), thumbs.make_thumbnail(buf.getvalue())
    assert first == second and Image.open(io.BytesIO(first)).size == (128, 60)
    assert thumbs.make_thumbnail(_image(3)) == thumbs.make_thumbnail(_image(3))


def test_cli_builds_the_report_and_refuses_a_missing_directory(run, tmp_path):
    out, _ = run
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "NO_ALBUMENTATIONS_UPDATE": "1"}
    done = subprocess.run([sys.executable, "-m", "witcurate.cli", "browse", str(out)], capture_output=True,
                          text=True, cwd=tmp_path, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert str(out / "browse" / "index.html") in done.stdout
    missing = subprocess.run([sys.executable, "-m", "witcurate.cli", "browse", str(tmp_path / "nope")],
                             capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1
    assert "run directory not found" in missing.stderr


def test_no_finished_stage_is_a_user_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no finished stage"):
        build_report(str(tmp_path / "empty"), progress=lambda _: None)


def test_serve_answers_on_loopback(run):
    out, _ = run
    build_report(str(out), progress=lambda _: None)
    with local_server.serving(make_server(str(out / "browse"), "127.0.0.1", 0)) as server:
        host, port = server.server_address[:2]
        assert host == "127.0.0.1"
        for path in ("index.html", "data/score.js", "assets/report.js"):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/{path}", timeout=10) as reply:
                assert reply.status == 200 and reply.read()
