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

Metadata mode (WITCURATE_BENCH_METADATA=1): the stages that move metadata only, at 100k and 1M
candidates (WITCURATE_BENCH_METADATA_SIZES=10000,100000 for others): ingest, match and balance
on a generated pool without images (benchmarks/metadata_world.py), then cap and the real shards
stage on the rows download, dedupe and score would leave, generated from balance's output with
placeholder image tars (64 bytes a sample). The query list is the demo's (its dump, page views
and WordNet), built once. Besides the stage's own wall time it reports the process's, the
seconds the runner spent digesting the output (manifest `content.seconds`, inside the process
time), the peak RSS of the stage's whole process tree (sampled from /proc every 0.2 s, summed
over the process and its descendants) and the machine's load average when the stage started and
ended: the machine may be shared.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from witcurate.demo.hosts import allow_private

REPO = Path(__file__).resolve().parents[1]
STAGES = ["ingest", "match", "balance", "download", "dedupe", "score", "cap", "shards"]
SIZES = [1_000, 10_000] + ([100_000] if os.environ.get("WITCURATE_BENCH_100K") == "1" else [])
METADATA = os.environ.get("WITCURATE_BENCH_METADATA") == "1"
METADATA_STAGES = ["ingest", "match", "balance", "cap", "shards"]
METADATA_SIZES = [int(v) for v in os.environ.get("WITCURATE_BENCH_METADATA_SIZES", "100000,1000000").split(",")]
LIFTED = 1_000_000_000
PAGE = os.sysconf("SC_PAGE_SIZE")
# The stages the run has, so that cap reads score's output (the embedding steps are not measured).
RUN_STAGES = "run.stages=[queries,ingest,match,balance,download,dedupe,scorer,score,cap,shards]"


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
        "score.pretrained=''", "score.threshold=null", "score.top_fraction=0.7", RUN_STAGES,
    ]
    return [arg for v in values for arg in ("--set", v)]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    nltk = REPO / ".nltk_data"
    if nltk.exists():
        env.setdefault("NLTK_DATA", str(nltk))
    return env


def _tree_rss(root: int) -> int:
    """Bytes resident in process `root` and all its descendants now (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        try:
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * PAGE
        except (OSError, IndexError, ValueError):
            pass
        todo += children.get(pid, [])
    return total


def _sample_tree(pid: int, done: threading.Event, peak: list[int]) -> None:
    while not done.wait(0.2):
        peak[0] = max(peak[0], _tree_rss(pid))


def _witcurate(args: list[str], log: Path) -> dict:
    """Run one `witcurate` command: process wall seconds, the largest single process's peak RSS
    (os.wait4) and the peak RSS of its process tree (sampled), both in MiB, and the load average
    at start and end."""
    exe = REPO / ".venv" / "bin" / "witcurate"
    cmd = ([str(exe)] if exe.exists() else [sys.executable, "-m", "witcurate.cli"]) + args
    load_start = os.getloadavg()[0]
    start = time.perf_counter()
    with open(log, "ab") as f:
        proc = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=f, stderr=subprocess.STDOUT)
        done, peak = threading.Event(), [0]
        sampler = threading.Thread(target=_sample_tree, args=(proc.pid, done, peak), daemon=True)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        done.set()
        sampler.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:3])} failed (rc {proc.returncode}); see {log}:\n"
                           + log.read_text(errors="replace")[-3000:])
    return {"process_seconds": round(wall, 2), "rss_mb": usage.ru_maxrss // 1024,
            "tree_mb": max(peak[0] // 2**20, usage.ru_maxrss // 1024),
            "load": (round(load_start, 1), round(os.getloadavg()[0], 1))}


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
        results[name] = run_stage_process(name, out, sets, log)
    return results


def run_stage_process(name: str, out: Path, sets: list[str], log: Path) -> dict:
    """`witcurate NAME --out OUT/NAME` in its own process; its counts, times and memory."""
    proc = _witcurate([name, "--out", str(out / name), "--config", "configs/demo.yaml", *sets], log)
    m = _manifest(out / name)
    result = {"in": m["counts"]["in"], "kept": m["counts"]["kept"], "seconds": m["wall_seconds"],
              "content_seconds": (m.get("content") or {}).get("seconds"), **proc}
    print(f"  {name:<9} in={result['in']:>9,} kept={result['kept']:>9,} {result['seconds']:>7.1f}s "
          f"(process {proc['process_seconds']:.1f}s, digest {result['content_seconds']}s)  "
          f"peak {proc['rss_mb']:,} MiB, tree {proc['tree_mb']:,} MiB, load {proc['load'][0]}->{proc['load'][1]}",
          flush=True)
    return result


def format_table(by_size: dict[int, dict], stages: list[str]) -> str:
    sizes = sorted(by_size)
    head = f"{'stage':<9}" + "".join(
        f" | {f'{s // 1000}k in':>9} {'s':>7} {'ms/row':>7} {'tree MiB':>8} {'load':>9}" for s in sizes)
    head += "".join(f" | {f'x {sizes[i - 1] // 1000}k->{sizes[i] // 1000}k':>12}" for i in range(1, len(sizes)))
    lines = [head, "-" * len(head)]
    for name in stages + ["chain"]:
        cells = []
        for s in sizes:
            r = by_size[s].get(name)
            if r is None:
                cells.append(f" | {'(once)':>9} {'':>7} {'':>7} {'':>8} {'':>9}")
                continue
            per = 1000 * r["seconds"] / r["in"] if r["in"] else float("nan")
            load = "{}->{}".format(*r["load"]) if r.get("load") else ""
            cells.append(f" | {r['in']:>9,} {r['seconds']:>7.1f} {per:>7.3f} {r['tree_mb']:>8,} {load:>9}")
        for i in range(1, len(sizes)):
            a, b = by_size[sizes[i - 1]].get(name), by_size[sizes[i]].get(name)
            cells.append(f" | {b['seconds'] / a['seconds']:>11.2f}x" if a and b and a["seconds"] > 0
                         else f" | {'':>12}")
        lines.append(f"{name:<9}" + "".join(cells))
    return "\n".join(lines)


def measure_metadata(size: int, root: Path, queries_dir: Path) -> dict:
    """The metadata stages at `size` generated candidates (no images): {stage: results}."""
    from benchmarks.metadata_world import write_candidates, write_scored
    out, log = root / f"meta-run-{size}", root / f"meta-log-{size}.txt"
    t0 = time.perf_counter()
    write_candidates(root / f"meta-pool-{size}", size)
    print(f"  pool of {size:,} candidates generated in {time.perf_counter() - t0:.1f}s", flush=True)
    out.mkdir()
    shutil.copytree(queries_dir, out / "queries")
    sets = [arg for v in (f"ingest.sources=['{root}/meta-pool-{size}/*.parquet']",
                          f"balance.per_query={LIFTED}", f"cap.per_query={LIFTED}", RUN_STAGES)
            for arg in ("--set", v)]
    results = {}
    for name in METADATA_STAGES:
        if name == "cap":
            t0 = time.perf_counter()
            n = write_scored(out / "balance", out / "download", out / "score")
            print(f"  score rows and image tars for {n:,} pairs generated in "
                  f"{time.perf_counter() - t0:.1f}s", flush=True)
        results[name] = run_stage_process(name, out, sets, log)
    return results


def build_queries(root: Path) -> Path:
    """The demo's query list (a small demo world's dump, page views, WordNet), built once."""
    world, out, log = root / "queries-world", root / "queries-run", root / "queries-log.txt"
    sets = _overrides(world, _free_port(), 1_000)
    _witcurate(["demo", "generate", "--config", "configs/demo.yaml", *sets], log)
    _witcurate(["queries", "--out", str(out / "queries"), "--config", "configs/demo.yaml", *sets], log)
    return out / "queries"


def _summarise(by_size: dict[int, dict], stages: list[str], label: str, shown: list[str]) -> list[dict]:
    for results in by_size.values():
        rows = [results[s] for s in stages]
        results["chain"] = {"in": rows[0]["in"], "seconds": round(sum(r["seconds"] for r in rows), 3),
                            "tree_mb": max(r["tree_mb"] for r in rows)}
    print("\nper stage: input rows, stage wall seconds, ms per input row, peak RSS of the stage's "
          "process tree (MiB), 1-min load average at start->end; growth of time per 10x "
          "(chain = the stages summed, queries excluded)")
    print(format_table(by_size, shown + stages))
    sizes = sorted(by_size)
    rows = []
    for name in stages + ["chain"]:
        for small, big in zip(sizes, sizes[1:]):
            growth = by_size[big][name]["seconds"] / by_size[small][name]["seconds"]
            rows.append({"name": f"{label} {name} {small // 1000}k->{big // 1000}k",
                         "ours": growth, "baseline": big / small, "unit": "x time",
                         "ratio": growth / (big / small), "target": "<= 1.1 (<= 11x per 10x)"})
    return rows


def run() -> list[dict]:
    keep = os.environ.get("WITCURATE_BENCH_DIR")
    root = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="witcurate-scaling-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        by_size: dict[int, dict] = {}
        if METADATA:
            queries_dir = build_queries(root)
            for size in METADATA_SIZES:
                print(f"scaling, metadata only: {size:,} candidates", flush=True)
                by_size[size] = measure_metadata(size, root, queries_dir)
            return _summarise(by_size, METADATA_STAGES, "scaling-meta", [])
        queries_dir = None
        for size in SIZES:
            print(f"scaling: {size:,} candidates", flush=True)
            by_size[size] = measure(size, root, queries_dir)
            queries_dir = queries_dir or root / f"run-{size}" / "queries"
        return _summarise(by_size, STAGES, "scaling", ["queries"])
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    for row in run():
        print(row)
