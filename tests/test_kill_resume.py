"""Fault test: kill -9 a run inside each of its stages, rerun, and get the same dataset with nothing redone.

The reference is the session's shared run of the small demo world (conftest.py `demo_run`,
the same world and settings; its stage wall times set when the kills fall). The run is started
from nothing, as a separate process group, and SIGKILLed once inside each stage in pipeline
order: at a random moment within the stage's reference wall time (seed printed; set
WITCURATE_KILL_SEED to replay one), except download, killed once a shard has finished (its
DONE.json exists), and score, killed while it writes its output files. Every attempt resumes
from the last one's leftovers. Each attempt is `witcurate run`, forked from a process that has
imported its libraries once (cli_zygote.py), in its own session: a kill of its process group
takes its img2dataset workers with it. Each attempt must skip the stages that had landed; the final
shards must equal the reference's byte for byte; the audit must pass; no temporary directory
may remain, in the run or in the attempts' temporary folder; and the download shards that had finished before the kill must be reused, not
fetched again.

Each attempt serves the demo image host itself (run.demo=true), so each killed run's host dies
with it and the next attempt binds the same port again.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from cli_zygote import Zygote

from witcurate.pipeline.audit import audit_run, format_table

REPO = Path(__file__).resolve().parents[1]
STAGES = "queries,ingest,match,balance,download,dedupe,scorer,score,semdedup,target,cap,shards"
# A run that takes this many times the reference's stage time (and at least MIN_TIMEOUT s) is
# taken for hung: the limit follows the machine's load instead of a fixed guess.
TIMEOUT_FACTOR, MIN_TIMEOUT = 4, 120


def _command(args: list[str]) -> list[str]:
    exe = REPO / ".venv" / "bin" / "witcurate"
    return ([str(exe)] if exe.exists() else [sys.executable, "-m", "witcurate.cli"]) + args


def _env() -> dict[str, str]:
    env = dict(os.environ)                      # NLTK_DATA (set by conftest) is inherited
    env.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Run:
    """`witcurate run` for one output directory, each attempt its own process group."""

    def __init__(self, zygote: Zygote, out: Path, config_args: list[str], log_dir: Path, timeout: float):
        self.zygote, self.out, self.config_args = zygote, out, config_args
        self.log_dir, self.timeout = log_dir, timeout
        self.attempts = 0

    def start(self):
        self.attempts += 1
        log = str(self.log_dir / f"{self.out.name}-{self.attempts}.log")
        return self.zygote.start(["run", "--out", str(self.out), "--stages", STAGES, *self.config_args], log)

    def complete(self) -> str:
        proc = self.start()
        try:
            rc = proc.wait(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            rc = None
        text = Path(proc.log_path).read_text(errors="replace")
        assert rc == 0, f"run exited {rc}:\n{text[-4000:]}"
        return text

    def kill_when(self, ready, what: str, delay: float = 0.0):
        """Start an attempt and SIGKILL its whole process group `delay` s after `ready(proc)` holds."""
        proc = self.start()
        deadline = time.time() + self.timeout
        while not ready(proc):
            if proc.poll() is not None:
                text = Path(proc.log_path).read_text(errors="replace")
                pytest.fail(f"run ended (rc {proc.returncode}) before {what}:\n{text[-4000:]}")
            if time.time() > deadline:
                _kill_group(proc)
                pytest.fail(f"{what} never happened")
            time.sleep(0.02)
        time.sleep(delay)
        _kill_group(proc)
        # A run that finished inside the delay (the last stage, on a machine faster now than when
        # the reference ran) was killed after it: the caller counts that as a kill between stages.
        finished = delay > 0 and proc.returncode == 0
        assert proc.returncode == -signal.SIGKILL or finished, \
            f"the run exited ({proc.returncode}) before {what}:\n{Path(proc.log_path).read_text(errors='replace')[-4000:]}"
        return proc


def _kill_group(proc) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)     # img2dataset's worker processes too
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)
    deadline = time.time() + 10                 # wait until no process of the group is left
    while time.time() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)


def _shards(out: Path) -> tuple[dict[str, list[str]], dict[str, str]]:
    """(uids of each sidecar, sha256 of each tar from manifest.json)."""
    uids = {p.name: pq.read_table(p, columns=["uid"]).column("uid").to_pylist()
            for p in sorted((out / "shards").glob("*.parquet"))}
    manifest = json.loads((out / "shards" / "manifest.json").read_text())
    return uids, {s["tar"]: s["sha256"] for s in manifest["shards"]}


def _done_shards(out: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text())
            for p in (out / ".work-download" / "shards").glob("*/DONE.json")}


def _stage_log_says(proc, text: str) -> bool:
    return text in Path(proc.log_path).read_text(errors="replace")


def test_killed_run_resumes_to_identical_shards(tmp_path, demo_world, demo_run):
    seed = int(os.environ.get("WITCURATE_KILL_SEED", time.time_ns() % 2**32))
    rng = random.Random(seed)
    logs, out = tmp_path / "logs", tmp_path / "run"
    logs.mkdir()
    timeout = max(MIN_TIMEOUT, TIMEOUT_FACTOR * demo_run.reference_seconds())
    temp = tmp_path / "temp"                    # the attempts' temporary folder (TMPDIR)
    temp.mkdir()
    with Zygote({**_env(), "TMPDIR": str(temp)}, logs / "zygote.log") as zygote:
        _kill_and_resume(Run(zygote, out, demo_world.cli_args(), logs, timeout), demo_run, seed, rng)
    # The killed download's per-host gate went with the next download on the machine.
    assert sorted(p.name for p in temp.glob("witcurate-hosts-*")) == []


def _kill_and_resume(run: Run, demo_run, seed: int, rng: random.Random) -> None:
    out = run.out

    # The reference: the shared uninterrupted run of the same world and settings.
    ref = demo_run.out
    audits = audit_run(str(ref))        # in this process: the CLI's audit is run on the result
    assert audits and all(not a.problems for a in audits), format_table(audits)
    walls = {s: demo_run.manifests[s]["wall_seconds"] for s in STAGES.split(",")}
    planned = demo_run.manifests["download"]["download"]["shards"]

    # One SIGKILL inside each stage, in pipeline order, each attempt resuming the last one's
    # leftovers. Most land at a random moment within the stage's reference wall time; download
    # is killed once a shard has finished (so shard reuse is checked) and score while it writes
    # its output files (the window between inference and the stage landing).
    kills = []
    for stage in STAGES.split(","):
        if (out / stage / "_SUCCESS.json").exists():     # the previous kill landed after it
            continue
        landed = {s for s in STAGES.split(",") if (out / s / "_SUCCESS.json").exists()}
        running = f"[{stage}] running"
        if stage == "download":
            done_before = len(_done_shards(out))
            proc = run.kill_when(lambda p: _stage_log_says(p, running) and len(_done_shards(out)) > done_before,
                                 "a download shard finished")
            finished = _done_shards(out)
            assert 0 < len(finished) < planned, f"the kill should land between shards (seed {seed})"
        elif stage == "score":
            proc = run.kill_when(lambda p: _stage_log_says(p, running)
                                 and any(q.is_file() for q in (out / ".tmp-score").rglob("*")),
                                 "the score stage started writing")
        else:
            delay = rng.uniform(0, 0.8 * walls[stage])
            proc = run.kill_when(lambda p: _stage_log_says(p, running), f"{stage} started", delay)
        log = Path(proc.log_path).read_text(errors="replace")
        for s in landed:                       # finished stages were not redone
            assert f"[{s}] already done" in log, f"{s} redone after a kill (seed {seed})"
        busy = sorted(p.name for p in out.iterdir() if p.name.startswith(".tmp-"))
        kills.append((stage, busy))
    print(f"seed {seed}, kill aimed at: stage directories in progress", *kills, sep="\n  ")
    # A random moment can fall between two stages; most must land inside one.
    assert sum(bool(busy) for _, busy in kills) >= len(kills) // 2, (seed, kills)

    # To completion: nothing that had landed is redone.
    landed = [s for s in STAGES.split(",") if (out / s / "_SUCCESS.json").exists()]
    log = run.complete()
    assert all(f"[{s}] already done" in log for s in landed), (landed, log[-3000:])

    # Same dataset: the same uids in each sidecar, the same bytes in each tar.
    assert _shards(out) == _shards(ref), f"seed {seed}"
    tars = sorted(p.name for p in (ref / "shards").glob("*.tar"))
    assert tars and tars == sorted(p.name for p in (out / "shards").glob("*.tar"))
    for name in tars:
        assert (out / "shards" / name).read_bytes() == (ref / "shards" / name).read_bytes(), name

    # Finished download shards were reused, the others fetched once, by the attempt that landed.
    download = json.loads((out / "download" / "_SUCCESS.json").read_text())["download"]
    reused = {f"{s['index']:05d}" for s in download["per_shard"] if s["resumed"]}
    assert reused == {name.split("-", 1)[0] for name in finished}
    assert download["reused_shards"] == len(finished)
    assert download["fetched_this_run"] == sum(
        s["fetched"] for s in download["per_shard"] if not s["resumed"])

    # Nothing half-written is left, and the accounting of every stage holds.
    assert sorted(p.name for p in out.iterdir() if p.name.startswith((".tmp-", ".work-"))) == []
    audit = _audit(out)
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert "0 with problems" in audit.stdout


def _audit(out: Path) -> subprocess.CompletedProcess:
    return subprocess.run(_command(["audit", str(out)]), cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=60)
