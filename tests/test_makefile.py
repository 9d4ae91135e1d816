"""`make` in a clone it cannot write stops at once with one line that says what to do, unless
the clone is already set up and the target writes nothing (`make test`)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from system_temp import SYSTEM_TEMP

REPO = Path(__file__).resolve().parents[1]
NOBODY = 65534

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


@pytest.fixture
def read_only_clone():
    """A copy of the Makefile and pyproject.toml in a folder this test's make cannot write: mode
    0555, and make run as `nobody` when the tests run as root (root writes anywhere)."""
    base = Path(tempfile.mkdtemp(prefix="witcurate-readonly-", dir=SYSTEM_TEMP))   # nobody can reach it
    clone = base / "clone"
    clone.mkdir()
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy(REPO / name, clone / name)
    os.utime(clone / "pyproject.toml", (0, 0))          # older than any install stamp
    try:
        yield clone
    finally:
        for path in (clone, *clone.rglob("*")):
            if path.is_dir():
                path.chmod(0o755)
        shutil.rmtree(base)


def _make(clone: Path, *args: str) -> subprocess.CompletedProcess:
    for path in (clone.parent, clone, *[p for p in clone.rglob("*") if p.is_dir()]):
        path.chmod(0o555)
    as_nobody = None
    if os.geteuid() == 0:
        def as_nobody():
            os.setgid(NOBODY)
            os.setuid(NOBODY)
    # As a user types it: not as a sub-make of the `make test` that may be running this suite
    # (an inherited MAKELEVEL makes make print "Entering directory" lines).
    env = {k: v for k, v in os.environ.items() if k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS", "MAKEOVERRIDES")}
    return subprocess.run(["make", *args], cwd=clone, capture_output=True, text=True, timeout=60,
                          preexec_fn=as_nobody, env=env)


@pytest.mark.parametrize("target", ["dataset", "test", "install", "experiment"])
def test_a_clone_that_cannot_be_written_stops_with_one_line(read_only_clone, target):
    done = _make(read_only_clone, target)
    assert done.returncode == 2
    assert done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert f"{read_only_clone} is not writable" in line
    assert "clone into a folder you can write to" in line and "Traceback" not in line


def test_a_set_up_clone_still_runs_its_tests_read_only(read_only_clone):
    (read_only_clone / ".venv").mkdir()
    (read_only_clone / ".venv" / ".installed").touch()
    wordnet = read_only_clone / ".nltk_data" / "corpora" / "wordnet"
    wordnet.mkdir(parents=True)
    (wordnet / "lexnames").touch()
    done = _make(read_only_clone, "-n", "test")
    assert done.returncode == 0, done.stderr
    *before, last = done.stdout.strip().splitlines()
    assert last == ".venv/bin/python -m pytest"
    assert all(line.endswith("|| true") for line in before)     # set-up steps that may not write
    assert _make(read_only_clone, "-n", "dataset").returncode == 2      # writes runs/: refused
