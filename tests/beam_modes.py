"""Beam's local runner with its bundles in two worker processes instead of this one.

Unpicklable DoFns, state kept in the driver, per-process set-up and keys that differ between
processes fail there as they would on Dataflow, so tests run in it what has something of its own
to get wrong there.

Each pipeline run this way starts two SDK workers (`python -m apache_beam...sdk_worker_main`),
and a fresh one spends about 2 CPU-s importing Beam before it asks for work: the suite's two
dozen multi-process pipelines spent a fifth of its CPU in their workers, most of it importing.
So in the test processes (conftest.py installs `ForkedSdkWorkers`) each worker is forked instead
from one of two zygotes (cli_zygote.py) that have imported Beam's worker and pyarrow, and
nothing of witcurate: the worker still unpickles the stage's DoFns, imports their modules and
sets them up itself, with the environment Beam gives it. The two zygotes are separate
interpreters, so the two workers of a pipeline hash strings with different seeds, as two fresh
processes do, and both differ from the driver's. `WITCURATE_TEST_FRESH_SDK_WORKERS=1` starts
fresh workers as Beam does.
"""

from __future__ import annotations

import itertools
import os
import random
import subprocess
import threading

MULTI_PROCESS = ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]

SDK_WORKER = "apache_beam.runners.worker.sdk_worker_main"
ZYGOTE_PRELOAD = [SDK_WORKER, "pyarrow.parquet"]    # libraries every worker imports first


class _Subprocess:
    """The `subprocess` module as Beam's worker launcher sees it: its worker command is forked."""

    def __init__(self, popen):
        self.Popen = popen

    def __getattr__(self, name):
        return getattr(subprocess, name)


class ForkedSdkWorkers:
    """Beam's SDK worker subprocesses, forked from two zygotes started at first use."""

    def __init__(self):
        self.zygotes: list = []
        self.lock = threading.Lock()
        self.turn = itertools.count()
        self.patched = None

    def install(self) -> None:
        from apache_beam.runners.portability import local_job_service
        self.patched = (local_job_service, local_job_service.subprocess)
        local_job_service.subprocess = _Subprocess(self.popen)

    def uninstall(self) -> None:
        if self.patched:
            module, original = self.patched
            module.subprocess = original
        for zygote in self.zygotes:
            zygote.__exit__(None, None, None)
        self.zygotes = []

    def popen(self, command, shell=False, env=None, **kwargs):
        if not (shell and isinstance(command, str) and command.endswith(f" -m {SDK_WORKER}") and not kwargs):
            return subprocess.Popen(command, shell=shell, env=env, **kwargs)
        return self._zygote().start_module(SDK_WORKER, dict(os.environ if env is None else env), os.getcwd())

    def _zygote(self):
        from cli_zygote import Zygote
        with self.lock:
            if not self.zygotes:
                for _ in range(2):      # a hash seed of its own each, as a fresh process has
                    env = {**os.environ, "PYTHONHASHSEED": str(random.randrange(1, 2**32))}
                    self.zygotes.append(Zygote(env, None, ZYGOTE_PRELOAD))
            return self.zygotes[next(self.turn) % len(self.zygotes)]


def fresh_workers_wanted() -> bool:
    return os.environ.get("WITCURATE_TEST_FRESH_SDK_WORKERS", "") not in ("", "0")

