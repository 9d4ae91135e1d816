"""Load test: the download stage against the demo's many-host, fault-injecting image host.

A demo world with a pool of POOL candidates is generated and served by the demo image host (one
server per host address, 127.0.0.1 ... 127.0.0.8, in threads of this process, on a free port).
The pool goes straight into the download stage as a balance-stage directory (every candidate,
uid = schemas.candidate_uid), and the stage runs with the demo's download settings
(configs/demo.yaml: no retries, min side 48, robots.txt obeyed, 2 connections per host) but
2 processes x THREADS fetch threads and a 1 s timeout instead of 2 (the shared demo run's): one
host's slow answers (4 s each) end at the timeout two at a time, and at 2 s that shard spent 15
s waiting on them, the longest wait in the suite. It runs in a child process so that a hang
fails the test after HARD_TIMEOUT_S instead of blocking it; the stage's own wall time must stay
under WALL_BOUND_S.

Checked against the world's ground truth (truth/truth.parquet, which the stage never reads):
  * every input uid ends kept or rejected exactly once (none lost, none doubled);
  * each injected fault gets its reason, URL by URL (robots_disallowed, robots_unavailable and
    rate_limited included), and every URL without a fault is kept;
  * the redirect to a loopback address that is not allowlisted (127.0.0.2:9) is refused: the
    rejects name it and a listener there receives no connection;
and against the host's request log:
  * each host's robots.txt was asked for once, before anything else, and no path it refuses
    was ever asked for;
  * no host was serving more than download.per_host_connections requests at once (from the
    log, whose intervals lie inside the client's connections), and commons, which answers 429
    above two at once, never had to;
  * every request carried download.user_agent.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import socket
import subprocess
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from ports import free_port

from benchmarks.bench_load import download_command, stage_result

from witcurate import schemas
from witcurate.config import DemoSection, load_config
from witcurate.demo import hosts as demo_hosts
from witcurate.demo import world as demo_world
from witcurate.demo.host_log import peak_concurrency, politeness
from witcurate.demo.truth_report import download_faults, format_politeness
from witcurate.demo.host import ImageHost
from witcurate.pipeline.tables import read_table

REPO = Path(__file__).resolve().parents[1]
POOL = 1200                 # 15 URLs of each injected fault kind, 12 of each politeness kind
PROCESSES = 2
THREADS = 32                # 64 fetch threads for 8 hosts x 2 connections: most of them wait
URLS_PER_SHARD = 600        # two download shards: the worker pool is reused under load
TIMEOUT_S = 1
# Measured 86 s (stage wall, imports excluded; 65 s of it the first shard, whose workers import
# img2dataset) on the shared 2-core machine at load 13; the code before politeness took 73 s there.
WALL_BOUND_S = 120
HARD_TIMEOUT_S = 300        # the child process, imports included: past this it counts as a hang
SENTINEL = ("127.0.0.2", 9)  # where the redirect_private fault points (world.REDIRECT_LOCATION)

EXPECTED_REASON = demo_world.EXPECTED_DOWNLOAD_REASON


class Sentinel:
    """A listener on the redirect target that counts the connections it receives."""

    def __init__(self, address: tuple[str, int]):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(address)
        self.sock.listen(64)
        self.sock.setblocking(False)

    def connections(self) -> int:
        """Connections queued since the start: the kernel accepts them even if we never do."""
        n = 0
        while True:
            try:
                conn, _ = self.sock.accept()
            except BlockingIOError:
                return n
            conn.close()
            n += 1

    def close(self) -> None:
        self.sock.close()


def write_balance_dir(pool_path: Path, directory: Path) -> list[dict]:
    """The pool as the download stage's input: BALANCED columns, uid from url and caption."""
    pool = pq.read_table(pool_path).to_pylist()
    rows = [{"uid": schemas.candidate_uid(r["url"], r["caption"]), "url": r["url"],
             "caption": r["caption"], "source": "pool", "query_ids": [0], "keep_probability": 1.0}
            for r in pool]
    directory.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schemas.BALANCED), directory / "part-00000.parquet")
    return rows


def place_sentinel(world_dir: Path) -> tuple[Sentinel, str]:
    """A listener where the redirect_private fault points (127.0.0.2:9). Where port 9 cannot be
    bound (not root), the world's host.json is pointed at a free port on 127.0.0.2 instead."""
    try:
        return Sentinel(SENTINEL), f"{SENTINEL[0]}:{SENTINEL[1]}"
    except OSError:
        sentinel = Sentinel((SENTINEL[0], 0))
        port = sentinel.sock.getsockname()[1]
        host_json = world_dir / "host.json"
        config = json.loads(host_json.read_text())
        config["redirect_location"] = f"http://{SENTINEL[0]}:{port}/x.jpg"
        host_json.write_text(json.dumps(config))
        return sentinel, f"{SENTINEL[0]}:{port}"


def run_child(args: dict, timeout: float) -> dict:
    env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(download_command(args), cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)          # the stage and its download workers
        out, _ = proc.communicate()
        pytest.fail(f"the download stage did not finish within {timeout} s (a hang?):\n{out[-3000:]}")
    assert proc.returncode == 0, f"the download stage failed (rc {proc.returncode}):\n{out[-3000:]}"
    return stage_result(args["out"])


@pytest.fixture(scope="module")
def load_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("load")
    world_dir, out = root / "world", root / "download"
    port = free_port()
    demo = DemoSection(root=str(world_dir), port=port, pool_size=POOL, trusted_size=2, eval_size=2)
    demo_world.generate_world(demo, progress=lambda s: None)
    rows = write_balance_dir(world_dir / "pool" / "candidates.parquet", root / "balance")
    truth = pq.read_table(world_dir / "truth" / "truth.parquet", columns=["url", "kind"]).to_pylist()

    overrides = [f"download.allow_private={demo_hosts.allow_private('127.0.0.1', port)}",
                 f"download.processes_count={PROCESSES}", f"download.thread_count={THREADS}",
                 f"download.urls_per_shard={URLS_PER_SHARD}", f"download.timeout={TIMEOUT_S}"]
    args = {"config": str(REPO / "configs" / "demo.yaml"), "overrides": overrides,
            "in": str(root / "balance"), "out": str(out)}
    sentinel, target = place_sentinel(world_dir)
    try:
        with ImageHost(str(world_dir), "127.0.0.1", port) as host:
            result = run_child(args, HARD_TIMEOUT_S)
            requests = host.requests()
        redirected = sentinel.connections()
    finally:
        sentinel.close()
    cfg = load_config(args["config"], overrides)
    roles = json.loads((world_dir / "host.json").read_text())["hosts"]
    return {"rows": rows, "truth": truth, "out": out, "result": result, "cfg": cfg,
            "sentinel_connections": redirected,
            "redirect_target": target, "requests": requests, "roles": roles}


def outcomes(out: Path) -> tuple[list[dict], list[dict]]:
    kept = read_table(str(out))
    kept_rows = kept.to_pylist() if kept is not None else []
    rejects = pq.read_table(str(out / "rejects")).to_pylist()
    return kept_rows, rejects


def test_the_expected_mix_follows_from_the_demo_settings(load_run):
    """The premises of EXPECTED_REASON: every fault kind has an expectation, and the demo's
    settings put tiny, oversized and slow on the side of the line the mapping says."""
    d = load_run["cfg"].download
    assert set(EXPECTED_REASON) == set(demo_world.FAULT_KINDS)
    assert d.thread_count == THREADS and d.processes_count == PROCESSES
    assert demo_world.TINY < d.min_side                                  # tiny: rejected
    w, h = demo_world.OVERSIZED
    assert w * h <= d.max_pixels and max(w, h) / min(w, h) <= d.max_aspect_ratio  # oversized: kept
    assert demo_world.SLOW_SECONDS > d.timeout                           # slow: a timeout
    assert not d.retries
    assert demo_world.REDIRECT_LOCATION.startswith(f"http://{SENTINEL[0]}:{SENTINEL[1]}/")


def test_the_stage_finishes_within_the_bound_under_load(load_run):
    result = load_run["result"]
    print(f"\nload test: {POOL} urls, {PROCESSES}x{THREADS} threads, stage {result['seconds']:.1f} s "
          f"({POOL / result['seconds']:.0f} urls/s), peak requests at once per host "
          f"{peak_concurrency(load_run['requests'])}; shards (urls, s): "
          f"{[(s['urls'], s['seconds']) for s in result['manifest']['download']['per_shard']]}")
    assert result["seconds"] < WALL_BOUND_S, f"{result['seconds']:.1f} s at {PROCESSES}x{THREADS} threads"


def test_every_url_is_kept_or_rejected_exactly_once(load_run):
    rows, out = load_run["rows"], load_run["out"]
    counts = load_run["result"]["manifest"]["counts"]
    kept, rejects = outcomes(out)
    uid_url = {r["uid"]: r["url"] for r in rows}
    assert len(uid_url) == len(rows) == POOL                           # the input's uids are unique
    assert counts["in"] == POOL == counts["kept"] + counts["rejected"]
    assert (len(kept), len(rejects)) == (counts["kept"], counts["rejected"])

    seen = collections.Counter([r["uid"] for r in kept] + [r["uid"] for r in rejects])
    doubled = {u: n for u, n in seen.items() if n > 1}
    missing = set(uid_url) - set(seen)
    unknown = set(seen) - set(uid_url)
    assert not doubled and not missing and not unknown, (
        f"{len(missing)} lost, {len(doubled)} doubled, {len(unknown)} unknown uids")
    for r in kept:
        assert r["url"] == uid_url[r["uid"]]
    for r in rejects:
        assert json.loads(r["record"])["url"] == uid_url[r["uid"]]       # the record is its row

    # every kept row's image is in the tar it names
    members: dict[str, set[str]] = {}
    for tar_path in sorted((out / "images").glob("*.tar")):
        with tarfile.open(tar_path) as tar:
            members[f"images/{tar_path.name}"] = {m.name for m in tar.getmembers()}
    lost = [r["uid"] for r in kept if f"{r['key']}.jpg" not in members.get(r["shard"], set())]
    assert not lost, f"{len(lost)} kept rows have no image in their tar"


def test_the_reject_mix_matches_the_injected_faults(load_run):
    kept, rejects = outcomes(load_run["out"])
    fate = {r["url"]: "kept" for r in kept}
    fate.update({json.loads(r["record"])["url"]: r["reason"] for r in rejects})
    wrong = collections.Counter()
    by_kind = collections.Counter()
    for t in load_run["truth"]:
        expected = EXPECTED_REASON.get(t["kind"]) or "kept"
        by_kind[t["kind"]] += 1
        if fate.get(t["url"]) != expected:
            wrong[(t["kind"], expected, fate.get(t["url"]))] += 1
    assert not wrong, f"(kind, expected, got): count  {dict(wrong)}"
    assert all(by_kind[k] > 0 for k in demo_world.FAULT_KINDS)          # every fault was injected
    reasons = load_run["result"]["manifest"]["counts"]["reasons"]
    expected_counts = collections.Counter()
    for kind, reason in EXPECTED_REASON.items():
        if reason:
            expected_counts[reason] += by_kind[kind]
    assert reasons == dict(expected_counts)

    # oversized originals were kept and resized to the demo's image size
    size = load_run["cfg"].download.image_size
    big = [r for r in kept if max(r["original_width"], r["original_height"]) == max(demo_world.OVERSIZED)]
    assert len(big) == by_kind["oversized"]
    assert all(min(r["width"], r["height"]) == size for r in big)


def test_the_allowlist_holds_under_load(load_run):
    _, rejects = outcomes(load_run["out"])
    kinds = {t["url"]: t["kind"] for t in load_run["truth"]}
    redirects = [r for r in rejects if kinds[json.loads(r["record"])["url"]] == "redirect_private"]
    assert len(redirects) == sum(k == "redirect_private" for k in kinds.values()) > 0
    target = load_run["redirect_target"]
    for r in redirects:
        assert r["reason"] == "private_address" and target in r["detail"], r
    assert load_run["sentinel_connections"] == 0, "the non-allowlisted redirect target was contacted"


def test_robots_txt_was_asked_once_per_host_first_and_obeyed(load_run):
    requests = sorted(load_run["requests"], key=lambda e: e["start"])
    roles = load_run["roles"]
    for role in roles:
        mine = [e for e in requests if e["host"] == role["address"]]
        assert mine and mine[0]["path"] == "/robots.txt", role["name"]
        assert sum(e["path"] == "/robots.txt" for e in mine) == 1, role["name"]
    report = politeness(requests, roles)["hosts"]
    assert {name: r["refused_paths"] for name, r in report.items() if r["refused_paths"]} == {}
    for name in ("no-witcurate", "robots-500", "robots-slow"):    # nothing but robots.txt asked
        assert report[name]["requests"] == 1, name
    table = pq.read_table(str(load_run["out"] / "robots")).to_pylist()
    verdicts = {r["origin"].split("//")[1].split(":")[0]: r["verdict"] for r in table}
    expected = {"commons": "rules", "plain-a": "rules", "plain-b": "rules", "no-robots": "allow_all",
                "no-witcurate": "rules", "robots-500": "disallow_all", "robots-slow": "disallow_all",
                "throttled": "allow_all"}
    assert verdicts == {r["address"]: expected[r["name"]] for r in roles}


def test_no_host_had_more_than_the_limit_open(load_run):
    limit = load_run["cfg"].download.per_host_connections
    peaks = peak_concurrency(load_run["requests"])
    assert max(peaks.values()) <= limit, peaks
    assert peaks["127.0.0.1"] == limit, peaks               # commons was kept busy up to the limit
    commons = [e for e in load_run["requests"] if e["host"] == "127.0.0.1"]
    assert not [e for e in commons if e["status"] == 429], "commons had to throttle us"


def test_every_request_carries_our_user_agent(load_run):
    agents = collections.Counter(e["ua"] for e in load_run["requests"])
    assert set(agents) == {load_run["cfg"].download.user_agent}, agents


def test_the_manifest_counts_each_hosts_outcomes(load_run):
    hosts = load_run["result"]["manifest"]["hosts"]
    assert hosts["distinct"] == 8 and hosts["top"][0]["host"] == "127.0.0.1"
    assert hosts["robots"] == {"rules": 4, "allow_all": 2, "disallow_all": 2}
    by_host = {h["host"]: h for h in hosts["top"]}
    kinds = collections.Counter((t["url"].split("/")[2].split(":")[0], t["kind"]) for t in load_run["truth"])
    assert by_host["127.0.0.8"]["rate_limited"] == by_host["127.0.0.8"]["urls"] == kinds[("127.0.0.8", "rate_limited")]
    assert by_host["127.0.0.5"]["disallowed"] == by_host["127.0.0.5"]["urls"]
    assert by_host["127.0.0.6"]["robots_unavailable"] == by_host["127.0.0.6"]["urls"]
    for h in hosts["top"]:
        assert h["urls"] == sum(h[o] for o in ("fetched", "disallowed", "robots_unavailable",
                                               "rate_limited", "failed"))


def test_the_truth_report_finds_every_fault_with_its_reason(load_run):
    kept, rejects = outcomes(load_run["out"])
    fates = {r["url"]: "shards" for r in kept}
    fates.update({json.loads(r["record"])["url"]: f"download:{r['reason']}" for r in rejects})
    report = download_faults({t["url"]: t["kind"] for t in load_run["truth"]}, fates)
    assert set(report) == set(demo_world.FAULT_KINDS)
    for kind, row in report.items():
        assert row["otherwise"] == {} and row["as_expected"] > 0, (kind, row)
    lines = format_politeness(politeness(load_run["requests"], load_run["roles"]))
    assert lines[0].startswith("image host log") and any(line.strip().startswith("commons") for line in lines)
