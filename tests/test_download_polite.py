"""Politeness inside the download workers: Retry-After on plain values, the per-host gate across
threads and processes, and the polite opener against loopback servers that count what they see.
"""

from __future__ import annotations

import email.utils
import math
import multiprocessing
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import local_server
from witcurate.config import DownloadSection
from witcurate.filters import urls
from witcurate.filters.retry_after import parse_retry_after, plan_backoff
from witcurate.pipeline import polite_fetch
from witcurate.pipeline.download_results import decide
from witcurate.pipeline.host_gate import (GATE_PREFIX, HostGate, HostHeldOff, make_gate_dir,
                                          remove_orphan_gates)

NOW = 1_700_000_000.0
UA = "witcurate/test (+https://example.org)"


# --------------------------------------------------------------------------- Retry-After

@pytest.mark.parametrize("value, seconds", [
    ("120", 120.0), ("0", 0.0), (" 7 ", 7.0), ("1.5", 1.5), ("31536000", 31536000.0),
    (email.utils.formatdate(NOW + 30, usegmt=True), 30.0),
    (email.utils.formatdate(NOW - 300, usegmt=True), 0.0),          # a date past: now
    ("-5", None), ("soon", None), ("", None), (None, None), ("1e9", None), ("Mon, 99 Foo", None),
])
def test_parse_retry_after(value, seconds):
    got = parse_retry_after(value, NOW)
    assert got == (pytest.approx(seconds, abs=1) if seconds else seconds)


def test_absurd_numbers_mean_forever():
    assert parse_retry_after("9" * 5000, NOW) == math.inf


def test_backoff_plans():
    # 503 without a usable Retry-After is a server error, not a throttle
    assert plan_backoff(503, None, 0, 3, 60, NOW) is None
    assert plan_backoff(503, "garbage", 0, 3, 60, NOW) is None
    assert plan_backoff(404, "5", 0, 3, 60, NOW) is None
    # 429 without one: 1, 2, 4 s
    assert [plan_backoff(429, "-1", a, 3, 60, NOW).hold for a in range(3)] == [1, 2, 4]
    ok = plan_backoff(503, "5", 0, 3, 60, NOW)
    assert ok.retry and ok.hold == 5
    year = plan_backoff(429, "31536000", 0, 3, 60, NOW)
    assert not year.retry and year.hold == 31536000 and "max_retry_after" in year.why
    date = plan_backoff(429, email.utils.formatdate(NOW + 365 * 86400, usegmt=True), 0, 3, 60, NOW)
    assert not date.retry and date.hold > 3e7
    spent = plan_backoff(429, "1", 3, 3, 60, NOW)
    assert not spent.retry and "after 3 backed-off retries" in spent.why


# --------------------------------------------------------------------------- the gate

def _hold(directory: str, connections: int, n: int, seconds: float, out) -> None:
    gate = HostGate(directory, connections)

    def one():
        lease = gate.acquire("example.org")
        start = time.time()
        time.sleep(seconds)
        out.put((start, time.time()))
        lease.release()
    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def _peak(intervals) -> int:
    points = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals], key=lambda p: (p[0], p[1]))
    now = peak = 0
    for _, step in points:
        now += step
        peak = max(peak, now)
    return peak


def test_slots_hold_across_processes_and_threads(tmp_path):
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    procs = [ctx.Process(target=_hold, args=(str(tmp_path), 2, 4, 0.05, out)) for _ in range(3)]
    for p in procs:
        p.start()
    intervals = [out.get(timeout=60) for _ in range(12)]
    for p in procs:
        p.join(timeout=30)
    assert _peak(intervals) == 2                  # never more, and the slots were used


def _request_starts(gate: HostGate, host: str, n: int) -> list[float]:
    """When each of n requests to `host`, one after another, was let go."""
    starts = []
    for _ in range(n):
        lease = gate.acquire(host)
        starts.append(time.time())
        lease.release()
    return starts


def test_a_late_wake_up_does_not_shorten_the_next_gap(tmp_path, monkeypatch):
    """The second request's sleep ends 50 ms late (a loaded machine): the third still starts
    a full delay after it, not at the time reserved when the second was."""
    import witcurate.pipeline.host_gate as host_gate
    real_sleep, late = time.sleep, [True]

    def sleep(seconds):
        real_sleep(seconds + (0.05 if late and late.pop() else 0.0))
    monkeypatch.setattr(host_gate.time, "sleep", sleep)
    starts = _request_starts(HostGate(str(tmp_path), 4, delay=0.1), "h", 3)
    assert not late                                 # the second request overslept
    assert starts[2] - starts[1] >= 0.099, [b - a for a, b in zip(starts, starts[1:])]


def test_delay_spaces_request_starts(tmp_path):
    gate = HostGate(str(tmp_path), 4, delay=0.1)
    starts = _request_starts(gate, "h", 5)
    assert all(b - a >= 0.095 for a, b in zip(starts, starts[1:]))
    lease = gate.acquire("other-host")             # hosts do not share a schedule
    assert time.time() - starts[-1] < 0.09
    lease.release()


def test_hold_off_waits_and_a_long_hold_fails_fast(tmp_path):
    gate = HostGate(str(tmp_path), 2, max_wait=5)
    gate.hold_off("h", 0.3)
    start = time.time()
    gate.acquire("h").release()
    assert time.time() - start >= 0.25
    gate.hold_off("h", 365 * 86400)
    start = time.time()
    with pytest.raises(HostHeldOff, match="max_retry_after"):
        gate.acquire("h")
    assert time.time() - start < 1
    gate.acquire("elsewhere").release()
    busy = [HostGate(str(tmp_path), 2, max_wait=5).acquire("busy") for _ in range(2)]
    gate.hold_off("busy", 365 * 86400)                # every slot taken: fail, do not wait for one
    raised = []

    def ask() -> None:
        try:
            gate.acquire("busy").release()
        except HostHeldOff as e:
            raised.append(e)
    asking = threading.Thread(target=ask)
    asking.start()
    asking.join(2)
    waited = asking.is_alive()
    for lease in busy:
        lease.release()                               # (lets a waiting acquire end, if it waited)
    asking.join()
    assert not waited and raised and "max_retry_after" in str(raised[0])


def _grab_all_and_wait(directory: str, ready) -> None:
    gate = HostGate(directory, 2)
    leases = [gate.acquire("h"), gate.acquire("h")]   # noqa: F841 - held until killed
    ready.set()
    time.sleep(60)


def test_a_killed_holder_frees_its_slots(tmp_path):
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    proc = ctx.Process(target=_grab_all_and_wait, args=(str(tmp_path), ready))
    proc.start()
    assert ready.wait(30)
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(10)
    start = time.time()
    HostGate(str(tmp_path), 2).acquire("h").release()
    assert time.time() - start < 2


def test_a_killed_run_s_gate_goes_with_the_next_shard_and_a_live_one_stays(tmp_path):
    """A shard's gate directory is named after its process; a run killed mid-shard leaves it,
    and the next shard made on the machine removes the gates of processes that are gone."""
    import subprocess
    import sys
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    orphan = tmp_path / f"{GATE_PREFIX}{int(gone.stdout)}-00003-abcd"
    (orphan / "slots").mkdir(parents=True)
    live = tmp_path / f"{GATE_PREFIX}1-00001-abcd"          # pid 1 always runs
    live.mkdir()
    other = tmp_path / "witcurate-hosts-notes"             # not a gate: no pid
    other.mkdir()
    made = make_gate_dir(7, str(tmp_path))
    assert os.path.basename(made).startswith(f"{GATE_PREFIX}{os.getpid()}-00007-")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, other.name, os.path.basename(made)])
    assert remove_orphan_gates(str(tmp_path)) == []        # this process is alive: its gate stays


# --------------------------------------------------------------------------- the opener

class CountingServer:
    """Serves tiny JPEG-ish bodies; answers per path as `plan(path, in_flight)` says; records
    every request's path, User-Agent and arrival time, and the most in flight at once."""

    def __init__(self, plan):
        self.lock = threading.Lock()
        self.in_flight = self.peak = 0
        self.seen: list[tuple[str, str, float]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                with outer.lock:
                    outer.in_flight += 1
                    outer.peak = max(outer.peak, outer.in_flight)
                    outer.seen.append((self.path, self.headers.get("User-Agent", ""), time.time()))
                    now = outer.in_flight
                status, headers = plan(self.path, now)
                time.sleep(0.02)
                with outer.lock:
                    outer.in_flight -= 1          # before the client can have its answer
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", "3")
                self.end_headers()
                self.wfile.write(b"\xff\xd8\xff")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        local_server.start(self.httpd)

    def close(self):
        local_server.stop(self.httpd)


@pytest.fixture
def serve():
    servers = []

    def start(plan):
        servers.append(CountingServer(plan))
        return servers[-1]
    yield start
    for s in servers:
        s.close()


def opener(server, tmp_path, connections=2, retries=2, max_wait=5.0):
    policy = urls.AddressPolicy.from_config([server.base.split("//")[1]])
    gate = HostGate(str(tmp_path / "gate"), connections, 0.0, max_wait)
    return polite_fetch.build_opener(policy, gate, UA, retries, max_wait)


def fetch(op, url):
    """What img2dataset does: its own User-Agent on the request, read the body in a with."""
    request = urllib.request.Request(url, headers={"User-Agent": "Mozilla/5.0 (img2dataset)"})
    with op.open(request, timeout=5) as r:
        return r.status, r.read()


def test_our_user_agent_and_the_limit_hold_under_many_threads(serve, tmp_path):
    server = serve(lambda path, now: (429, {"Retry-After": "1"}) if now > 2 else (200, {}))
    op = opener(server, tmp_path)
    errors = []

    def worker(i):
        for j in range(5):
            try:
                fetch(op, f"{server.base}/{i}-{j}.jpg")
            except Exception as e:  # noqa: BLE001 - collected for the assertion
                errors.append(e)
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(server.seen) == 40
    assert server.peak == 2
    assert {ua for _, ua, _ in server.seen} == {UA}


def test_429_waits_out_retry_after_then_succeeds(serve, tmp_path):
    answers = iter([(429, {"Retry-After": "1"}), (503, {"Retry-After": email.utils.formatdate(time.time() + 1, usegmt=True)})])
    server = serve(lambda path, now: next(answers, (200, {})))
    status, body = fetch(opener(server, tmp_path), server.base + "/a.jpg")
    assert status == 200 and body == b"\xff\xd8\xff"
    times = [t for _, _, t in server.seen]
    assert len(times) == 3 and times[1] - times[0] >= 0.95


def test_giving_up_is_a_rate_limited_reject(serve, tmp_path):
    server = serve(lambda path, now: (429, {"Retry-After": "-1"}))
    start = time.time()
    with pytest.raises(polite_fetch.RateLimited) as caught:
        fetch(opener(server, tmp_path, retries=1), server.base + "/a.jpg")
    assert 0.9 <= time.time() - start < 4 and len(server.seen) == 2
    result = {"status": "failed_to_download", "error_message": str(caught.value), "_sub": 0}
    drop = decide({"uid": "u"}, result, {}, DownloadSection())
    assert drop.reason == "rate_limited" and "after 1 backed-off retries" in drop.detail


def test_a_year_gives_up_at_once_and_holds_the_host(serve, tmp_path):
    server = serve(lambda path, now: (429, {"Retry-After": "31536000"}))
    op = opener(server, tmp_path)
    start = time.time()
    for name in ("a", "b", "c"):
        with pytest.raises(polite_fetch.RateLimited, match="max_retry_after"):
            fetch(op, f"{server.base}/{name}.jpg")
    assert time.time() - start < 1.5
    assert [p for p, _, _ in server.seen] == ["/a.jpg"]       # b and c never asked


def test_503_without_retry_after_and_404_pass_through_and_free_their_slot(serve, tmp_path):
    server = serve(lambda path, now: (503, {}) if "503" in path else (404, {}))
    op = opener(server, tmp_path, connections=1)
    for i in range(6):                       # one slot: a leaked slot would hang the next one
        with pytest.raises(urllib.error.HTTPError) as caught:
            fetch(op, f"{server.base}/{'503' if i % 2 else '404'}-{i}.jpg")
        assert caught.value.code in (404, 503)
    assert len(server.seen) == 6
