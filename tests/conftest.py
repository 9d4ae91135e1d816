import gc
import os
import re
import tempfile
from pathlib import Path

import pytest

from beam_modes import ForkedSdkWorkers, fresh_workers_wanted
from ports import free_port
from repo_boundary import RepoBoundary
from shared_demo import DemoRun, DemoWorld, make_run, make_world
from system_temp import SYSTEM_TEMP  # noqa: F401  (read before the session moves the temp folder)

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"     # real-data samples kept in the repo (see their PROVENANCE.md)

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
# As the CLI does, before torch is imported: OpenMP threads that spin-wait while Beam, the image
# host and download workers need the same two cores make every in-process run slower.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
if (REPO / ".nltk_data").exists():
    os.environ.setdefault("NLTK_DATA", str(REPO / ".nltk_data"))


def pytest_configure(config):
    """Fail any test that reads a file beside the clone or writes inside it (repo_boundary.py);
    in a process that runs tests, fork Beam's SDK workers from zygotes (beam_modes.py)."""
    boundary = RepoBoundary(REPO)
    boundary.install()
    config.pluginmanager.register(boundary, "repo-boundary")
    xdist_controller = config.getoption("numprocesses", None) and "PYTEST_XDIST_WORKER" not in os.environ
    if not xdist_controller and not fresh_workers_wanted():
        config._sdk_workers = ForkedSdkWorkers()
        config._sdk_workers.install()


# The cyclic garbage collector and the suite's heap. A test process holds over half a million
# objects once torch, open_clip, Beam and img2dataset are imported, and every full collection
# walks all of them: 0.3 to 0.9 s each, 64 CPU-s of the two workers' runs (10%) before this.
# Each file's leftovers are collected once when the file ends (its module fixtures are torn
# down by then), and what survives (modules, session fixtures, caches) is frozen out of later
# collections. Nothing is frozen mid-file, so a test's own garbage is collected as before.
def pytest_collection_finish(session):
    gc.collect()
    gc.freeze()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item, nextitem):
    yield
    if nextitem is None or getattr(nextitem, "module", None) is not getattr(item, "module", None):
        gc.collect()
        gc.freeze()


def pytest_unconfigure(config):
    """Give the frozen objects back before the interpreter exits, so its last collection
    finalises them (duckdb's bindings report every object of theirs left alive at exit)."""
    gc.unfreeze()
    if getattr(config, "_sdk_workers", None):
        config._sdk_workers.uninstall()


# Session fixtures that build something expensive once. The suite runs on pytest-xdist workers
# (pyproject's addopts: `-n auto`), each a process with its own session; every test file that
# uses one of these goes to the same worker, so each is built once per suite. Other files are
# scheduled whole (a file's module fixtures are built once too), spread over the workers.
SHARED_FIXTURES = {"demo_world": "demo", "demo_run": "demo", "beam_chain_run": "beam-chain"}


def _file_groups() -> dict[str, str]:
    """tests/test_x.py -> the group of the shared fixture it asks for as an argument of a test or
    fixture (a file asks for one at most; a module imported under the same name does not count)."""
    groups = {}
    for path in sorted((REPO / "tests").glob("test_*.py")):
        text = path.read_text(encoding="utf-8")
        for name, group in SHARED_FIXTURES.items():
            if re.search(rf"\bdef \w+\([^)]*\b{name}\b", text):
                groups[path.relative_to(REPO).as_posix()] = group
                break
    return groups


def pytest_xdist_make_scheduler(config, log):
    """xdist's loadscope scheduler with a file for a scope, except that the files sharing a
    session fixture are one scope. (xdist's own `loadgroup` marks no longer reach its scheduler
    under pytest 9: it renames the node id, which pytest 9 computes instead of storing.)"""
    from xdist.scheduler import LoadScopeScheduling

    groups = _file_groups()

    class SharedFixtureScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return groups.get(path, path)

    return SharedFixtureScheduling(config, log)


@pytest.fixture(scope="session", autouse=True)
def session_temp_folder(tmp_path_factory):
    """The temp folder of this test process and of every process it starts, inside the session's
    base temp: what the suite cannot remove itself (Beam's folder of a pipeline built and never
    run, wandb's folders in worker processes that Beam or a pool ends with a signal) goes with
    pytest's own clean-up (tmp_path_retention_count) instead of gathering in the system's."""
    import multiprocessing.util
    multiprocessing.util.get_temp_dir()     # this process's own stays where its exit removes it
    folder = str(tmp_path_factory.mktemp("temp"))
    before = os.environ.get("TMPDIR"), tempfile.tempdir
    os.environ["TMPDIR"], tempfile.tempdir = folder, folder
    yield folder
    tempfile.tempdir = before[1]
    if before[0] is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = before[0]


@pytest.fixture
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def demo_world(tmp_path_factory) -> DemoWorld:
    """The session's one small demo world (see shared_demo.py); tests only read it."""
    return make_world(tmp_path_factory.mktemp("demo") / "world", free_port())


@pytest.fixture(scope="session")
def demo_run(demo_world, tmp_path_factory) -> DemoRun:
    """Every stage of `witcurate run` on the shared world, once per session; tests only read it.
    Its image host is stopped when the run returns, so the next user can serve the same port."""
    return make_run(demo_world, tmp_path_factory.mktemp("demo-run") / "run")


@pytest.fixture(scope="session")
def beam_chain_run(tmp_path_factory) -> tuple[str, dict[str, dict]]:
    """beam_chain's pure-Beam stages run once in this process: (run directory, manifests).
    The Dataflow graph tests build on it and the portability tests compare against it."""
    from beam_chain import run_chain
    root = str(tmp_path_factory.mktemp("beam-chain") / "run")
    return root, run_chain(root, [])
