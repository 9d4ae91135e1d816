"""Load: the download stage against the demo's fault-injecting image host, sweeping concurrency.

One demo world of N pool candidates (3,000 by default; 1.25% of them per injected fault kind,
1% per politeness fault) is generated (not timed) and served by the demo image host in this
process, on its 8 loopback hosts. Politeness stays on (configs/demo.yaml: robots.txt obeyed, 2
connections per host), so past 8 hosts x 2 connections more threads only wait. For each thread
count in THREADS the whole pool goes through the download stage with the demo's download settings
(configs/demo.yaml: 2 s timeout, no retries, 1,000 URLs per shard) and 2 processes x that many
threads, in a fresh process given LIMIT_S seconds (imports included); one that runs past it is
killed and counts as not sustained. Per setting:
  wall s      the stage's own wall time (imports excluded), from around run_stage
  URLs/s      input URLs over that wall time; images/s: kept images over it
  unaccounted input uids not ended exactly once (missing, doubled or unknown)
  mismatched  URLs whose fate is not the one their injected fault must give (the ground truth's
              kind -> reason mapping, as asserted by tests/test_download_load.py)
  peak RSS    the stage process tree's largest process (os.wait4's rusage, workers included)
  peak conns  the most connections the 8 hosts had open at once, together (sampled from
              /proc/net/tcp)

"Sustained": finished in time, 0 unaccounted, 0 mismatched. The highest concurrency the machine
sustains is the highest sustained setting whose URLs/s is at least 90% of the best sustained
setting's. Rows: URLs/s at the best setting against the lowest setting (informational), and the
unaccounted URLs and mismatched reasons over all settings (target 0).

    python -m benchmarks load        (BENCH_LOAD_N, BENCH_LOAD_THREADS=8,32,128,256, BENCH_LOAD_LIMIT_S)
"""

from __future__ import annotations

import collections
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from witcurate.demo.world import EXPECTED_DOWNLOAD_REASON as EXPECTED_REASON

REPO = Path(__file__).resolve().parents[1]
N = int(os.environ.get("BENCH_LOAD_N", "3000"))
THREADS = [int(t) for t in os.environ.get("BENCH_LOAD_THREADS", "8,32,128,256").split(",")]
PROCESSES = 2
LIMIT_S = float(os.environ.get("BENCH_LOAD_LIMIT_S", "300"))
SUSTAINED_SHARE = 0.9

def download_command(args: dict) -> list[str]:
    """`witcurate download` for the stage's input, output, config and overrides (the caller serves
    the images: the demo config's own host stays off)."""
    exe = REPO / ".venv" / "bin" / "witcurate"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "witcurate.cli"]
    return cmd + ["download", "--in", args["in"], "--out", args["out"], "--config", args["config"],
                  *[a for o in [*args["overrides"], "run.demo=false"] for a in ("--set", o)]]


def stage_result(out: str) -> dict:
    manifest = json.loads((Path(out) / "_SUCCESS.json").read_text())
    return {"seconds": manifest["wall_seconds"], "counts": manifest["counts"], "manifest": manifest}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _PeakConnections:
    """The most established server-side connections on a loopback port, sampled every 50 ms."""

    def __init__(self, port: int):
        self.needle = f":{port:04X}"
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            n = 0
            with open("/proc/net/tcp", encoding="ascii") as f:
                next(f)
                for line in f:
                    parts = line.split()
                    if parts[1].endswith(self.needle) and parts[3] == "01":
                        n += 1
            self.peak = max(self.peak, n)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def _run_stage(args: dict, log: Path) -> tuple[dict | None, float, str]:
    """The stage in a fresh process group, killed after LIMIT_S: (result, peak RSS MiB, status)."""
    env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1", PYTHONUNBUFFERED="1")
    with open(log, "wb") as f:
        proc = subprocess.Popen(download_command(args), cwd=REPO, env=env,
                                stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + LIMIT_S
    status = "ok"
    while True:
        pid, wstatus, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline and status == "ok":
            os.killpg(proc.pid, signal.SIGKILL)        # the stage and its download workers
            status = f"killed after {LIMIT_S:.0f} s"
        time.sleep(0.2)
    proc.returncode = os.waitstatus_to_exitcode(wstatus)
    rss_mib = usage.ru_maxrss / 1024
    if status == "ok" and (proc.returncode != 0 or not (Path(args["out"]) / "_SUCCESS.json").exists()):
        status = f"failed (rc {proc.returncode}, see {log})"
    return (stage_result(args["out"]) if status == "ok" else None), rss_mib, status


def _account(out: Path, uid_url: dict[str, str], kinds: dict[str, str]) -> tuple[int, int, int]:
    """(unaccounted uids, URLs with the wrong fate, kept images) of one finished stage directory."""
    import pyarrow.parquet as pq

    from witcurate.pipeline.tables import read_table

    if not (out / "_SUCCESS.json").exists():
        return len(uid_url), len(uid_url), 0
    kept = read_table(str(out), columns=["uid", "url"])
    kept_rows = kept.to_pylist() if kept is not None else []
    rejects = pq.read_table(str(out / "rejects"), columns=["uid", "reason", "record"]).to_pylist()
    seen = collections.Counter([r["uid"] for r in kept_rows] + [r["uid"] for r in rejects])
    unaccounted = (len(set(uid_url) - set(seen)) + sum(n - 1 for n in seen.values() if n > 1)
                   + len(set(seen) - set(uid_url)))
    fate = {r["url"]: "kept" for r in kept_rows}
    fate.update({json.loads(r["record"])["url"]: r["reason"] for r in rejects})
    mismatched = sum(fate.get(url) != (EXPECTED_REASON.get(kind) or "kept") for url, kind in kinds.items())
    return unaccounted, mismatched, len(kept_rows)


def run() -> list[dict]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from witcurate import schemas
    from witcurate.config import DemoSection
    from witcurate.demo.host import ImageHost
    from witcurate.demo.hosts import allow_private
    from witcurate.demo.world import FAULT_KINDS, generate_world

    assert set(EXPECTED_REASON) == set(FAULT_KINDS), "a new fault kind needs its expected reason"
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp:
        root = Path(tmp)
        port = _free_port()
        t0 = time.perf_counter()
        generate_world(DemoSection(root=str(root / "world"), port=port, pool_size=N, trusted_size=2,
                                   eval_size=2), progress=lambda s: None)
        print(f"world of {N} candidates generated in {time.perf_counter() - t0:.1f} s", flush=True)
        pool = pq.read_table(root / "world" / "pool" / "candidates.parquet").to_pylist()
        rows = [{"uid": schemas.candidate_uid(r["url"], r["caption"]), "url": r["url"],
                 "caption": r["caption"], "source": "pool", "query_ids": [0], "keep_probability": 1.0}
                for r in pool]
        (root / "balance").mkdir()
        pq.write_table(pa.Table.from_pylist(rows, schemas.BALANCED), root / "balance" / "part-00000.parquet")
        uid_url = {r["uid"]: r["url"] for r in rows}
        kinds = {r["url"]: r["kind"] for r in
                 pq.read_table(root / "world" / "truth" / "truth.parquet", columns=["url", "kind"]).to_pylist()}

        with ImageHost(str(root / "world"), "127.0.0.1", port):
            for threads in THREADS:
                out = root / f"download-{threads}"
                args = {"config": str(REPO / "configs" / "demo.yaml"), "in": str(root / "balance"),
                        "out": str(out),
                        "overrides": [f"download.allow_private={allow_private('127.0.0.1', port)}",
                                      f"download.processes_count={PROCESSES}",
                                      f"download.thread_count={threads}"]}
                with _PeakConnections(port) as conns:
                    result, rss, status = _run_stage(args, root / f"stage-{threads}.log")
                unaccounted, mismatched, kept = _account(out, uid_url, kinds)
                wall = result["seconds"] if result else float("nan")
                results.append({"threads": threads, "wall": wall, "urls_s": N / wall if result else 0.0,
                                "images_s": kept / wall if result else 0.0, "unaccounted": unaccounted,
                                "mismatched": mismatched, "rss": rss, "conns": conns.peak,
                                "status": status})
                r = results[-1]
                print(f"{PROCESSES}x{threads} threads: {r['wall']:.1f} s, {r['urls_s']:.0f} URLs/s, "
                      f"{unaccounted} unaccounted, {mismatched} mismatched ({status})", flush=True)

    sustained = [r for r in results if r["status"] == "ok" and r["unaccounted"] == 0 and r["mismatched"] == 0]
    best = max(sustained, key=lambda r: r["urls_s"]) if sustained else None
    highest = max((r for r in sustained if r["urls_s"] >= SUSTAINED_SHARE * best["urls_s"]),
                  key=lambda r: r["threads"]) if best else None
    print(f"\ndownload load sweep: {N} URLs, demo world faults, {PROCESSES} processes, limit {LIMIT_S:.0f} s each")
    print(f"{'threads':>8} {'wall s':>7} {'URLs/s':>7} {'images/s':>9} {'unaccounted':>11} "
          f"{'mismatched':>10} {'peak RSS':>9} {'peak conns':>10}  status")
    for r in results:
        mark = "  <- highest sustained" if r is highest else ""
        print(f"{PROCESSES}x{r['threads']:<6} {r['wall']:>7.1f} {r['urls_s']:>7.0f} {r['images_s']:>9.0f} "
              f"{r['unaccounted']:>11} {r['mismatched']:>10} {r['rss']:>6.0f} MiB {r['conns']:>10}  "
              f"{r['status']}{mark}")
    if highest:
        print(f"highest concurrency sustained: {PROCESSES}x{highest['threads']} threads "
              f"({highest['urls_s']:.0f} URLs/s; best {PROCESSES}x{best['threads']} at {best['urls_s']:.0f} URLs/s)")
    else:
        print("no setting was sustained (every one lost URLs, gave wrong reasons or ran out of time)")

    lowest = results[0]
    ours = best["urls_s"] if best else 0.0
    base = lowest["urls_s"]
    return [
        {"name": f"load: URLs/s best vs {PROCESSES}x{lowest['threads']}", "ours": ours, "baseline": base,
         "unit": "URLs/s", "ratio": ours / base if base else 0.0, "target": ">= 1.0 (informational)"},
        {"name": "load: unaccounted URLs", "ours": float(sum(r["unaccounted"] for r in results)),
         "baseline": 0.0, "unit": "URLs", "ratio": float(sum(r["unaccounted"] for r in results)),
         "target": "0 (all settings)"},
        {"name": "load: mismatched reject reasons", "ours": float(sum(r["mismatched"] for r in results)),
         "baseline": 0.0, "unit": "URLs", "ratio": float(sum(r["mismatched"] for r in results)),
         "target": "0 (all settings)"},
    ]


if __name__ == "__main__":
    for r in run():
        print(f"{r['name']}: ours {r['ours']:.1f} vs {r['baseline']:.1f} {r['unit']} "
              f"= {r['ratio']:.2f} (target {r['target']})")
