"""Keep the test suite inside its repository, so a fresh clone with nothing beside it passes.

Two checks, both run by every `pytest` session:

- At run time, a pytest plugin (`RepoBoundary`) installs an audit hook (PEP 578) that sees
  every file this process opens, lists or copies. A path under the folder that holds the clone
  but outside the clone itself (`../data/...`, a sibling checkout) is recorded against the
  test that was running, and that test fails in its teardown; anything read outside a test
  (at collection) fails the session. So is a file written inside the clone (a test that
  leaves `demo_world/` in the checkout fails in a clone it cannot write), bytecode caches
  aside. Temporary directories, the Python installation and the virtual environment are
  allowed even when they sit beside the clone. The hook sees this process only (not the CLI
  subprocesses some tests start) and only Python-level file access (not files pyarrow opens
  in C++): the static check below covers the test sources themselves.
- Statically, `outside_references` scans the test sources for ways out of the repository:
  `.parent` of the repository root, `parents[n]` of a test file that climbs above it, and
  `..` in path literals.
"""

from __future__ import annotations

import os
import re
import sys
import sysconfig
import tempfile
import threading
from pathlib import Path

import pytest

# Audit events that name a file or folder the process reads, lists, copies or creates.
WATCHED = {"open", "os.listdir", "os.scandir", "glob.glob", "shutil.copyfile", "shutil.copytree",
           "os.chdir", "os.mkdir"}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND
_CACHES = (f"{os.sep}__pycache__{os.sep}", f"{os.sep}.pytest_cache{os.sep}")


def _under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _both_spellings(paths) -> set[str]:
    return {os.path.abspath(p) for p in paths if p} | {os.path.realpath(p) for p in paths if p}


def allowed_roots() -> list[str]:
    """Places a test may read even when they sit beside the clone: temporary directories, the
    Python installation and virtual environment, the user's caches and configuration, NLTK
    data, and the system's own folders (for a clone at the file system's root)."""
    home = os.path.expanduser("~")
    env = ("NLTK_DATA", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "MPLCONFIGDIR",
           "TORCH_HOME", "HF_HOME")
    return [tempfile.gettempdir(), sys.prefix, sys.base_prefix, sys.exec_prefix,
            *sysconfig.get_paths().values(),
            *(os.path.join(home, d) for d in (".cache", ".config", ".local", ".matplotlib", "nltk_data")),
            *(p for name in env for p in os.environ.get(name, "").split(os.pathsep)),
            "/dev", "/proc", "/sys", "/etc", "/usr", "/lib", "/lib64", "/bin", "/sbin"]


def _writes(event: str, args: tuple) -> bool:
    """Whether an "open" creates or changes its file (or the event makes a folder)."""
    if event == "os.mkdir":
        return True
    if event != "open" or len(args) < 3:
        return False
    mode, flags = args[1], args[2]
    if isinstance(flags, int) and flags & _WRITE_FLAGS:
        return True
    return isinstance(mode, str) and any(c in mode for c in "wax+")


class RepoBoundary:
    """Records access to files beside the repository and fails whoever made it."""

    def __init__(self, repo: Path, extra_allowed: tuple[str, ...] = ()):
        self.repo = {os.path.abspath(repo), os.path.realpath(repo)}
        self.around = {os.path.dirname(p) for p in self.repo}
        self.allowed = _both_spellings(allowed_roots() + list(extra_allowed))
        self.current = "(collection)"
        self.seen: dict[str, list[str]] = {}
        self.active = True
        self._busy = threading.local()

    # ---- the audit hook

    def install(self) -> None:
        sys.addaudithook(self._audit)

    def _audit(self, event: str, args: tuple) -> None:
        if event not in WATCHED or not self.active or not args or getattr(self._busy, "on", False):
            return
        self._busy.on = True
        try:
            path = self.outside(args[0])
            if path:
                self.seen.setdefault(self.current, []).append(f"{event} {path}")
            elif _writes(event, args):
                path = self.inside(args[0])
                if path:
                    self.seen.setdefault(self.current, []).append(f"write inside the repository {path}")
        finally:
            self._busy.on = False

    def inside(self, target) -> str | None:
        """`target` as an absolute path when it lies in the repository (caches and an
        in-repository virtual environment aside), else None."""
        if target is None or isinstance(target, int):
            return None
        path = os.path.abspath(os.fsdecode(target))
        if not any(_under(path, r) for r in self.repo) or any(c in path for c in _CACHES):
            return None
        return None if any(_under(path, a) for a in self.allowed) else path

    def outside(self, target) -> str | None:
        """`target` as an absolute path when it lies beside the repository, else None."""
        if target is None or isinstance(target, int):
            return None
        try:
            path = os.path.abspath(os.fsdecode(target))
        except (TypeError, ValueError):
            return None
        if not any(_under(path, folder) for folder in self.around):
            return None
        for candidate in {path, os.path.realpath(path)}:
            if any(_under(candidate, r) for r in self.repo) or any(_under(candidate, a) for a in self.allowed):
                return None
        return path

    # ---- pytest hooks

    def pytest_sessionstart(self, session) -> None:
        self.allowed |= _both_spellings([session.config.option.basetemp])     # --basetemp DIR

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item, nextitem):
        self.current = item.nodeid
        yield
        self.current = "(between tests)"

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item, call):
        outcome = yield
        report = outcome.get_result()
        reads = self.seen.get(item.nodeid)
        if call.when == "teardown" and reads and report.outcome != "failed":
            report.outcome = "failed"
            report.longrepr = ("the test reached outside the repository (a fresh clone has nothing "
                               "beside it: put what it reads under tests/fixtures/) or wrote inside "
                               "it (write under tmp_path instead):\n  "
                               + "\n  ".join(sorted(set(reads))[:20]))

    def pytest_sessionfinish(self, session) -> None:
        self.active = False
        if self.seen and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if not self.seen:
            return
        terminalreporter.section("reads outside the repository, writes inside it", sep="-", red=True, bold=True)
        for who, reads in sorted(self.seen.items()):
            for line in sorted(set(reads))[:20]:
                terminalreporter.write_line(f"{who}: {line}")


# ---- the static check

# `REPO.parent`, `ROOT.parent`: the folder that holds the clone.
_ROOT_PARENT = re.compile(r"\b(REPO|ROOT|REPO_ROOT)\s*\.\s*parent\b")
# A string literal that is "..", or starts with "../", or climbs from a value put into an
# f-string ("{HERE}/.."), and os.pardir. ("/a/../b" inside a URL is left alone.)
_DOTDOT = re.compile(r"""(["'])(?:\.\.[/\\]|\.\.\1)|\}[/\\]\.\.(?:[/\\]|["'])|\bos\.pardir\b""")
ALLOW = "boundary-ok"      # a line's comment that says why it may name a path outside


def _climbs(code: str) -> int:
    """How many folders up from `__file__` this line goes (0 if it does not start there)."""
    if "__file__" not in code:
        return 0
    after = code.split("__file__", 1)[1]
    up = [int(n) + 1 for n in re.findall(r"\.parents\[(\d+)\]", after)]
    up.append(len(re.findall(r"\.parent\b", after)))
    up.append(code.count("dirname("))
    return max(up)


def outside_references(source: str, depth: int) -> list[str]:
    """Lines of `source`, a file `depth` folders below the repository root, that build a path
    outside the repository (going up more than `depth` + 1 levels from the file's own path)."""
    found = []
    for number, line in enumerate(source.splitlines(), 1):
        code, _, comment = line.partition("#")
        if ALLOW in comment:
            continue
        if _ROOT_PARENT.search(code) or _climbs(code) > depth + 1 or _DOTDOT.search(code):
            found.append(f"{number}: {line.strip()}")
    return found
