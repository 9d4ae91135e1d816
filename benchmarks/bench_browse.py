"""The run report (`witcurate browse`) of a 100,000-candidate run: build time, size, first page.

A generated run directory shaped like the 100k scaling run (docs/costs.md): 100,000 candidates
into ingest, 81,500 downloaded images in 82 img2dataset-style tars, 10,500 duplicates, 21,170
pairs under the CLIP threshold, 49,830 pairs over 3,000 queries (500 of them at a cap of 40).
Only the images are cheap: 256 distinct 96 px JPEGs repeated.

Targets:
  * building the report < 10% of the run's shards-stage time: the real shards stage is run on
    the same run directory and timed;
  * the whole site < 50 MB;
  * the first page interactive in < 2 s in headless Chromium (navigation timing's
    domInteractive); the queries view, the largest data file, is timed too.
Baseline for the build: the plain libraries doing the same reads and writes (pyarrow reading the
same columns, tarfile + Pillow making as many thumbnails, json writing the data), not through
witcurate.browse.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from witcurate import schemas

N_CANDIDATES = 100_000
FLOW = {"ingest": (100_000, 94_000), "match": (94_000, 94_000), "balance": (94_000, 94_000),
        "download": (94_000, 81_500), "dedupe": (81_500, 71_000), "score": (71_000, 49_830),
        "cap": (49_830, 49_830)}
REASONS = {"ingest": ["caption_boilerplate", "caption_filename", "bad_url"],
           "download": ["http_404", "http_500", "timeout", "connection_error", "image_too_small", "not_an_image",
                        "opt_out_header", "private_address", "too_many_pixels", "truncated"],
           "dedupe": ["exact_duplicate", "near_duplicate"], "score": ["clip_score_below"]}
PER_TAR = 1000
QUERIES, AT_CAP, CAP = 3000, 500, 40
SHAPES = ["circle", "square", "star", "heart", "ring", "cross", "diamond", "triangle"]
COLOURS = ["red", "blue", "green", "black", "white", "pink", "purple", "orange"]


def uid(i: int) -> str:
    return hashlib.sha256(f"c{i}".encode()).hexdigest()[:32]


def _jpegs(n: int = 256) -> list[bytes]:
    out = []
    for i in range(n):
        img = Image.new("RGB", (96 + i % 32, 96), ((i * 37) % 256, (i * 91) % 256, (i * 53) % 256))
        img.paste((255 - (i * 37) % 256, 40, 90), (20, 20, 60, 60 + i % 20))
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=85)
        out.append(buf.getvalue())
    return out


def _row(i: int, images: list[bytes] | None = None) -> dict:
    row = {"uid": uid(i), "url": f"https://img.example.com/{i}.jpg",
           "caption": f"{COLOURS[i % 8]} {SHAPES[(i // 8) % 8]} on the grass, photo {i}",
           "source": "pool.parquet", "query_ids": [i % QUERIES], "keep_probability": 1.0}
    if images is not None:
        data = images[i % len(images)]
        row.update(shard=f"images/{i // PER_TAR:05d}.tar", key=f"{i:07d}", width=96, height=96,
                   original_width=96, original_height=96, sha256=hashlib.sha256(data).hexdigest(), phash=i)
    return row


def _stage(out: Path, name: str, kept: pa.Table, rejects: list[dict], n_in: int, extra: dict | None = None):
    d = out / name
    (d / "rejects").mkdir(parents=True)
    pq.write_table(kept, d / "part-00000.parquet")
    pq.write_table(pa.Table.from_pylist(rejects, schema=schemas.REJECTS), d / "rejects" / "part-00000.parquet")
    reasons: dict[str, int] = {}
    for r in rejects:
        reasons[r["reason"]] = reasons.get(r["reason"], 0) + 1
    manifest = {"stage": name, "fingerprint": f"fp-{name}", "counts": {
        "in": n_in, "kept": kept.num_rows, "rejected": len(rejects), "reasons": reasons}, **(extra or {})}
    (d / "_SUCCESS.json").write_text(json.dumps(manifest))


def _rejects(name: str, ids: range, images: list[bytes] | None, detail=lambda i: "") -> list[dict]:
    reasons = REASONS[name]
    return [{"uid": uid(i), "reason": reasons[i % len(reasons)], "detail": detail(i),
             "record": json.dumps(_row(i, images) | ({"clip_score": 0.1 + (i % 500) / 1000} if name == "score" else {}))}
            for i in ids]


def _write_tars(images_dir: Path, ids: range, images: list[bytes]) -> None:
    images_dir.mkdir(parents=True)
    for start in range(ids.start, ids.stop, PER_TAR):
        with tarfile.open(images_dir / f"{start // PER_TAR:05d}.tar", "w") as tar:
            for i in range(start, min(start + PER_TAR, ids.stop)):
                for name, data in ((f"{i:07d}.jpg", images[i % len(images)]), (f"{i:07d}.txt", b"caption"),
                                   (f"{i:07d}.json", b"{}")):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))


def _placeholder(n: int, tag: str) -> pa.Table:
    return pa.table({"uid": [f"{tag}-{i}" for i in range(n)]})


def make_large_run(out: Path) -> None:
    """The run directory described at the top; the stages' counts balance as a real run's do."""
    images = _jpegs()
    f = FLOW
    _stage(out, "ingest", _placeholder(f["ingest"][1], "i"), _rejects("ingest", range(f["ingest"][1], N_CANDIDATES), None),
           f["ingest"][0])
    _stage(out, "match", _placeholder(f["match"][1], "m"), [], f["match"][0])
    _stage(out, "balance", _placeholder(f["balance"][1], "b"), [], f["balance"][0])
    kept_dl = f["download"][1]
    _write_tars(out / "download" / "images", range(kept_dl), images)
    downloaded = pa.Table.from_pylist([_row(i, images) for i in range(kept_dl)], schema=schemas.DOWNLOADED)
    _stage(out, "download", downloaded, _rejects("download", range(kept_dl, f["download"][0]), None), f["download"][0])
    kept_dd = f["dedupe"][1]
    _stage(out, "dedupe", downloaded.slice(0, kept_dd),
           _rejects("dedupe", range(kept_dd, kept_dl), images, lambda i: f"duplicate of {uid(i % 1000)} (Hamming 1)"),
           kept_dl)
    kept_sc = f["score"][1]
    scored = downloaded.slice(0, kept_sc).append_column("clip_score", pa.array(
        [0.3 + (i % 700) / 1000 for i in range(kept_sc)], pa.float32())).append_column(
        "clip_model", pa.array(["ViT-B-32:openai"] * kept_sc))
    _stage(out, "score", scored, _rejects("score", range(kept_sc, kept_dd), images), kept_dd,
           {"threshold_used": 0.3, "keep_rule": {"kind": "threshold", "value": 0.3}, "model": "ViT-B-32:openai"})
    query = [j // CAP if j < AT_CAP * CAP else AT_CAP + (j - AT_CAP * CAP) % (QUERIES - AT_CAP) for j in range(kept_sc)]
    capped = scored.append_column("query_id", pa.array(query, pa.int32())).append_column(
        "query", pa.array([f"{COLOURS[q % 8]} {SHAPES[(q // 8) % 8]} {q}" for q in query]))
    _stage(out, "cap", capped, [], kept_sc, {"config": {"cap": {"per_query": CAP}}})


def time_shards_stage(out: Path) -> float:
    from witcurate.config import Config
    from witcurate.pipeline.runner import run_stage
    from witcurate.pipeline.shards import ShardsStage
    stage = ShardsStage()
    cfg = Config()
    start = time.perf_counter()
    run_stage(stage, cfg, str(out / "shards"), stage.default_inputs(cfg, str(out)), [], progress=lambda _: None)
    return time.perf_counter() - start


def plain_libraries(out: Path, n_thumbs: int, dest: Path) -> float:
    """The same reads and writes with pyarrow, tarfile, Pillow and json alone: the same parquet
    columns, and as many thumbnails of images spread evenly through the tars, each tar walked
    with tarfile until its last wanted image."""
    start = time.perf_counter()
    for name in ("ingest", "download", "dedupe", "score", "cap"):
        pq.read_table(out / name / "rejects", columns=["uid", "reason", "detail", "record"])
    pq.read_table(out / "dedupe", columns=["uid", "url", "caption", "shard", "key"])
    pq.read_table(out / "score", columns=["uid", "url", "caption", "shard", "key", "clip_score"])
    cap = pq.read_table(out / "cap", columns=["uid", "url", "caption", "shard", "key", "clip_score", "query"])
    downloaded = FLOW["download"][1]
    wanted = {f"{i:07d}.jpg" for i in range(0, downloaded, max(1, downloaded // n_thumbs))}
    dest.mkdir(parents=True, exist_ok=True)
    for path in sorted((out / "download" / "images").glob("*.tar")):
        with tarfile.open(path) as tar:
            left = {m for m in wanted if int(m[:7]) // PER_TAR == int(path.stem)}
            for member in tar:
                if not left:
                    break
                if member.name in left:
                    left.discard(member.name)
                    with Image.open(io.BytesIO(tar.extractfile(member).read())) as img:
                        small = img.convert("RGB")
                        small.thumbnail((128, 128))
                        small.save(dest / member.name, "JPEG", quality=80)
    (dest / "queries.json").write_text(json.dumps(cap.slice(0, 20_000).to_pylist(), default=str))
    return time.perf_counter() - start


def site_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def chromium_timings(report: Path) -> dict[str, float] | None:
    """domInteractive of the first page, and the ms until the queries view has rendered."""
    if not (Path("/usr/bin/chromium").exists() and Path("/usr/bin/chromedriver").exists()):
        print("headless Chromium not installed (apt-get install chromium chromium-driver): no page timings")
        return None
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1280,800", f"--user-data-dir={tempfile.mkdtemp(prefix='bench-chromium-')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path="/usr/bin/chromedriver"))
    try:
        driver.get((report / "index.html").as_uri())
        first = driver.execute_script(
            "const t = performance.getEntriesByType('navigation')[0]; return t.domInteractive - t.startTime")
        start = time.perf_counter()
        driver.get((report / "view.html").as_uri() + "#queries")
        while not driver.execute_script("return document.querySelectorAll('#query-list li').length > 0"):
            time.sleep(0.01)
        return {"first_page_ms": first, "queries_view_ms": (time.perf_counter() - start) * 1000}
    finally:
        driver.quit()


def run() -> list[dict]:
    from witcurate.browse.build import build_report
    with tempfile.TemporaryDirectory(prefix="bench-browse-") as tmp:
        out = Path(tmp) / "run"
        t0 = time.perf_counter()
        make_large_run(out)
        print(f"generated a {N_CANDIDATES:,}-candidate run in {time.perf_counter() - t0:.1f}s")
        shards_s = time_shards_stage(out)
        report = build_report(str(out), progress=print)
        build_s = report["seconds"]
        plain_s = plain_libraries(out, report["thumbnails"], Path(tmp) / "plain")
        size_mb = site_bytes(out / "browse") / 1e6
        pages = chromium_timings(out / "browse")
    print(f"shards stage {shards_s:.1f}s; report {build_s:.2f}s ({report['thumbnails']} thumbnails, "
          f"{report['views']} views), {size_mb:.1f} MB; plain libraries {plain_s:.2f}s; pages {pages}")
    rows = [
        {"name": "browse build / shards stage", "ours": build_s, "baseline": shards_s, "unit": "s",
         "ratio": build_s / shards_s, "target": "< 0.10"},
        {"name": "browse build / plain libraries", "ours": build_s, "baseline": plain_s, "unit": "s",
         "ratio": build_s / plain_s, "target": "(informational)"},
        {"name": "browse site size / 50 MB", "ours": size_mb, "baseline": 50.0, "unit": "MB",
         "ratio": size_mb / 50.0, "target": "< 1.0"},
    ]
    if pages:
        rows.append({"name": "browse first page / 2 s", "ours": pages["first_page_ms"], "baseline": 2000.0,
                     "unit": "ms", "ratio": pages["first_page_ms"] / 2000.0, "target": "< 1.0"})
        rows.append({"name": "browse queries view / 2 s", "ours": pages["queries_view_ms"], "baseline": 2000.0,
                     "unit": "ms", "ratio": pages["queries_view_ms"] / 2000.0, "target": "(informational)"})
    return rows


if __name__ == "__main__":
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    for row in run():
        print(row)
