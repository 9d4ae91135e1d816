"""Fault test: kill -9 a run inside its stages, rerun, and get the same dataset with nothing redone.

A tiny demo world is run once uninterrupted (the reference). The same run is then started again
from its queries stage, as a separate process group, and SIGKILLed at chosen points inside
stages: after the first download shard has finished (its DONE.json exists) and while the score
stage is writing its output files into its temporary directory. Each time the run is started again, and the final shards must equal the
reference's byte for byte, the audit must pass, no temporary directory may remain, and the
download shards that had finished before the kill must be reused, not fetched again.

The run serves the demo image host itself (run.demo=true), so each killed run's host dies with
it and the next attempt binds the same port again.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from ports import free_port

REPO = Path(__file__).resolve().parents[1]
STAGES = "queries,ingest,match,balance,download,dedupe,scorer,score,cap,shards"
RUN_TIMEOUT = 120



def _overrides(world: Path, port: int) -> list[str]:
    values = [
        f"demo.root={world}", f"demo.port={port}", "demo.pool_size=150", "demo.trusted_size=200",
        "demo.eval_size=40",
        f"queries.dumps=[{world}/dump/enwiki-demo-pages-articles-multistream.xml.bz2]",
        f"queries.pageviews=['{world}/pageviews/pageviews-*.gz']",
        "queries.wordnet=false",               # WordNet's 86k extra queries cost 10 s per run
        f"ingest.sources=[{world}/pool/candidates.parquet]",
        f"download.allow_private=['127.0.0.1:{port}']",
        # five download shards: a kill can land between finished and unfinished ones
        "download.urls_per_shard=30",
        f"scorer.trusted={world}/trusted/trusted-*.tar", "scorer.epochs=1",
        "shards.samples_per_shard=20",
        # a scorer trained for seconds has no calibrated threshold: keep the top 70%
        "score.threshold=null", "score.top_fraction=0.7",
    ]
    return [arg for v in values for arg in ("--set", v)]


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

    def __init__(self, out: Path, overrides: list[str], log_dir: Path):
        self.out, self.overrides, self.log_dir = out, overrides, log_dir
        self.attempts = 0

    def start(self) -> subprocess.Popen:
        self.attempts += 1
        log = open(self.log_dir / f"{self.out.name}-{self.attempts}.log", "wb")
        args = ["run", "--config", "configs/demo.yaml", "--out", str(self.out), "--stages", STAGES,
                *self.overrides]
        proc = subprocess.Popen(_command(args), cwd=REPO, env=_env(), stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        proc.log_path = log.name
        log.close()
        return proc

    def complete(self) -> str:
        proc = self.start()
        try:
            rc = proc.wait(timeout=RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            rc = None
        text = Path(proc.log_path).read_text(errors="replace")
        assert rc == 0, f"run exited {rc}:\n{text[-4000:]}"
        return text

    def kill_when(self, ready, what: str) -> None:
        """Start an attempt and SIGKILL its whole process group as soon as `ready()` holds."""
        proc = self.start()
        deadline = time.time() + RUN_TIMEOUT
        while not ready():
            if proc.poll() is not None:
                text = Path(proc.log_path).read_text(errors="replace")
                pytest.fail(f"run ended (rc {proc.returncode}) before {what}:\n{text[-4000:]}")
            if time.time() > deadline:
                _kill_group(proc)
                pytest.fail(f"{what} never happened")
            time.sleep(0.02)
        _kill_group(proc)
        assert proc.returncode == -signal.SIGKILL, f"the run had already exited before {what}"


def _kill_group(proc: subprocess.Popen) -> None:
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


def test_killed_run_resumes_to_identical_shards(tmp_path):
    world, logs, out = tmp_path / "world", tmp_path / "logs", tmp_path / "run"
    logs.mkdir()
    run = Run(out, _overrides(world, free_port()), logs)

    # The reference: one uninterrupted run. Samples record the scorer checkpoint's path
    # (clip_model "witcurate-tiny:OUT/scorer/checkpoint.pt"), so the killed run uses the same
    # OUT and the reference's shards are kept aside.
    run.complete()
    audit = _audit(out)
    assert audit.returncode == 0, audit.stdout + audit.stderr
    ref = tmp_path / "reference"
    ref.mkdir()
    shutil.copytree(out / "shards", ref / "shards")
    planned = json.loads((out / "download" / "_SUCCESS.json").read_text())["download"]["shards"]
    # Start again from the reference's queries stage only (a run skips a stage whose manifest
    # matches): the other stages run again, killed twice.
    for stage in out.iterdir():
        if stage.name != "queries":
            shutil.rmtree(stage) if stage.is_dir() else stage.unlink()

    # 1. Inside download, once at least one shard is finished and before the stage lands.
    run.kill_when(lambda: bool(_done_shards(out)), "a download shard finished")
    assert not (out / "download" / "_SUCCESS.json").exists(), "download landed before the kill"
    finished = _done_shards(out)
    assert 0 < len(finished) < planned, "the kill should land between shards"

    # 2. Inside score, once its first output file is half written into its temporary directory
    # (Beam writes the parts after inference: a window of a few hundred ms before the stage lands).
    run.kill_when(lambda: any(p.is_file() for p in (out / ".tmp-score").rglob("*")),
                  "the score stage started writing")
    assert (out / "dedupe" / "_SUCCESS.json").exists() and not (out / "score" / "_SUCCESS.json").exists()
    assert not (out / ".work-download").exists()     # removed once download landed

    # 3. To completion.
    log = run.complete()
    assert "[download] already done" in log and "[dedupe] already done" in log

    # Same dataset: the same uids in each sidecar, the same bytes in each tar.
    assert _shards(out) == _shards(ref)
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
