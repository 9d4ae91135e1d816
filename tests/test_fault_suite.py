"""Fault suite: every kind of bad input, given to the command a user runs, ends as a reject with
its reason or as a one-line error with exit code 2. Never a traceback, never a silent loss.

| input                                      | stage    | outcome                                    |
|--------------------------------------------|----------|--------------------------------------------|
| truncated bz2 dump                         | queries  | error naming the broken stream             |
| bz2 dump that is not MediaWiki XML         | queries  | error                                      |
| truncated pageviews gzip                   | queries  | error                                      |
| source that is not parquet (wrong magic)   | ingest   | reject source_unreadable                   |
| zero-byte source file                      | ingest   | reject source_unreadable                   |
| invalid UTF-8 in CSV and JSONL             | ingest   | kept with U+FFFD; a null caption rejected  |
| 1e6-character caption                      | ingest   | reject caption_too_long                    |
| 1e6-character URL                          | ingest   | reject url_too_long                        |
| stage part truncated after it finished     | match    | error: rerun the upstream stage            |
| stage part deleted after it finished       | match    | error: rerun the upstream stage            |
| damaged part in a finished run             | audit    | the audit lists the problem, exit 1        |
| queries file that is not JSON              | match    | error                                      |
| bad YAML, wrong value type                 | any      | error                                      |
| zero-byte and wrong-magic bodies over HTTP | download | reject empty_body, decode_error            |
| zero-byte and wrong-magic images in tars   | score    | reject image_unreadable                    |
| output disk full                           | ingest   | error, nothing landed, rerun elsewhere ok  |
| output path not writable                   | ingest   | error                                      |

Every reject case also checks in = kept + rejected from the stage's manifest.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import io
import json
import random
import resource
import string
import subprocess
import tarfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from cli_errors import one_line_error
from queries_support import write_plain
import local_server
from witcurate import schemas
from witcurate.cli import main
from witcurate.pipeline import download_worker
from witcurate.pipeline.tables import read_table

LONG = 1_000_000


def _rejects(capsys, argv: list[str], out: Path, reasons: dict[str, int], kept: int) -> dict:
    """The command succeeds, and the stage's manifest balances with exactly these rejects."""
    assert main(argv) == 0, capsys.readouterr().err
    manifest = json.loads((out / "_SUCCESS.json").read_text())
    counts = manifest["counts"]
    assert counts["reasons"] == reasons
    assert counts["kept"] == kept
    assert counts["in"] == counts["kept"] + counts["rejected"]
    return manifest


def _pool(path: Path, rows: list[tuple[str, str]]) -> Path:
    pq.write_table(pa.table({"url": [u for u, _ in rows], "caption": [c for _, c in rows]}), path)
    return path


GOOD = [("http://img.example.com/a.jpg", "two red circles on the grass"),
        ("http://img.example.com/b.jpg", "a blue square beside a yellow star")]


# ---- queries: the Wikipedia inputs ----

# The dump alone, without WordNet (the built-in defaults read no page views).
NO_PAGEVIEWS = ["--set", "queries.wordnet=false", "--set", "queries.pageviews=[]"]


def test_truncated_bz2_dump(tmp_path, capsys):
    dump = write_plain(tmp_path / "enwiki-x-pages-articles.xml.bz2")
    dump.write_bytes(dump.read_bytes()[:-40])
    one_line_error(capsys, ["queries", "--dump", str(dump), "--out", str(tmp_path / "q"), *NO_PAGEVIEWS],
           "truncated bz2 stream", "re-download the dump")
    assert not (tmp_path / "q").exists()


def test_bz2_dump_that_is_not_mediawiki_xml(tmp_path, capsys):
    dump = tmp_path / "enwiki-x-pages-articles.xml.bz2"
    dump.write_bytes(bz2.compress(b"this is a text file, not a MediaWiki export\n" * 50))
    one_line_error(capsys, ["queries", "--dump", str(dump), "--out", str(tmp_path / "q"), *NO_PAGEVIEWS], str(dump))


def test_truncated_pageviews_gzip(tmp_path, capsys):
    dump = write_plain(tmp_path / "enwiki-x-pages-articles.xml.bz2")
    data = gzip.compress(b"".join(b"en Page_%d 5 0\n" % i for i in range(5000)))
    (tmp_path / "pageviews-20240101-000000.gz").write_bytes(data[: len(data) // 2])
    one_line_error(capsys, ["queries", "--dump", str(dump), "--pageviews", str(tmp_path / "pageviews-*.gz"),
                    "--out", str(tmp_path / "q"), "--set", "queries.wordnet=false"],
           "cannot read the pageview file")


# ---- ingest: candidate sources ----

@pytest.mark.parametrize("kind, content", [
    ("wrong_magic", b"url,caption\nhttp://x.com/1.jpg,a red circle\n"),   # CSV bytes named .parquet
    ("zero_bytes", b""),
])
def test_unreadable_source_file_is_one_reject(tmp_path, capsys, kind, content):
    _pool(tmp_path / "good.parquet", GOOD)
    (tmp_path / f"{kind}.parquet").write_bytes(content)
    out = tmp_path / "ingest"
    m = _rejects(capsys, ["ingest", "--in", str(tmp_path / "*.parquet"), "--out", str(out)], out,
                 {"source_unreadable": 1}, kept=2)
    assert m["counts"]["in"] == 3


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_invalid_utf8_is_replaced_not_lost(tmp_path, capsys, fmt):
    if fmt == "csv":
        data = (b"url,caption\nhttp://x.com/1.jpg,caf\xe9 with a red circle \xff\n"
                b"http://x.com/2.jpg,\n")
    else:
        data = (b'{"url": "http://x.com/1.jpg", "caption": "caf\xe9 with a red circle \xff"}\n'
                b'{"url": "http://x.com/2.jpg", "caption": null}\n')
    src = tmp_path / f"c.{fmt}"
    src.write_bytes(data)
    out = tmp_path / "ingest"
    m = _rejects(capsys, ["ingest", "--in", str(src), "--out", str(out)], out, _empty_reason(fmt), kept=1)
    assert m["counts"]["in"] == 2
    (caption,) = read_table(str(out)).column("caption").to_pylist()
    assert caption.startswith("caf") and "\ufffd" in caption


def _empty_reason(fmt: str) -> dict[str, int]:
    # an empty CSV field reads as an empty caption, JSON null as a missing one
    return {"caption_empty": 1} if fmt == "csv" else {"missing_caption": 1}


@pytest.mark.parametrize("row, reason", [
    (("http://img.example.com/c.jpg", "word " * (LONG // 5)), "caption_too_long"),
    (("http://img.example.com/" + "x" * LONG, "a green triangle"), "url_too_long"),
])
def test_giant_fields_are_rejects(tmp_path, capsys, row, reason):
    out = tmp_path / "ingest"
    _rejects(capsys, ["ingest", "--in", str(_pool(tmp_path / "c.parquet", GOOD + [row])), "--out", str(out)],
             out, {reason: 1}, kept=2)
    (rej,) = read_table(str(out / "rejects")).to_pylist()
    record = json.loads(rej["record"])                 # clipped to keep rejects small, but there
    assert record["url"] == row[0][:len(record["url"])] and len(record["url"]) + len(record["caption"]) < 5000
    length = int(rej["detail"].split(" characters: ")[0].replace(",", ""))
    assert length >= LONG - 1                          # the detail gives the full length


def test_csv_row_with_the_wrong_number_of_fields_is_a_reject(tmp_path, capsys):
    src = tmp_path / "c.csv"
    src.write_text("url,caption\nhttp://x.com/1.jpg,a red circle on grass\n"
                   "http://x.com/2.jpg,a blue square,an extra field\n")
    out = tmp_path / "ingest"
    _rejects(capsys, ["ingest", "--in", str(src), "--out", str(out)], out, {"malformed_row": 1}, kept=1)
    (rej,) = read_table(str(out / "rejects")).to_pylist()
    assert "an extra field" in rej["detail"]


# ---- stage outputs damaged after they finished ----

@pytest.fixture
def finished_ingest(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["ingest", "--in", str(_pool(tmp_path / "c.parquet", GOOD)), "--out", str(run / "ingest")]) == 0
    (tmp_path / "q.json").write_text(json.dumps(["red circles", "blue square"]))
    capsys.readouterr()
    return run


def _match(run: Path, queries: Path) -> list[str]:
    return ["match", "--in", str(run / "ingest"), "--queries", str(queries), "--out", str(run / "match")]


def test_truncated_upstream_part_names_the_stage_to_rerun(finished_ingest, capsys):
    (part,) = finished_ingest.glob("ingest/part-*.parquet")
    part.write_bytes(part.read_bytes()[:-100])
    one_line_error(capsys, _match(finished_ingest, finished_ingest.parent / "q.json"),
           str(part), "rerun the ingest stage with --force")
    assert not (finished_ingest / "match").exists()

    assert main(["audit", str(finished_ingest)]) == 1            # the audit lists it, no traceback
    out = capsys.readouterr().out
    assert "PROBLEM: unreadable parquet file" in out and "1 with problems" in out


def test_deleted_upstream_part_is_caught_before_anything_runs(finished_ingest, capsys):
    (part,) = finished_ingest.glob("ingest/part-*.parquet")
    part.unlink()
    one_line_error(capsys, _match(finished_ingest, finished_ingest.parent / "q.json"),
           "holds 0 rows but its manifest counted 2", "rerun ingest with --force")


def test_queries_file_that_is_not_json(finished_ingest, capsys):
    bad = finished_ingest.parent / "bad.json"
    bad.write_text("{not json")
    one_line_error(capsys, _match(finished_ingest, bad), "is not valid JSON")


@pytest.mark.parametrize("text, needle", [
    ("cap: [unclosed\n", "not valid YAML"),
    ("cap:\n  per_query: lots\n", "expected int"),
])
def test_bad_config(finished_ingest, capsys, text, needle):
    cfg = finished_ingest.parent / "bad.yaml"
    cfg.write_text(text)
    one_line_error(capsys, ["cap", "--config", str(cfg), "--in", str(finished_ingest / "ingest"),
                    "--out", str(finished_ingest / "cap")], needle)


# ---- image bytes: over HTTP and in tars ----

def _jpeg(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (96, 80), (seed * 40 % 256, 120, 200)).save(buf, "JPEG")
    return buf.getvalue()


BAD_BODIES = {"zero.jpg": b"", "magic.jpg": b"GIF87a? no: plain text pretending to be a jpeg" * 10}


@contextlib.contextmanager
def _image_server():
    bodies = {f"/{name}": body for name, body in BAD_BODIES.items()} | {"/ok.jpg": _jpeg(1)}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            body = bodies.get(self.path, b"")
            self.send_response(200 if self.path in bodies else 404)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    try:
        with local_server.serving(ThreadingHTTPServer(("127.0.0.1", 0), Handler)) as server:
            yield server.server_address[1]
    finally:
        download_worker.close_pools()


def test_zero_byte_and_wrong_magic_downloads_are_rejects(tmp_path, capsys):
    with _image_server() as port:
        base = f"http://127.0.0.1:{port}"
        names = ["ok.jpg", *BAD_BODIES]
        rows = [{"uid": f"u{i}", "url": f"{base}/{n}", "caption": f"picture {n}", "source": "t",
                 "query_ids": [0], "keep_probability": 1.0} for i, n in enumerate(names)]
        (tmp_path / "balance").mkdir()
        pq.write_table(pa.Table.from_pylist(rows, schemas.BALANCED), tmp_path / "balance" / "part-00000.parquet")
        out = tmp_path / "download"
        _rejects(capsys, ["download", "--in", str(tmp_path / "balance"), "--out", str(out),
                          "--processes", "1", "--threads", "4", "--min-side", "8",
                          "--set", f"download.allow_private=['127.0.0.1:{port}']"],
                 out, {"empty_body": 1, "decode_error": 1}, kept=1)


def test_zero_byte_and_wrong_magic_images_in_tars_are_rejects(tmp_path, capsys):
    """The score stage over a plain img2dataset folder whose tar holds two bad images."""
    folder = tmp_path / "i2d"
    folder.mkdir()
    images = {"000000000": _jpeg(1), "000000001": b"", "000000002": BAD_BODIES["magic.jpg"]}
    meta = []
    with tarfile.open(folder / "00000.tar", "w") as tar:
        for key, data in images.items():
            meta.append({"url": f"http://x.test/{key}.jpg", "caption": f"picture {key}", "key": key,
                         "status": "success", "error_message": None, "width": 96, "height": 80})
            for name, payload in ((f"{key}.jpg", data), (f"{key}.txt", meta[-1]["caption"].encode())):
                info = tarfile.TarInfo(name)
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    pq.write_table(pa.Table.from_pylist(meta), folder / "00000.parquet")
    out = tmp_path / "score"
    m = _rejects(capsys, ["score", "--in", str(folder), "--out", str(out), "--model", "witcurate-tiny",
                          "--threshold", "-1", "--device", "cpu", "--set", "score.pretrained=''"],
                 out, {"image_unreadable": 2}, kept=1)
    assert m["input_mode"] == "img2dataset"


# ---- the output's storage ----

@contextlib.contextmanager
def _small_disk(path: Path, size: str = "512k"):
    """A real 512 kB filesystem where this machine may mount one (tmpfs); elsewhere a file-size
    limit on this process (RLIMIT_FSIZE: writes past it fail with EFBIG, since Python ignores
    SIGXFSZ) stands in for the full disk."""
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                             capture_output=True).returncode == 0
    if mounted:
        try:
            yield "No space left on device"
        finally:
            subprocess.run(["umount", "-l", str(path)], check=False)
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (512 * 1024, hard))
    try:
        yield "File too large"
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def test_full_disk_is_a_clear_error_and_the_rerun_elsewhere_works(tmp_path, capsys):
    # ~2 MB of distinct captions: more than the small disk holds once written as parquet
    rng = random.Random(0)
    rows = [(f"http://img.example.com/{i}.jpg",
             "photo of " + " ".join("".join(rng.choices(string.ascii_lowercase, k=6)) for _ in range(14)))
            for i in range(12_000)]
    src = _pool(tmp_path / "big.parquet", rows)
    disk = tmp_path / "disk"
    with _small_disk(disk) as why:
        one_line_error(capsys, ["ingest", "--in", str(src), "--out", str(disk / "run" / "ingest")],
               "ran out of space", why, "rerun the same command")
        assert not (disk / "run" / "ingest").exists()
        assert not (disk / "run" / ".tmp-ingest").exists()     # its space was given back
    out = tmp_path / "run" / "ingest"
    _rejects(capsys, ["ingest", "--in", str(src), "--out", str(out)], out, {}, kept=len(rows))


def test_unwritable_output_path(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    one_line_error(capsys, ["ingest", "--in", str(_pool(tmp_path / "c.parquet", GOOD)),
                    "--out", str(blocker / "run" / "ingest")], "cannot write")
