"""Download: the stage against plain img2dataset, the same N images from the same local host.

A loopback HTTP server (its own process) serves N JPEGs (512x384). Each side runs in a fresh
Python process and is timed around its one call, imports excluded:
  * plain: img2dataset.download(parquet of the URLs, webdataset output, resize to 224, 2 processes
    x 16 threads, N/2 samples per shard so both processes work, its other defaults);
  * ours:  run_stage(DownloadStage) over a balance-stage directory of the same URLs, same image
    settings, one shard (fetched as two img2dataset shards, one per process), which also checks
    URL safety, computes the perceptual hash of every stored image and writes the stage outputs.
Best of `ROUNDS` alternating runs each; prints images/s and ours/plain (target >= 0.9).
"""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

N = int(os.environ.get("BENCH_DOWNLOAD_N", "2000"))
ROUNDS = int(os.environ.get("BENCH_DOWNLOAD_ROUNDS", "2"))
DISTINCT = 200
SETTINGS = dict(image_size=224, resize_mode="keep_ratio", resize_only_if_bigger=True,
                encode_format="jpg", encode_quality=95, timeout=10, retries=0,
                processes_count=2, thread_count=16)


def _serve(port_queue) -> None:
    import random

    from PIL import Image, ImageDraw

    rng = random.Random(0)
    bodies = []
    for _ in range(DISTINCT):
        img = Image.new("RGB", (512, 384), tuple(rng.randint(0, 255) for _ in range(3)))
        d = ImageDraw.Draw(img)
        for _ in range(6):
            x, y, r = rng.randint(0, 512), rng.randint(0, 384), rng.randint(10, 120)
            d.ellipse([x - r, y - r, x + r, y + r], fill=tuple(rng.randint(0, 255) for _ in range(3)))
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=90)
        bodies.append(buf.getvalue())

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            body = bodies[int(self.path.rsplit("/", 1)[-1].split(".")[0]) % DISTINCT]
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    class Server(ThreadingHTTPServer):
        request_queue_size = 256
        daemon_threads = True

    httpd = Server(("127.0.0.1", 0), Handler)
    port_queue.put(httpd.server_address[1])
    httpd.serve_forever()


PLAIN = """
import json, sys, time
import img2dataset
if __name__ == "__main__":
    args = json.loads(sys.argv[1])
    t0 = time.perf_counter()
    img2dataset.download(url_list=args["urls"], input_format="parquet", url_col="url", caption_col="caption",
                         output_format="webdataset", output_folder=args["out"], enable_wandb=False,
                         number_sample_per_shard=args["per_shard"], distributor="multiprocessing",
                         **args["settings"])
    print("SECONDS", time.perf_counter() - t0)
"""

OURS = """
import json, sys, time
import img2dataset
from witcurate.config import Config
from witcurate.pipeline.download import DownloadStage
from witcurate.pipeline.runner import run_stage
if __name__ == "__main__":
    args = json.loads(sys.argv[1])
    cfg = Config()
    for k, v in args["settings"].items():
        setattr(cfg.download, k, v)
    cfg.download.urls_per_shard = args["n"]
    cfg.download.min_side = 0
    cfg.download.allow_private = [f"127.0.0.1:{args['port']}"]
    t0 = time.perf_counter()
    m = run_stage(DownloadStage(), cfg, args["out"], {"in": args["in"]}, progress=lambda s: None)
    print("SECONDS", time.perf_counter() - t0)
    print("KEPT", m["counts"]["kept"])
"""


def _run(code: str, args: dict) -> float:
    env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1")
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(code)
        script = f.name
    try:
        out = subprocess.run([sys.executable, script, json.dumps(args)], capture_output=True, text=True,
                             env=env, cwd=os.getcwd(), timeout=900)
    finally:
        os.unlink(script)
    lines = {line.split()[0]: line.split()[1] for line in out.stdout.splitlines()
             if line.startswith(("SECONDS", "KEPT"))}
    if "SECONDS" not in lines:
        raise RuntimeError(f"benchmark run failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")
    if "KEPT" in lines and int(lines["KEPT"]) != N:
        raise RuntimeError(f"the stage kept {lines['KEPT']} of {N} images")
    return float(lines["SECONDS"])


def run() -> list[dict]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from witcurate import schemas

    ctx = multiprocessing.get_context("spawn")
    ports = ctx.Queue()
    server = ctx.Process(target=_serve, args=(ports,), daemon=True)
    server.start()
    port = ports.get(timeout=120)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            rows = [{"uid": f"{i:08d}", "url": f"http://127.0.0.1:{port}/img/{i}.jpg",
                     "caption": f"image {i}", "source": "bench", "query_ids": [0], "keep_probability": 1.0}
                    for i in range(N)]
            os.makedirs(f"{tmp}/balance")
            pq.write_table(pa.Table.from_pylist(rows, schemas.BALANCED), f"{tmp}/balance/part-00000.parquet")
            plain_s, ours_s = [], []
            for r in range(ROUNDS):
                plain_s.append(_run(PLAIN, {"urls": f"{tmp}/balance/part-00000.parquet",
                                            "out": f"{tmp}/plain{r}", "per_shard": (N + 1) // 2,
                                            "settings": SETTINGS}))
                ours_s.append(_run(OURS, {"in": f"{tmp}/balance", "out": f"{tmp}/ours{r}/download",
                                          "n": N, "port": port, "settings": SETTINGS}))
                print(f"round {r}: plain {N / plain_s[-1]:.0f} images/s, ours {N / ours_s[-1]:.0f} images/s",
                      flush=True)
    finally:
        server.terminate()
        server.join()
    plain, ours = N / min(plain_s), N / min(ours_s)
    return [{"name": f"download ({N} images, local host)", "ours": ours, "baseline": plain,
             "unit": "images/s", "ratio": ours / plain, "target": ">=0.9x plain img2dataset"}]


if __name__ == "__main__":
    for r in run():
        print(f"{r['name']}: ours {r['ours']:.0f} vs plain {r['baseline']:.0f} {r['unit']} "
              f"= {r['ratio']:.2f}x (target {r['target']})")
