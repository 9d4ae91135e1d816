"""What runs inside img2dataset's download worker processes, and the process pool they live in.

img2dataset fetches with urllib in worker processes it starts itself, so the URL-safety policy
must be installed in THOSE processes, not only checked up front: a redirect is only seen by the
worker that follows it. img2dataset's `multiprocessing` distributor is replaced (for the calls
this module wraps, see `guarded_download`; plain img2dataset calls in the same process are left
as they were) by `guarded_distributor`, which
  * runs every shard task through `ShardTask`, which installs the guarded urllib opener in the
    worker (idempotent; the polite one of polite_fetch.py, with the shard's per-host gate, when
    the call names a gate directory) before img2dataset's Downloader touches the network, and
    afterwards reads
    the shard it wrote back to hash and check every stored image there, in parallel across
    workers (`NNNNN.checks.parquet` beside img2dataset's `NNNNN.parquet`);
  * starts workers with OPENCV_IO_MAX_IMAGE_PIXELS set, so OpenCV refuses to decode an image
    whose header claims more pixels than `download.max_pixels` instead of allocating it
    (a decompression bomb becomes img2dataset's per-sample error, then a `too_many_pixels`);
  * keeps one pool alive across shards (img2dataset's own starts a pool per call, and each
    spawned worker spends seconds importing OpenCV), recycling workers like img2dataset, and
    forks its workers from a server process that has imported img2dataset once (`_context`).

This module imports neither Beam nor img2dataset at import time: worker processes import it.
"""

from __future__ import annotations

import atexit
import contextlib
import multiprocessing
import os
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterator

from witcurate.filters import images, urls
from witcurate.pipeline import cached_transforms, encoded_pixels, mp_tempdir
from witcurate.pipeline.shard_checks import CheckingWriterClass

MAX_PIXELS_ENV = "OPENCV_IO_MAX_IMAGE_PIXELS"

# img2dataset imports albumentations, which otherwise asks the network for a newer version of
# itself in every process that imports it (set here, so spawned workers inherit it too).
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


@dataclass(frozen=True)
class Politeness:
    """What the polite opener needs (polite_fetch.py); the gate directory is per shard."""
    user_agent: str = ""
    per_host_connections: int = 2
    per_host_delay: float = 0.0
    max_retry_after: float = 60.0
    rate_limit_retries: int = 3


@dataclass(frozen=True)
class WorkerSettings:
    policy: urls.AddressPolicy
    max_pixels: int
    encode_format: str = "jpg"
    politeness: Politeness = Politeness()


_installed: tuple[WorkerSettings, str] | None = None


class SharedSilence:
    """img2dataset's Resizer silences the image libraries' warnings by pointing file descriptors
    1 and 2 at /dev/null around each decode, saving and restoring them in every call. With a
    worker's threads decoding at once, one thread saves another's /dev/null as "the" stream and
    restores it last: the worker's stdout and stderr then stay at /dev/null for good (3 of 3
    trials with 16 threads), and whatever it prints after, tracebacks included, is lost. This is
    the same silence counted across threads: the first decode in points both at /dev/null, the
    last one out puts the saved streams back. Installed in the download workers only."""

    _lock = threading.Lock()
    _depth = 0
    _saved: tuple[int, int] | None = None

    def __enter__(self) -> "SharedSilence":
        with SharedSilence._lock:
            if SharedSilence._depth == 0:
                SharedSilence._saved = (os.dup(1), os.dup(2))
                null = os.open(os.devnull, os.O_RDWR)
                os.dup2(null, 1)
                os.dup2(null, 2)
                os.close(null)
            SharedSilence._depth += 1
        return self

    def __exit__(self, *exc) -> None:
        with SharedSilence._lock:
            SharedSilence._depth -= 1
            if SharedSilence._depth == 0 and SharedSilence._saved:
                for fd, saved in zip((1, 2), SharedSilence._saved):
                    os.dup2(saved, fd)
                    os.close(saved)
                SharedSilence._saved = None


def patch_resizer() -> None:
    """Give img2dataset's Resizer the thread-safe silence (see SharedSilence), its transforms
    built once instead of per image (cached_transforms.py), and have it leave the pixels it
    encodes for the checks (encoded_pixels.py)."""
    import img2dataset.resizer
    img2dataset.resizer.SuppressStdoutStderr = SharedSilence
    cached_transforms.install()
    encoded_pixels.install()


def install(settings: WorkerSettings, gate_dir: str = "") -> None:
    """Install the guarded urllib opener in this process (once per settings and shard gate):
    with a gate directory, the polite one (User-Agent, per-host slots, Retry-After); and the
    thread-safe silence around image decoding."""
    global _installed
    if _installed == (settings, gate_dir):
        return
    patch_resizer()
    if gate_dir:
        import urllib.request

        from witcurate.pipeline import polite_fetch
        from witcurate.pipeline.host_gate import HostGate
        p = settings.politeness
        gate = HostGate(gate_dir, p.per_host_connections, p.per_host_delay, p.max_retry_after)
        urllib.request.install_opener(polite_fetch.build_opener(
            settings.policy, gate, p.user_agent, p.rate_limit_retries, p.max_retry_after,
            images.content_type_ok))
    else:
        urls.install(settings.policy, images.content_type_ok)
    _installed = (settings, gate_dir)


class ShardTask:
    """The callable the pool runs for each img2dataset shard: guard, then download, with every
    stored image checked as it is written (shard_checks.py)."""

    def __init__(self, downloader: Any, settings: WorkerSettings, gate_dir: str = ""):
        self.downloader = downloader
        self.settings = settings
        self.gate_dir = gate_dir

    def __call__(self, row):
        install(self.settings, self.gate_dir)
        writer_class = self.downloader.sample_writer_class
        if not isinstance(writer_class, CheckingWriterClass):
            self.downloader.sample_writer_class = CheckingWriterClass(writer_class, self.settings.max_pixels)
        return self.downloader(row)


def _init_worker(settings: WorkerSettings) -> None:
    os.environ[MAX_PIXELS_ENV] = str(settings.max_pixels)
    from witcurate.pipeline import download_preload  # noqa: F401 - a spawned worker's img2dataset
    install(settings)


# ------------------------------------------------------------------ the pool --------------------

# How long the first worker may take to start (it imports OpenCV) before the pool counts as dead.
STARTUP_TIMEOUT_ENV = "WITCURATE_WORKER_STARTUP_S"


def _started() -> bool:
    return True


def _check_started(pool) -> None:
    """multiprocessing.Pool replaces a worker that dies at start-up with another one, forever and
    silently: the download would hang. The usual cause is a script that starts a download
    without an `if __name__ == "__main__":` guard, so every new worker runs it again (and
    multiprocessing's own check stops it there). No worker takes a task before this probe, so
    a worker replaced while it waits died starting: that fails at once, not after the timeout."""
    timeout = float(os.environ.get(STARTUP_TIMEOUT_ENV, "300"))
    first = _workers(pool)          # held, so that no new worker can take a freed one's id
    probe = pool.apply_async(_started)
    deadline = time.monotonic() + timeout
    while True:
        try:
            probe.get(timeout=0.2)
            return
        except multiprocessing.TimeoutError:
            pass
        replaced = any(all(p is not q for q in first) for p in _workers(pool))
        if replaced or time.monotonic() > deadline:
            pool.terminate()
            what = ("a download worker process died while starting" if replaced else
                    f"no download worker process started within {timeout:.0f} s")
            raise RuntimeError(
                f"{what} (their errors are on stderr). If you call witcurate from a Python "
                "script, put the call under `if __name__ == \"__main__\":`: each new worker "
                "process imports the script again.") from None


def _workers(pool) -> list:
    return list(getattr(pool, "_pool", ()))     # the Pool's live worker processes


# A worker is replaced after this many tasks (img2dataset recycles after 5 in a pool of one call).
# The pool here outlives calls, and each download shard is one task here, as is the start-up
# probe: at 5, a run of 5 shards paid a fresh worker (seconds of importing OpenCV, 15 s on a
# loaded machine) before its last shard. 20 still bounds what a worker can accumulate.
TASKS_PER_WORKER = 20

_pools: dict[tuple[int, WorkerSettings], Any] = {}
_pools_lock = threading.Lock()
_current = threading.local()


# Pools whose workers could not start: the warm-up's failure is the stage's, not tried again.
_failed: dict[tuple[int, WorkerSettings], RuntimeError] = {}


def _pool(processes: int, settings: WorkerSettings):
    key = (processes, settings)
    with _pools_lock:
        if key in _failed:
            raise _failed[key]
        pool = _pools.get(key)
        if pool is None:
            pool = _context(settings.max_pixels).Pool(
                processes, initializer=_init_worker, initargs=(settings,),
                maxtasksperchild=TASKS_PER_WORKER)
            try:
                _check_started(pool)
            except RuntimeError as e:
                _failed[key] = e
                raise
            _pools[key] = pool
        return pool


# What the fork server imports once, so that each worker it forks starts with them loaded:
# img2dataset, without torch (download_preload.py), and this module.
PRELOAD = ["witcurate.pipeline.download_preload", __name__]
_forkserver_pixels: int | None = None


def _context(max_pixels: int):
    """Where the workers come from: forked from a server process that has imported img2dataset
    once, when the platform has one, instead of spawned.

    A spawned worker spends seconds of CPU importing img2dataset (torch, OpenCV,
    albumentations) before its first image; so does each replacement of a recycled worker,
    and each pool of a process that runs several downloads. A fork server pays that once per
    process; it is a fresh single-threaded process, so forking it is safe while Beam's threads
    run here. OpenCV reads its pixel limit from the environment once, at import: the server is
    started with this pool's limit, and a pool wanting another limit spawns its workers.
    Like spawned ones, forked workers import the calling script again (the `__main__` guard).
    """
    global _forkserver_pixels
    # Children copy this environment when they start, and OpenCV reads the limit at import.
    os.environ[MAX_PIXELS_ENV] = str(max_pixels)
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    if _forkserver_pixels is None:
        mp_tempdir.ensure_short()                    # the server's socket path must fit
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(PRELOAD)
        _forkserver_pixels = max_pixels
    if _forkserver_pixels != max_pixels:
        return multiprocessing.get_context("spawn")
    return multiprocessing.get_context("forkserver")


def warm_pool(processes: int, settings: WorkerSettings) -> None:
    """Start the pool for these settings in a background thread (a no-op when it runs already);
    a later _pool() call for the same settings waits for it and reuses it, or raises its failure
    to start."""
    def start():
        try:
            _pool(processes, settings)
        except Exception:               # noqa: BLE001 - the real call raises it again, with advice
            pass
    threading.Thread(target=start, name="witcurate-warm-download-workers", daemon=True).start()


def close_pools() -> None:
    with _pools_lock:
        pools = list(_pools.values())
        _pools.clear()
    for pool in pools:
        pool.terminate()
        pool.join()


atexit.register(close_pools)


def guarded_distributor(processes_count, downloader, reader, _subjob_size, max_shard_retry):
    """img2dataset's multiprocessing distributor, with the guard, the checks and a kept pool."""
    from img2dataset.distributor import multiprocessing_distributor, retrier

    settings: WorkerSettings | None = getattr(_current, "settings", None)
    if settings is None:            # a plain img2dataset.download() call in this process
        return multiprocessing_distributor(processes_count, downloader, reader, _subjob_size,
                                           max_shard_retry)
    pool = _pool(processes_count, settings)
    task = ShardTask(downloader, settings, getattr(_current, "gate_dir", ""))

    def run(shards) -> list:
        failed = []
        for ok, row in pool.imap_unordered(task, shards):
            if ok is False:
                failed.append(row)
        return failed

    retrier(run, run(reader), max_shard_retry)


class _GuardedSignal:
    """Stands in for the `signal` module inside img2dataset.main. Its download() installs a
    SIGINT handler that deletes its temp folder and exits with status 0, which would make a
    killed run look successful (and fails outright off the main thread, as in Beam workers):
    during a guarded download that call does nothing; plain calls keep the real behaviour."""
    SIGINT = signal.SIGINT

    @staticmethod
    def signal(signum, handler):
        if getattr(_current, "settings", None) is not None:
            return None
        return signal.signal(signum, handler)


class _QuietLogger:
    """Stands in for img2dataset's LoggerProcess during a guarded download: that process is
    spawned anew by every download() call and spends seconds importing OpenCV before it can
    even be told to stop, once per shard; the stage keeps its own per-shard statistics."""

    def __init__(self, *_args, **_kw):
        self.done_shards: set = set()

    def start(self) -> None:
        pass

    def join(self, timeout=None) -> None:
        pass

    def terminate(self) -> None:
        pass


def _logger_process(*args, **kw):
    if getattr(_current, "settings", None) is not None:
        return _QuietLogger(*args, **kw)
    from img2dataset.logger import LoggerProcess
    return LoggerProcess(*args, **kw)


_patch_lock = threading.Lock()


def _patch_img2dataset():
    import importlib
    main = importlib.import_module("img2dataset.main")
    with _patch_lock:
        if main.multiprocessing_distributor is not guarded_distributor:
            main.multiprocessing_distributor = guarded_distributor
            main.signal = _GuardedSignal
            main.LoggerProcess = _logger_process
    return main


@contextlib.contextmanager
def settings_for_this_thread(settings: WorkerSettings, gate_dir: str = "") -> Iterator[None]:
    _current.settings, _current.gate_dir = settings, gate_dir
    try:
        yield
    finally:
        _current.settings, _current.gate_dir = None, ""


def guarded_download(settings: WorkerSettings, gate_dir: str = "", **kwargs: Any) -> None:
    """img2dataset.download(**kwargs) with the multiprocessing distributor guarded as above;
    with `gate_dir` (a local directory of this shard) its workers fetch politely through it."""
    main = _patch_img2dataset()
    kwargs["distributor"] = "multiprocessing"
    with settings_for_this_thread(settings, gate_dir):
        main.download(**kwargs)
