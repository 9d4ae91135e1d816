"""Processes forked from one that has imported their libraries once: `witcurate` commands, and
Beam's SDK workers (beam_modes.py).

A console-script start spends seconds importing before the command does anything (Beam; torch,
open_clip, and through it timm and torchvision; img2dataset): about 10 CPU-seconds for a run that
reaches the scorer. A test that starts a dozen runs pays that a dozen times. The zygote imports
them once, then forks each command from that state. The child starts its own session (a process
group that `os.killpg` ends whole, with every worker process it starts), points file descriptors
1 and 2 at its log, and runs the console script's `entry`, which exits with the command's code.
The zygote has no thread of its own and computes nothing with torch before it forks, so each
child starts as a fresh process would, less the imports.

Protocol, JSON lines: the test writes {"argv": [...], "log": path, "cwd": dir} to the zygote's
stdin (or {"module": name, "env": {...}, "cwd": dir} for `python -m name` with that environment
and the zygote's own stderr); the zygote answers {"pid": n} at once on its stdout, and
{"exit": n, "code": rc} when that child ends (rc negative for a signal, as subprocess reports
it). The zygote ends when its stdin closes. `python cli_zygote.py MODULE...` preloads those
modules instead of the CLI's.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# What `witcurate run` imports on its way through the stages, heaviest first.
PRELOAD = ["witcurate.cli", "torch", "open_clip", "img2dataset", "apache_beam",
           "apache_beam.runners.portability.fn_api_runner", "pyarrow.parquet", "pyarrow.dataset",
           "witcurate.pipeline.stages", "witcurate.pipeline.runner", "witcurate.trainer.train",
           "matplotlib.pyplot", "faiss", "witcurate.demo.truth_report"]   # the card, semdedup, the report


# --- the zygote process ------------------------------------------------------------------------

def _child(request: dict) -> None:
    """In the forked child: never returns."""
    if "module" in request:
        _module_child(request)
    try:
        os.setsid()
        log = os.open(request["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        os.chdir(request["cwd"])
        sys.argv = ["witcurate", *request["argv"]]
        from witcurate.cli import entry
        entry()
    finally:
        os._exit(70)


def _module_child(request: dict) -> None:
    """`python -m module` in the forked child, with the request's environment: never returns."""
    import runpy
    import tempfile
    import traceback
    code = 1
    try:
        os.dup2(2, 1)                    # off the protocol pipe: the zygote's stderr, as a worker's
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        os.chdir(request["cwd"])
        sys.path[0] = os.getcwd()        # as `python -m` has it, not this script's folder
        os.environ.clear()
        os.environ.update(request["env"])
        tempfile.tempdir = None          # read TMPDIR again, from this environment
        sys.argv = [request["module"]]
        runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:                # noqa: BLE001 - reported as a worker's crash would be
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def serve(preload: list[str]) -> None:
    import importlib
    for name in preload:
        importlib.import_module(name)
    threads = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
    assert not threads, f"an import started threads, forking would not be safe: {threads}"
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)                       # anything else printed goes to stderr, not the protocol
    pending = b""
    while True:
        while True:                     # reap the children that ended
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            answers.write(json.dumps({"exit": pid, "code": os.waitstatus_to_exitcode(status)}) + "\n")
        ready, _, _ = select.select([0], [], [], 0.02)
        if not ready:
            continue
        chunk = os.read(0, 65536)
        if not chunk:
            return
        pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            pid = os.fork()
            if pid == 0:
                os.close(answers.fileno())      # the zygote's end of the protocol: its death is seen
                _child(json.loads(line))
            answers.write(json.dumps({"pid": pid}) + "\n")


# --- the test's side ---------------------------------------------------------------------------

class Attempt:
    """One forked command, with the part of subprocess.Popen's interface the tests use."""

    def __init__(self, zygote: "Zygote", pid: int, log_path: str | None):
        self.zygote, self.pid, self.log_path = zygote, pid, log_path

    @property
    def returncode(self) -> int | None:
        return self.zygote.codes.get(self.pid)

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        zygote = self.zygote
        with zygote.changed:
            if not zygote.changed.wait_for(lambda: self.pid in zygote.codes or zygote.ended, timeout):
                raise subprocess.TimeoutExpired(f"witcurate (pid {self.pid})", timeout)
        if self.pid not in zygote.codes:
            raise RuntimeError(f"the zygote ended before its child {self.pid} did")
        return zygote.codes[self.pid]

    def kill(self) -> None:
        if self.returncode is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


class Zygote:
    """Starts the zygote; `start` forks one command from it. Use as a context manager.
    `stderr_path` None: the zygote and its module children write to this process's stderr."""

    def __init__(self, env: dict[str, str], stderr_path: Path | None, preload: list[str] = PRELOAD):
        self.stderr = open(stderr_path, "wb") if stderr_path else None
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__)), *preload], cwd=REPO, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr)
        self.codes: dict[int, int] = {}
        self.pids: list[int] = []
        self.ended = False
        self.changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            answer = json.loads(line)
            with self.changed:
                if "pid" in answer:
                    self.pids.append(answer["pid"])
                else:
                    self.codes[answer["exit"]] = answer["code"]
                self.changed.notify_all()
        with self.changed:                  # the zygote is gone: nothing more will end
            self.ended = True
            self.changed.notify_all()

    def start(self, argv: list[str], log_path: str, cwd: Path = REPO, timeout: float = 300) -> Attempt:
        open(log_path, "wb").close()          # there before the command writes to it
        return self._fork({"argv": argv, "log": log_path, "cwd": str(cwd)}, log_path, timeout)

    def start_module(self, module: str, env: dict[str, str], cwd: str, timeout: float = 300) -> Attempt:
        return self._fork({"module": module, "env": env, "cwd": cwd}, None, timeout)

    def _fork(self, request: dict, log_path: str | None, timeout: float) -> Attempt:
        with self.changed:
            started = len(self.pids)
            self.proc.stdin.write((json.dumps(request) + "\n").encode())
            self.proc.stdin.flush()
            if not self.changed.wait_for(lambda: len(self.pids) > started or self.proc.poll() is not None,
                                         timeout):
                raise TimeoutError("the zygote did not fork within its time")
            if len(self.pids) == started:
                said = Path(self.stderr.name).read_text()[-3000:] if self.stderr else "(see stderr)"
                raise RuntimeError(f"the zygote ended: {said}")
            return Attempt(self, self.pids[started], log_path)

    def __enter__(self) -> "Zygote":
        return self

    def __exit__(self, *exc) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)
        if self.stderr:
            self.stderr.close()


if __name__ == "__main__":
    serve(sys.argv[1:] or PRELOAD)
