"""A fresh clone with nothing beside it passes its tests: no test reads a file outside the
repository. Checked on the sources (statically) and, for one deliberately bad test, at run time."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from repo_boundary import outside_references

REPO = Path(__file__).resolve().parents[1]
SCANNED = ["tests", "benchmarks", "witcurate"]


def test_no_source_builds_a_path_outside_the_repository():
    found = {}
    for folder in SCANNED:
        for path in sorted((REPO / folder).rglob("*.py")):
            rel = path.relative_to(REPO)
            lines = outside_references(path.read_text(), depth=len(rel.parts) - 1)
            if lines:
                found[str(rel)] = lines
    assert found == {}, "paths outside the repository (a fresh clone has nothing beside it)"


@pytest.mark.parametrize("line, depth", [
    ('FIXTURES = Path(__file__).resolve().parents[2] / "beside" / "fixtures"', 1),   # boundary-ok: sample
    ('DUMP = REPO.parent / "beside" / "fixtures" / "wikipedia"', 1),                  # boundary-ok: sample
    ('ROOT = Path(__file__).parent.parent.parent', 1),                                # boundary-ok: sample
    ('ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))', 1),        # boundary-ok: sample
    ('DATA = Path("../beside/fixtures")', 1),                                         # boundary-ok: sample
    ("DATA = os.path.join(HERE, '..', 'shared')", 1),                                 # boundary-ok: sample
    ('DATA = f"{HERE}/../../beside"', 1),                                             # boundary-ok: sample
    ('UP = os.pardir', 1),                                                            # boundary-ok: sample
    ('FIXTURE = Path(__file__).resolve().parents[3] / "shared"', 2),                  # boundary-ok: sample
])
def test_the_static_check_finds_each_way_out(line, depth):
    assert outside_references(line, depth) == [f"1: {line}"]


@pytest.mark.parametrize("line, depth", [
    ('REPO = Path(__file__).resolve().parents[1]', 1),
    ('FIXTURES = Path(__file__).resolve().parent / "fixtures" / "wikipedia"', 1),
    ('ROOT = Path(__file__).resolve().parents[2]', 2),    # boundary-ok: a sample two folders down
    ('print("loading...")', 1),
    ('url = "http://host/a/b.jpg"', 1),
    ('DATA = Path("../x")  # boundary-ok: a sample', 1),
])
def test_the_static_check_lets_paths_inside_pass(line, depth):
    assert outside_references(line, depth) == []


def test_a_test_that_reads_beside_or_writes_inside_the_clone_fails(tmp_path):
    """A throwaway clone whose tests read ../beside/... and write into the checkout: its pytest
    run fails, naming each test and file, while the test that does neither passes."""
    beside = tmp_path / "beside" / "fixtures"
    beside.mkdir(parents=True)
    (beside / "data.txt").write_text("outside")
    clone, temp = tmp_path / "clone", tmp_path / "temp"
    temp.mkdir()
    (clone / "tests").mkdir(parents=True)
    (clone / "tests" / "conftest.py").write_text(textwrap.dedent(f"""
        import sys
        from pathlib import Path
        sys.path.insert(0, {str(REPO / "tests")!r})
        from repo_boundary import RepoBoundary

        def pytest_configure(config):
            boundary = RepoBoundary(Path(__file__).resolve().parents[1])
            boundary.install()
            config.pluginmanager.register(boundary, "repo-boundary")
    """))
    (clone / "tests" / "test_reads.py").write_text(textwrap.dedent("""
        from pathlib import Path

        def test_inside(tmp_path):
            (tmp_path / "x").write_text("temporary files are fine")
            assert Path(__file__).read_text()

        def test_writes_inside():
            (Path(__file__).parent / "made.txt").write_text("left in the checkout")

        def test_outside():
            assert open(Path.cwd() / ".." / "beside" / "fixtures" / "data.txt").read() == "outside"  # boundary-ok: the bad test
    """))

    def pytest_in_clone(*args: str) -> subprocess.CompletedProcess:
        # Temporary files go to their own folder, not the one that holds the clone and ../beside.
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", TMPDIR=str(temp))
        return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "tests", *args],
                              cwd=clone, env=env, capture_output=True, text=True, timeout=120)

    bad = pytest_in_clone()
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "3 passed, 2 errors" in bad.stdout, bad.stdout
    assert "ERROR tests/test_reads.py::test_outside" in bad.stdout, bad.stdout
    assert f"open {beside / 'data.txt'}" in bad.stdout, bad.stdout
    assert "ERROR tests/test_reads.py::test_writes_inside" in bad.stdout, bad.stdout
    assert f"write inside the repository {clone / 'tests' / 'made.txt'}" in bad.stdout, bad.stdout
    assert "test_inside" not in bad.stdout.split("writes inside it")[-1]

    good = pytest_in_clone("-k", "test_inside")
    assert good.returncode == 0, good.stdout + good.stderr
