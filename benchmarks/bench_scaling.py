"""Scaling: the whole chain on 1k and 10k demo candidates (100k with WITCURATE_BENCH_100K=1).

For each size a demo world with that many pool candidates is generated (not timed) and every
stage that grows with the candidates runs as its own `witcurate <stage>` process under one run
directory: ingest, match, balance, download (images served by the demo's loopback host, with its
injected faults), dedupe, score, cap, shards. Left out: `scorer` and `train` (they train on the
trusted set and the shipped shards, whatever the pool size) and `queries`, which reads the
Wikipedia dump, not the candidates: it runs once, is reported once, and its output is shared.

So that every stage sees 10x the rows at 10x the candidates, the per-query caps are lifted
(balance.per_query, cap.per_query) and the score stage keeps the top 70% under a randomly
initialised witcurate-tiny (the same compute per pair as a trained scorer).

Time per stage is the stage's own wall time from its manifest (process start and imports
excluded); cost per pair is that time over the stage's input rows. Peak memory is the stage
process's maximum RSS (os.wait4's rusage: the largest process of its tree that was reaped,
img2dataset's workers included). The rows report time at 10k / time at 1k against linear (10x);
target: at most 11x per 10x data, ratio <= 1.1.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from witcurate.demo.hosts import allow_private

REPO = Path(__file__).resolve().parents[1]
STAGES = ["ingest", "match", "balance", "download", "dedupe", "score", "cap", "shards"]
SIZES = [1_000, 10_000] + ([100_000] if os.environ.get("WITCURATE_BENCH_100K") == "1" else [])
LIFTED = 1_000_000_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _overrides(world: Path, port: int, pool: int) -> list[str]:
    values = [
        f"demo.root={world}", f"demo.port={port}", f"demo.pool_size={pool}",
        "demo.trusted_size=20", "demo.eval_size=10",
        f"queries.dumps=[{world}/dump/enwiki-demo-pages-articles-multistream.xml.bz2]",
        f"queries.pageviews=['{world}/pageviews/pageviews-*.gz']",
        f"ingest.sources=[{world}/pool/candidates.parquet]",
        f"download.allow_private={allow_private('127.0.0.1', port)}",     # the demo's 8 hosts
        f"balance.per_query={LIFTED}", f"cap.per_query={LIFTED}",
        "score.pretrained=''", "score.threshold=null", "score.top_fraction=0.7",
    ]
    return [arg for v in values for arg in ("--set", v)]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    nltk = REPO / ".nltk_data"
    if nltk.exists():
        env.setdefault("NLTK_DATA", str(nltk))
    return env


def _witcurate(args: list[str], log: Path) -> tuple[float, int]:
    """Run one `witcurate` command; (process wall seconds, peak RSS in MiB)."""
    exe = REPO / ".venv" / "bin" / "witcurate"
    cmd = ([str(exe)] if exe.exists() else [sys.executable, "-m", "witcurate.cli"]) + args
    start = time.perf_counter()
    with open(log, "ab") as f:
        proc = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=f, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:3])} failed (rc {proc.returncode}); see {log}:\n"
                           + log.read_text(errors="replace")[-3000:])
    return wall, usage.ru_maxrss // 1024


def _manifest(stage_dir: Path) -> dict:
    return json.loads((stage_dir / "_SUCCESS.json").read_text())


def measure(size: int, root: Path, queries_dir: Path | None) -> dict:
    """Every stage of the chain at `size` candidates: {stage: {in, kept, seconds, process_seconds, rss_mb}}."""
    world, out, log = root / f"world-{size}", root / f"run-{size}", root / f"log-{size}.txt"
    sets = _overrides(world, _free_port(), size)
    t0 = time.perf_counter()
    _witcurate(["demo", "generate", "--config", "configs/demo.yaml", *sets], log)
    print(f"  world of {size:,} candidates generated in {time.perf_counter() - t0:.1f}s", flush=True)
    out.mkdir()
    results = {}
    names = STAGES if queries_dir is not None else ["queries"] + STAGES
    if queries_dir is not None:
        shutil.copytree(queries_dir, out / "queries")
    for name in names:
        wall, rss = _witcurate([name, "--out", str(out / name), "--config", "configs/demo.yaml", *sets], log)
        m = _manifest(out / name)
        results[name] = {"in": m["counts"]["in"], "kept": m["counts"]["kept"],
                         "seconds": m["wall_seconds"], "process_seconds": round(wall, 2), "rss_mb": rss}
        print(f"  {name:<9} in={m['counts']['in']:>7,} kept={m['counts']['kept']:>7,} "
              f"{m['wall_seconds']:>7.1f}s  peak {rss:,} MiB", flush=True)
    return results


def format_table(by_size: dict[int, dict]) -> str:
    sizes = sorted(by_size)
    head = f"{'stage':<9}" + "".join(
        f" | {f'{s // 1000}k in':>8} {'s':>7} {'ms/pair':>8} {'MiB':>6}" for s in sizes)
    head += "".join(f" | {f'x {sizes[i - 1] // 1000}k->{sizes[i] // 1000}k':>12}" for i in range(1, len(sizes)))
    lines = [head, "-" * len(head)]
    for name in ["queries"] + STAGES + ["chain"]:
        cells = []
        for s in sizes:
            r = by_size[s].get(name)
            if r is None:
                cells.append(f" | {'(once)':>8} {'':>7} {'':>8} {'':>6}")
                continue
            per = 1000 * r["seconds"] / r["in"] if r["in"] else float("nan")
            cells.append(f" | {r['in']:>8,} {r['seconds']:>7.1f} {per:>8.3f} {r['rss_mb']:>6,}")
        for i in range(1, len(sizes)):
            a, b = by_size[sizes[i - 1]].get(name), by_size[sizes[i]].get(name)
            cells.append(f" | {b['seconds'] / a['seconds']:>11.2f}x" if a and b and a["seconds"] > 0
                         else f" | {'':>12}")
        lines.append(f"{name:<9}" + "".join(cells))
    return "\n".join(lines)


def run() -> list[dict]:
    keep = os.environ.get("WITCURATE_BENCH_DIR")
    root = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="witcurate-scaling-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        by_size: dict[int, dict] = {}
        queries_dir = None
        for size in SIZES:
            print(f"scaling: {size:,} candidates", flush=True)
            by_size[size] = measure(size, root, queries_dir)
            queries_dir = queries_dir or root / f"run-{size}" / "queries"
        for results in by_size.values():
            stages = [results[s] for s in STAGES]
            results["chain"] = {"in": stages[0]["in"], "seconds": round(sum(r["seconds"] for r in stages), 3),
                                "rss_mb": max(r["rss_mb"] for r in stages)}
        print("\nper stage: input rows, stage wall seconds, ms per input row, peak RSS (MiB); "
              "growth of time per 10x candidates (chain = the stages summed, queries excluded)")
        print(format_table(by_size))
        rows = []
        for name in STAGES + ["chain"]:
            for small, big in zip(SIZES, SIZES[1:]):
                growth = by_size[big][name]["seconds"] / by_size[small][name]["seconds"]
                rows.append({"name": f"scaling {name} {small // 1000}k->{big // 1000}k",
                             "ours": growth, "baseline": big / small, "unit": "x time",
                             "ratio": growth / (big / small), "target": "<= 1.1 (<= 11x per 10x)"})
        return rows
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    for row in run():
        print(row)
