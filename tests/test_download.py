"""The download stage against a local image server with every fault class; resume after a kill.

The server runs on 127.0.0.1 (allowlisted) and a second one on 127.0.0.2 (not allowlisted), which
must never be reached: not directly, not through a redirect. Nothing leaves loopback.
"""

from __future__ import annotations

import collections
import io
import json
import os
import socket
import struct
import tarfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageDraw

import local_server
from witcurate import schemas
from witcurate.demo.draw import bomb_png   # the demo world's decompression bomb
from witcurate.config import Config
from witcurate.errors import ConfigError
from witcurate.filters.base import Drop
from witcurate.pipeline import download_worker
from witcurate.pipeline.download import DownloadStage
from witcurate.pipeline.download_results import decide
from witcurate.pipeline.download_shard import DownloadShard, WarmWorkers, worker_settings
from witcurate.pipeline.runner import run_stage
from witcurate.pipeline.tables import read_table

N_OK = 16


def jpeg(w: int, h: int, seed: int) -> bytes:
    img = Image.new("RGB", (w, h), ((seed * 37) % 256, (seed * 91) % 256, (seed * 53) % 256))
    d = ImageDraw.Draw(img)
    for k in range(4):
        x, y = (seed * 13 + k * 29) % w, (seed * 7 + k * 41) % h
        d.ellipse([x, y, x + w // 3, y + h // 3], fill=((seed * 11 + k * 60) % 256, 200 - k * 40, k * 50))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


class Server:
    """A threaded HTTP server on a free loopback port that records every path it is asked for."""

    def __init__(self, host: str, routes):
        self.hits: collections.Counter[str] = collections.Counter()
        self.routes = routes
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                outer.hits[self.path] += 1
                outer.routes(self, self.path)

        class HTTPServer(ThreadingHTTPServer):
            request_queue_size = 128        # 16 fetch threads connect at once

        self.httpd = HTTPServer((host, 0), Handler)
        self.httpd.daemon_threads = True
        self.host, self.port = host, self.httpd.server_address[1]
        self.thread = local_server.start(self.httpd)

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    def close(self):
        local_server.stop(self.httpd)


def send(handler, status: int, body: bytes, ctype: str = "image/jpeg", headers=None, length=None):
    handler.send_response(status)
    handler.send_header("Content-Type", ctype)
    handler.send_header("Content-Length", str(len(body) if length is None else length))
    for k, v in (headers or {}).items():
        handler.send_header(k, v)
    handler.end_headers()
    handler.wfile.write(body)


def make_world():
    """The two servers and {url: expected reject reason, or None when the image is kept}."""
    other = Server("127.0.0.2", lambda h, path: send(h, 200, jpeg(128, 128, 99)))
    ok_images = {i: jpeg(160 + i, 120, i) for i in range(N_OK)}
    ok_images[N_OK - 1] = ok_images[0]                      # the same bytes at a second URL
    bomb = bomb_png()

    def routes(h, path):
        if path.startswith("/ok/"):
            send(h, 200, ok_images[int(path[4:].split(".")[0])])
        elif path == "/moved.jpg":
            send(h, 200, jpeg(170, 120, 50))
        elif path == "/octet.jpg":
            send(h, 200, jpeg(150, 150, 77), ctype="application/octet-stream")
        elif path == "/404.jpg":
            send(h, 404, b"<html>not found</html>", "text/html")
        elif path == "/500.jpg":
            send(h, 500, b"oops", "text/plain")
        elif path == "/slow.jpg":
            time.sleep(5)
            send(h, 200, jpeg(100, 100, 5))
        elif path == "/reset.jpg":
            h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            h.connection.close()
            h.close_connection = True
        elif path == "/truncated.jpg":
            body = jpeg(200, 200, 6)
            send(h, 200, body[: len(body) // 3], length=len(body))
            h.close_connection = True
        elif path == "/html.jpg":
            send(h, 200, b"<!doctype html><html><body>hello</body></html>", "text/html; charset=utf-8")
        elif path == "/garbage.jpg":
            send(h, 200, b"\x00\x01 definitely not an image" * 20)
        elif path == "/bomb.png":
            send(h, 200, bomb, "image/png")
        elif path == "/redirect.jpg":
            h.send_response(302)
            h.send_header("Location", other.url("/x.jpg"))
            h.send_header("Content-Length", "0")
            h.end_headers()
        elif path == "/redirect-ok.jpg":
            h.send_response(302)
            h.send_header("Location", "/moved.jpg")
            h.send_header("Content-Length", "0")
            h.end_headers()
        elif path == "/noai.jpg":
            send(h, 200, jpeg(128, 128, 8), headers={"X-Robots-Tag": "noai"})
        elif path == "/tiny.jpg":
            send(h, 200, jpeg(16, 16, 9))
        elif path == "/wide.jpg":
            send(h, 200, jpeg(400, 50, 10))
        else:
            send(h, 404, b"", "text/plain")

    main = Server("127.0.0.1", routes)
    expected = {main.url(f"/ok/{i}.jpg"): None for i in range(N_OK)}
    expected.update({
        main.url("/octet.jpg"): None,
        main.url("/redirect-ok.jpg"): None,
        main.url("/404.jpg"): "http_404",
        main.url("/500.jpg"): "http_500",
        main.url("/slow.jpg"): "timeout",
        main.url("/reset.jpg"): "connection_error",
        main.url("/truncated.jpg"): "truncated",
        main.url("/html.jpg"): "not_an_image",
        main.url("/garbage.jpg"): "decode_error",
        main.url("/bomb.png"): "too_many_pixels",
        main.url("/redirect.jpg"): "private_address",
        main.url("/noai.jpg"): "opt_out_header",
        main.url("/tiny.jpg"): "image_too_small",
        main.url("/wide.jpg"): "aspect_ratio",
        other.url("/direct.jpg"): "private_address",
        f"http://localhost:{other.port}/via-name.jpg": "private_address",
        "file:///etc/passwd": "unsupported_scheme",
    })
    return main, other, expected


@pytest.fixture(scope="module")
def world():
    main, other, expected = make_world()
    yield main, other, expected
    main.close()
    other.close()
    download_worker.close_pools()


def write_input(directory, urls_list):
    rows = [{"uid": f"u{i:03d}", "url": url, "caption": f"picture number {i}", "source": "test",
             "query_ids": [i % 3], "keep_probability": 1.0} for i, url in enumerate(urls_list)]
    directory.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schemas.BALANCED), directory / "part-00000.parquet")
    return rows


def config(main_port: int) -> Config:
    cfg = Config()
    d = cfg.download
    d.image_size, d.timeout, d.retries = 64, 2, 0   # 2 s: an OK image on loaded cores stays well inside it
    d.processes_count, d.thread_count, d.urls_per_shard = 2, 8, 12
    d.min_side, d.max_aspect_ratio = 32, 3.0
    # max_pixels stays the default (the bomb's 400 M pixels are far above it): every download
    # of a test process then shares one fork server, whose OpenCV holds one limit; a pool with
    # another limit spawns workers that import img2dataset again (5 to 8 CPU-s each).
    d.allow_private = [f"127.0.0.1:{main_port}"]
    return cfg


def reasons_by_url(out):
    t = pq.read_table(str(out / "rejects"))
    out_map = {}
    for rec in t.to_pylist():
        out_map[json.loads(rec["record"])["url"]] = (rec["reason"], rec["detail"])
    return out_map


def test_every_fault_gets_its_reason_and_the_totals_balance(world, tmp_path):
    main, other, expected = world
    rows = write_input(tmp_path / "balance", list(expected))
    before = sum(other.hits.values())
    manifest = run_stage(DownloadStage(), config(main.port), str(tmp_path / "download"),
                         {"in": str(tmp_path / "balance")}, progress=lambda s: None)
    out = tmp_path / "download"
    counts = manifest["counts"]
    assert counts["in"] == len(rows) == counts["kept"] + counts["rejected"]

    rejected = reasons_by_url(out)
    for url, reason in expected.items():
        if reason is None:
            assert url not in rejected, (url, rejected.get(url))
        else:
            assert rejected[url][0] == reason, (url, rejected[url])
    assert "127.0.0.2" in rejected[main.url("/redirect.jpg")][1]
    assert sum(other.hits.values()) == before, "a refused address was contacted"
    assert "X-Robots-Tag" in rejected[main.url("/noai.jpg")][1]
    # OpenCV refused the bomb from its header (the pixel limit reached the worker processes)
    assert "CV_IO_MAX_IMAGE_PIXELS" in rejected[main.url("/bomb.png")][1]

    kept = read_table(str(out))
    assert kept.num_rows == N_OK + 2
    schemas.validate(schemas.DOWNLOADED, kept.schema, "download output")
    members = {}
    for tar_path in sorted((out / "images").glob("*.tar")):
        with tarfile.open(tar_path) as tar:
            for m in tar.getmembers():
                if m.name.endswith(".jpg"):
                    members[(f"images/{tar_path.name}", m.name[:-4])] = tar.extractfile(m).read()
    by_uid = {r["uid"]: r for r in kept.to_pylist()}
    for r in by_uid.values():
        data = members[(r["shard"], r["key"])]
        img = Image.open(io.BytesIO(data))
        assert img.size == (r["width"], r["height"])
        assert min(r["width"], r["height"]) == 64                   # resized, keep_ratio
        assert r["original_height"] == 120 or r["original_width"] == 150
        assert len(r["sha256"]) == 64 and r["phash"] is not None
        assert r["caption"].startswith("picture number")
    # the same bytes at two URLs: identical stored images and hashes
    first, last = by_uid["u000"], by_uid[f"u{N_OK - 1:03d}"]
    assert (first["sha256"], first["phash"]) == (last["sha256"], last["phash"])
    assert manifest["throughput images/s"] > 0
    assert manifest["download"]["shards"] == 3


def test_killed_run_resumes_without_refetching_finished_shards(world, tmp_path, monkeypatch):
    main, other, expected = world
    good = [u for u, r in expected.items() if r is None or r in ("http_404", "image_too_small")]
    write_input(tmp_path / "balance", good)
    cfg = config(main.port)
    cfg.download.urls_per_shard = 6
    cfg.download.processes_count = 1            # one worker to start per run: a faster test
    inputs = {"in": str(tmp_path / "balance")}
    fetch = DownloadShard.fetch

    calls = []

    def crash_on_second_shard(self, index, directory, rows):
        calls.append(index)
        if len(calls) == 2:
            raise RuntimeError("killed")
        return fetch(self, index, directory, rows)

    monkeypatch.setattr(DownloadShard, "fetch", crash_on_second_shard)
    main.hits.clear()
    with pytest.raises(Exception, match="killed"):
        run_stage(DownloadStage(), cfg, str(tmp_path / "download"), inputs, progress=lambda s: None)
    assert not (tmp_path / "download").exists()
    done = sorted(p.parent.name for p in (tmp_path / ".work-download" / "shards").glob("*/DONE.json"))
    assert [d.split("-")[0] for d in done] == [f"{calls[0]:05d}"]
    hits_after_kill = collections.Counter(main.hits)
    assert hits_after_kill

    monkeypatch.setattr(DownloadShard, "fetch", fetch)
    manifest = run_stage(DownloadStage(), cfg, str(tmp_path / "download"), inputs, progress=lambda s: None)
    refetched = {p for p in hits_after_kill if main.hits[p] > hits_after_kill[p]}
    assert not refetched, f"fetched again: {sorted(refetched)}"
    stats = manifest["download"]
    assert stats["reused_shards"] == len(done)
    assert manifest["counts"]["kept"] + manifest["counts"]["rejected"] == len(good)
    assert not (tmp_path / ".work-download").exists()

    # same final output as a run that was never interrupted
    fresh = run_stage(DownloadStage(), cfg, str(tmp_path / "fresh" / "download"), inputs,
                      progress=lambda s: None)
    assert fresh["counts"] == manifest["counts"]
    a = read_table(str(tmp_path / "download")).sort_by("uid")
    b = read_table(str(tmp_path / "fresh" / "download")).sort_by("uid")
    cols = ["uid", "shard", "key", "width", "height", "original_width", "original_height", "sha256", "phash"]
    assert a.select(cols).equals(b.select(cols))
    for t in a.column("shard").unique().to_pylist():
        assert (tmp_path / "download" / t).exists()


def test_empty_input_and_bad_settings(tmp_path):
    write_input(tmp_path / "balance", [])
    manifest = run_stage(DownloadStage(), config(1), str(tmp_path / "download"),
                         {"in": str(tmp_path / "balance")}, progress=lambda s: None)
    assert manifest["counts"] == {"in": 0, "kept": 0, "rejected": 0, "reasons": {}}
    for key, value, match in (("allow_private", ["10.0.0.0/33"], "allow_private"),
                              ("resize_mode", "squash", "resize_mode"),
                              ("urls_per_shard", 0, "urls_per_shard")):
        cfg = config(1)
        setattr(cfg.download, key, value)
        with pytest.raises(ConfigError, match=match):
            run_stage(DownloadStage(), cfg, str(tmp_path / "bad"), {"in": str(tmp_path / "balance")},
                      progress=lambda s: None)


def test_a_url_without_an_img2dataset_result_is_a_no_result_reject():
    cfg = config(1).download
    row = {"uid": "u1", "url": "http://127.0.0.1:1/a.jpg"}
    assert decide(row, None, {}, cfg).reason == "no_result"
    ok = {"status": "success", "key": "000000000", "_sub": 0, "original_width": 100,
          "original_height": 100, "width": 64, "height": 64}
    assert decide(row, ok, {}, cfg).reason == "no_result"                  # not in its tar
    check = {"reason": "", "width": 64, "height": 64, "sha256": "ab" * 32, "phash": 7}
    assert decide(row, ok, {(0, "000000000"): check}, cfg)["phash"] == 7
    assert decide(row, dict(ok, original_width=20), {(0, "000000000"): check}, cfg).reason == "image_too_small"
    failed = {"status": "failed_to_download", "error_message": "HTTP Error 410: Gone", "_sub": 0}
    assert decide(row, failed, {}, cfg) == Drop("http_410", "HTTP Error 410: Gone")


def test_the_workers_start_while_the_input_is_read_and_the_shards_reuse_them(monkeypatch):
    # WarmWorkers (on the step that reads the input) starts the pool in the background with the
    # very settings DownloadShard asks for, so the shards find it running instead of a second one.
    cfg = config(2).download
    started = threading.Event()
    calls = []

    def pool(processes, settings):
        calls.append((processes, settings, threading.current_thread().name))
        started.set()

    monkeypatch.setattr(download_worker, "_pool", pool)
    WarmWorkers(cfg).setup()
    assert started.wait(5)
    shard = DownloadShard(cfg, "hash", "/tmp/unused", "token")
    shard.setup()
    assert calls == [(cfg.processes_count, shard.settings, "witcurate-warm-download-workers")]
    assert {shard.settings: 1}[worker_settings(cfg)] == 1       # the pool's key: equal and hashable
    assert list(WarmWorkers(cfg).process({"uid": "u"})) == [{"uid": "u"}]


def test_a_rerun_whose_shards_all_finished_starts_no_download_workers(world, tmp_path, monkeypatch):
    """Killed after every shard finished (while the stage landed its files): the rerun reuses
    them all and starts no worker pool, whose fork server alone imports img2dataset for seconds."""
    from witcurate.pipeline import download as download_module
    main, _, expected = world
    write_input(tmp_path / "balance", [u for u, r in expected.items() if r is None][:8])
    cfg = config(main.port)
    cfg.download.urls_per_shard = 4
    cfg.download.processes_count = 1
    inputs = {"in": str(tmp_path / "balance")}
    land = download_module.land_shards

    def killed(*args):
        raise RuntimeError("killed while landing")
    monkeypatch.setattr(download_module, "land_shards", killed)
    with pytest.raises(RuntimeError, match="killed while landing"):
        run_stage(DownloadStage(), cfg, str(tmp_path / "download"), inputs, progress=lambda s: None)
    download_worker.close_pools()
    monkeypatch.setattr(download_module, "land_shards", land)
    pools = []
    monkeypatch.setattr(download_worker, "_pool", lambda *args: pools.append(args))
    manifest = run_stage(DownloadStage(), cfg, str(tmp_path / "download"), inputs, progress=lambda s: None)
    assert manifest["download"]["reused_shards"] == manifest["download"]["shards"] == 2
    assert manifest["counts"]["kept"] == 8
    assert pools == []


def test_the_stage_starts_the_workers_itself_only_where_its_dofns_run_in_its_process():
    """On the pinned in-process runner the stage starts the pool before building the graph (the
    DoFns run here and find it); with worker processes or another runner it leaves that to
    WarmWorkers on the workers, and starts nothing in the launcher."""
    from witcurate.pipeline.beam_io import runs_in_this_process
    assert runs_in_this_process([]) and runs_in_this_process(None)
    assert runs_in_this_process(["--direct_num_workers=2"])                 # threads of this process
    assert not runs_in_this_process(["--direct_num_workers=2", "--direct_running_mode=multi_processing"])
    assert not runs_in_this_process(["--runner=DataflowRunner", "--project=p"])
    assert not runs_in_this_process(["--runner", "PrismRunner"])


PIXEL_LIMIT_SCRIPT = '''
import numpy as np

def decodes_200x200(_):
    import cv2
    ok, png = cv2.imencode(".png", np.zeros((200, 200, 3), np.uint8))
    try:
        return cv2.imdecode(png, cv2.IMREAD_COLOR) is not None
    except cv2.error:
        return False

def modules(_):
    import importlib.util
    import sys
    facts = ("img2dataset" in sys.modules, "torch" in sys.modules, importlib.util.find_spec("torch") is not None,
             "huggingface_hub" in sys.modules, importlib.util.find_spec("huggingface_hub") is not None,
             type(sys.modules["wandb"]).__name__)
    table = sys.modules["img2dataset.logger"].wandb.Table       # wandb, imported at its first use
    return facts + (table.__module__, type(sys.modules["wandb"]).__name__,
                    type(sys.modules["img2dataset.resizer"].cv2).__name__,
                    type(sys.modules["img2dataset.resizer"].A).__name__)

if __name__ == "__main__":
    import torch  # noqa: F401  (as in a `witcurate run` process: the workers must not need it)
    from witcurate.config import Config
    from witcurate.pipeline import download_worker
    from witcurate.pipeline.download_shard import worker_settings
    def pool(max_pixels):
        cfg = Config()
        cfg.download.max_pixels = max_pixels
        return download_worker._pool(1, worker_settings(cfg.download))
    small = pool(30_000).map(decodes_200x200, [0])
    large = pool(50_000).map(decodes_200x200, [0])
    print(small, large, download_worker._context(30_000).get_start_method(),
          download_worker._context(50_000).get_start_method())
    print(pool(30_000).map(modules, [0]), pool(50_000).map(modules, [0]))
'''


def test_each_pool_s_workers_read_its_pixel_limit(tmp_path):
    """OpenCV reads download.max_pixels from the environment once, when it is imported: the
    workers forked from the server that imported it hold the first pool's limit, and a pool
    with another limit must not get them. Either way a worker starts with img2dataset imported
    and without torch (half of img2dataset's import) or huggingface_hub, which it does not use,
    and can still import both; wandb, which img2dataset's logger imports, stands in until first
    used; and its resizer's OpenCV records what it encodes, for the checks (encoded_pixels.py),
    and its albumentations builds each transform once (cached_transforms.py)."""
    import subprocess
    import sys
    script = tmp_path / "limits.py"
    script.write_text(PIXEL_LIMIT_SCRIPT)
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["[False]", "[True]", "forkserver", "spawn"], proc.stdout
    worker = ("(True, False, True, False, True, 'OnFirstUse', 'wandb.sdk.data_types.table', 'module', "
              "'RecordingCv2', 'CachedTransforms')")
    assert lines[1] == f"[{worker}] [{worker}]", proc.stdout


SILENCE_SCRIPT = '''
import os, sys, threading
from witcurate.filters import urls
from witcurate.pipeline import download_worker
from witcurate.pipeline import download_preload    # img2dataset as a download worker has it
import img2dataset.resizer as resizer
if sys.argv[1] == "ours":
    download_worker.install(download_worker.WorkerSettings(urls.AddressPolicy(), 10_000_000))
streams = [os.readlink(f"/proc/self/fd/{fd}") for fd in (1, 2)]
fds = len(os.listdir("/proc/self/fd"))

def decode_many():
    for _ in range(250):
        with resizer.SuppressStdoutStderr():
            os.write(2, b"libjpeg noise\\n")

threads = [threading.Thread(target=decode_many) for _ in range(16)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print([os.readlink(f"/proc/self/fd/{fd}") for fd in (1, 2)] == streams, len(os.listdir("/proc/self/fd")) - fds)
print("still heard", file=sys.stderr)
'''


def test_decoding_threads_leave_the_worker_s_output_where_it_was(tmp_path):
    """img2dataset silences each decode by swapping file descriptors 1 and 2, per thread; with a
    worker's threads decoding at once its stdout and stderr end at /dev/null for good. The
    download workers' silence is shared by the threads: quiet while any decodes, restored after,
    no descriptor left open. (With img2dataset's own, `python silence.py plain`, this script
    printed nothing in 3 of 3 trials.)"""
    import subprocess
    import sys
    script = tmp_path / "silence.py"
    script.write_text(SILENCE_SCRIPT)
    ours = subprocess.run([sys.executable, str(script), "ours"], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1"))
    assert ours.stdout.split() == ["True", "0"], ours.stderr[-2000:]
    assert ours.stderr.strip().splitlines()[-1:] == ["still heard"]
    assert "libjpeg noise" not in ours.stderr


WORKER_IMPORT_SCRIPT = '''
import sys
from witcurate.config import DownloadSection
from witcurate.pipeline.download_shard import DownloadShard
DownloadShard(DownloadSection(), "hash", "/nowhere", "token").setup()
print("img2dataset" in sys.modules)
DownloadShard(DownloadSection(), "hash", "/nowhere", "token", in_driver=False).setup()
import img2dataset.main
print("torch" in sys.modules)
'''


def test_a_beam_worker_process_drives_img2dataset_without_torch(tmp_path):
    """Where Beam runs DownloadShard in worker processes of its own (multi-process, Dataflow), its
    set-up imports img2dataset as the download workers do, without torch; in the driver it leaves
    img2dataset alone, for a trainer there may later want webdataset's torch classes."""
    import subprocess
    import sys
    script = tmp_path / "worker_import.py"
    script.write_text(WORKER_IMPORT_SCRIPT)
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, env=dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["False", "False"], proc.stdout


UNGUARDED_SCRIPT = '''
import pyarrow as pa, pyarrow.parquet as pq, sys
from witcurate import schemas
from witcurate.config import Config
from witcurate.pipeline.download import DownloadStage
from witcurate.pipeline.runner import run_stage
root = sys.argv[1] if len(sys.argv) > 1 else "."
rows = [{"uid": "u0", "url": "http://127.0.0.1:1/x.jpg", "caption": "a red circle", "source": "t",
         "query_ids": [0], "keep_probability": 1.0}]
import os
os.makedirs(root + "/in", exist_ok=True)
pq.write_table(pa.Table.from_pylist(rows, schemas.BALANCED), root + "/in/part-00000.parquet")
cfg = Config()
cfg.download.processes_count = 1
cfg.download.allow_private = ["127.0.0.1:1"]
cfg.download.obey_robots = False     # nothing listens there: its robots.txt would refuse the URL
run_stage(DownloadStage(), cfg, root + "/out", {"in": root + "/in"}, progress=lambda m: None)
'''


def test_a_script_without_a_main_guard_fails_with_advice_instead_of_hanging(tmp_path):
    """Spawned download workers import the calling script again; without the guard each one dies
    at start-up and multiprocessing would replace it forever. The first death ends the stage,
    long before the start-up timeout (300 s by default, left so here: the run's own limit is
    less), and the warm-up's failure is not tried again by the stage."""
    import subprocess
    import sys
    script = tmp_path / "unguarded.py"
    script.write_text(UNGUARDED_SCRIPT)
    env = {k: v for k, v in os.environ.items() if k != "WITCURATE_WORKER_STARTUP_S"}
    proc = subprocess.run([sys.executable, str(script), str(tmp_path)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=200)
    assert proc.returncode != 0
    assert "a download worker process died while starting" in proc.stderr, proc.stderr[-3000:]
    assert 'if __name__ == "__main__":' in proc.stderr, proc.stderr[-3000:]
    assert not (tmp_path / "out").exists()
