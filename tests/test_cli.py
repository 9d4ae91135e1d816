"""The CLI a user meets: help everywhere, one-line errors with exit code 2, audit, and the
config in force named on stderr (never configs/demo.yaml picked up by chance)."""

import dataclasses
import json
from pathlib import Path

import pytest

from cli_errors import one_line_error
from witcurate.cli import main
from witcurate.config import IngestSection
from witcurate.pipeline.stages import ORDER

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("command", ["run", "demo", "audit", "experiment", *ORDER])
def test_help_everywhere(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0 and "usage: witcurate" in capsys.readouterr().out


def test_bad_config_key(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("cap:\n  per_qurey: 3\n")
    err = one_line_error(capsys, ["run", "--config", str(bad), "--out", str(tmp_path / "o")])
    assert "unknown key 'per_qurey'" in err and "known keys" in err


def test_missing_input(tmp_path, capsys):
    err = one_line_error(capsys, ["match", "--in", str(tmp_path / "nope"), "--queries",
                                   str(tmp_path / "q.json"), "--out", str(tmp_path / "match")])
    assert "does not exist" in err


def test_missing_dump(tmp_path, capsys):
    err = one_line_error(capsys, ["queries", "--dump", str(tmp_path / "enwiki.xml.bz2"),
                                   "--out", str(tmp_path / "queries"), "--set", "queries.wordnet=false"])
    assert "enwiki.xml.bz2" in err


@pytest.mark.parametrize("config, says", [
    ([], "config: built-in defaults (WIT) + 2 overrides"),      # --dump and --set
    (["--config", "configs/demo.yaml"], "config: configs/demo.yaml + 2 overrides"),
])
def test_a_stage_run_from_the_repo_root_uses_the_config_it_names(tmp_path, capsys, monkeypatch, config, says):
    """`witcurate queries --dump X` in the checkout (where configs/demo.yaml lies) means the WIT
    defaults unless --config says otherwise, and the first line on stderr says which."""
    monkeypatch.chdir(REPO)
    assert (REPO / "configs" / "demo.yaml").exists()
    assert main(["queries", *config, "--dump", str(tmp_path / "enwiki.xml.bz2"),
                 "--out", str(tmp_path / "queries"), "--set", "queries.wordnet=false"]) == 2
    assert capsys.readouterr().err.splitlines()[0] == says


def test_unknown_option_is_refused_not_passed_to_beam(tmp_path, capsys):
    err = one_line_error(capsys, ["ingest", "--in", "x.parquet", "--out", str(tmp_path / "i"), "--treshold=3"])
    assert "--treshold" in err


def test_audit_of_missing_run(tmp_path, capsys):
    assert "not found" in one_line_error(capsys, ["audit", str(tmp_path / "none")])


def test_ingest_subcommand_end_to_end(tmp_path, capsys, monkeypatch):
    """From the repository root, without --config: the built-in defaults, recorded as such."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.table({"url": ["http://a.com/1.jpg", "http://a.com/2.jpg"],
                             "caption": ["two red circles on the grass", "IMG_0001.jpg"]}), tmp_path / "c.parquet")
    monkeypatch.chdir(REPO)
    assert main(["ingest", "--in", str(tmp_path / "c.parquet"), "--out", str(tmp_path / "run" / "ingest")]) == 0
    out, err = capsys.readouterr()
    assert "in=2 kept=1 rejected=1" in out
    assert err.splitlines() == ["config: built-in defaults (WIT)"]
    manifest = json.loads((tmp_path / "run" / "ingest" / "_SUCCESS.json").read_text())
    assert manifest["config"]["ingest"] == dataclasses.asdict(IngestSection())    # not demo.yaml's sources
    assert main(["audit", str(tmp_path / "run")]) == 0
    assert "ingest" in capsys.readouterr().out


def test_the_console_script_exits_with_its_code_while_a_daemon_thread_is_inside_torch(tmp_path):
    """CPython 3.11 ends a daemon thread that retakes the GIL during finalization with
    pthread_exit; unwinding through pybind11's GIL guard in libtorch_python then calls
    std::terminate ("terminate called without an active exception", exit -6; pytorch#38228,
    CPython gh-87135). Beam and img2dataset own daemon threads witcurate cannot join, so the
    console script exits without finalization and keeps the command's own exit code."""
    import subprocess
    import sys
    script = (
        "import sys, threading, torch\n"
        "x = torch.randn(256, 256)\n"
        "def spin():\n"
        "    while True:\n"
        "        x @ x\n"
        "threading.Thread(target=spin, daemon=True).start()\n"
        "from witcurate.cli import entry\n"
        f"sys.argv = ['witcurate', 'audit', {str(tmp_path / 'no-run')!r}]\n"
        "entry()\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert "terminate called" not in done.stderr
    assert done.returncode == main(["audit", str(tmp_path / "no-run")]) != 0


def test_the_console_script_leaves_no_temporary_directory_behind(tmp_path):
    """wandb (imported by img2dataset and by timm, so by open_clip) makes two temporary
    directories at import and removes them at exit; the console script's exit skips
    finalization, but not the exit functions that remove them."""
    import os
    import subprocess
    import sys
    temp = tmp_path / "temp"
    temp.mkdir()
    script = (
        "import sys, tempfile\n"
        "kept = tempfile.TemporaryDirectory('-made-at-import')\n"
        "import wandb\n"
        "from witcurate.cli import entry\n"
        f"sys.argv = ['witcurate', 'audit', {str(tmp_path / 'no-run')!r}]\n"
        "entry()\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "TMPDIR": str(temp)})
    assert done.returncode == 2, done.stderr
    assert sorted(p.name for p in temp.iterdir()) == []
