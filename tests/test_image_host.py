"""The demo image host answers every URL of the pool the way host.json and the truth say, each of
its hosts answers robots.txt and throttles the way its role says, and it logs every request.

Loopback only: the host binds 127.0.0.1 ... 127.0.0.8, and the redirect fault is checked without
following it.
"""

from __future__ import annotations

import concurrent.futures
import email.utils
import http.client
import os
import socket
import time
import urllib.error
import urllib.request

import pyarrow.parquet as pq
import pytest

from witcurate.config import DemoSection
from witcurate.demo import hosts as demo_hosts
from witcurate.demo.host import ImageHost, _Handler
from witcurate.demo.world import REDIRECT_LOCATION, generate_world
from witcurate.errors import UserError
from ports import free_port



@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("host") / "world"
    port = free_port()
    cfg = DemoSection(root=str(root), host="127.0.0.1", port=port, pool_size=400, trusted_size=8,
                      eval_size=8, image_size=96, seed=3)
    generate_world(cfg, progress=lambda m: None)
    rows = pq.read_table(root / "truth" / "truth.parquet").to_pylist()
    with ImageHost(str(root), "127.0.0.1", port) as host:
        assert host.base_url == f"http://127.0.0.1:{port}/"
        yield root, host, rows


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def _get(url: str, timeout: float = 3.0):
    """(status, headers, body) without following redirects; HTTP errors are answers too."""
    try:
        with _OPENER.open(url, timeout=timeout) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def _first(rows, kind):
    return next(r for r in rows if r["kind"] == kind)


def _file_bytes(root, url):
    with open(os.path.join(root, "images", url.rsplit("/", 1)[1]), "rb") as f:
        return f.read()


@pytest.mark.parametrize("kind", ["clean", "mismatched", "junk", "exact_dup", "near_dup",
                                  "oversized", "tiny"])
def test_images_are_served_as_stored(served, kind):
    root, _, rows = served
    r = _first(rows, kind)
    status, headers, body = _get(r["url"])
    assert status == 200
    assert body == _file_bytes(root, r["url"])
    magic = "image/png" if body.startswith(b"\x89PNG") else "image/jpeg" if body[:2] == b"\xff\xd8" else "?"
    assert headers["Content-Type"] == magic
    assert int(headers["Content-Length"]) == len(body)
    assert headers.get("X-Robots-Tag") is None


def test_http_errors(served):
    _, host, rows = served
    assert _get(_first(rows, "http_404")["url"])[0] == 404
    assert _get(_first(rows, "http_500")["url"])[0] == 500
    assert _get(host.base_url + "i/no-such-image.jpg")[0] == 404
    assert _get(host.base_url + "host.json")[0] == 404
    conn = http.client.HTTPConnection("127.0.0.1", host.port, timeout=3)
    conn.request("GET", "/i/../host.json")
    assert conn.getresponse().status == 404
    conn.close()


def test_redirect_points_at_a_loopback_address_that_is_not_the_host(served):
    _, host, rows = served
    status, headers, _ = _get(_first(rows, "redirect_private")["url"])
    assert status == 302
    assert headers["Location"] == REDIRECT_LOCATION
    assert headers["Location"].startswith("http://127.") and f":{host.port}/" not in headers["Location"]


def test_html_instead_of_an_image(served):
    _, _, rows = served
    status, headers, body = _get(_first(rows, "html")["url"])
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert body.lstrip().lower().startswith(b"<!doctype html")


def test_noai_header(served):
    root, _, rows = served
    r = _first(rows, "noai")
    status, headers, body = _get(r["url"])
    assert status == 200 and headers["X-Robots-Tag"] == "noai"
    assert body == _file_bytes(root, r["url"])


def test_bomb_is_served_as_a_small_png(served):
    _, _, rows = served
    status, headers, body = _get(_first(rows, "bomb")["url"])
    assert status == 200 and headers["Content-Type"] == "image/png"
    assert body[:8] == b"\x89PNG\r\n\x1a\n" and len(body) < 200_000


def test_truncated_body_is_shorter_than_its_content_length(served):
    _, _, rows = served
    with pytest.raises(http.client.IncompleteRead) as e:
        with _OPENER.open(_first(rows, "truncated")["url"], timeout=3) as r:
            assert int(r.headers["Content-Length"]) > 0
            r.read()
    assert e.value.expected > 0 and len(e.value.partial) > 0


def test_reset_closes_without_a_response(served):
    _, _, rows = served
    with pytest.raises((ConnectionResetError, http.client.RemoteDisconnected, urllib.error.URLError)):
        _get(_first(rows, "reset")["url"])


def test_slow_answers_after_the_download_timeout(served):
    root, _, rows = served
    r = _first(rows, "slow")
    start = time.monotonic()
    with pytest.raises((TimeoutError, urllib.error.URLError)):
        _get(r["url"], timeout=1.0)
    assert time.monotonic() - start < 3
    start = time.monotonic()
    status, _, body = _get(r["url"], timeout=10)
    assert status == 200 and body == _file_bytes(root, r["url"])
    assert time.monotonic() - start >= 3.5            # sleeps 4 s: longer than the 2 s timeout


def test_many_concurrent_clients_and_no_request_log(served, capfd):
    root, host, rows = served
    # commons answers 429 above 2 requests at once (test_commons_throttles_above_two): elsewhere
    urls = [r["url"] for r in rows if r["kind"] in ("clean", "mismatched", "junk")
            and not r["url"].startswith(host.base_url)][:200]
    faults = [_first(rows, k)["url"] for k in ("http_404", "reset", "html")]

    def fetch(url):
        try:
            return _get(url, timeout=5)[0]
        except OSError:
            return "error"

    start = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        statuses = list(pool.map(fetch, urls + faults * 5))
    elapsed = time.monotonic() - start
    assert statuses[:len(urls)] == [200] * len(urls)
    assert elapsed < 10
    out, err = capfd.readouterr()
    assert "GET" not in err and "GET" not in out and "Traceback" not in err


def test_stop_frees_the_port_and_port_zero_picks_one(served):
    root, _, rows = served
    host = ImageHost(str(root), "127.0.0.1", 0).start()
    try:
        assert host.port > 0
        name = _first(rows, "clean")["url"].rsplit("/", 1)[1]
        assert _get(f"{host.base_url}i/{name}")[0] == 200
    finally:
        host.stop()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", host.port), timeout=1).close()
    # A second host on a port already in use says so.
    _, busy, _ = served
    with pytest.raises(UserError):
        ImageHost(str(root), "127.0.0.1", busy.port).start()


def test_missing_world_is_a_user_error(tmp_path):
    with pytest.raises(UserError):
        ImageHost(str(tmp_path / "nothing"), "127.0.0.1", 0)


# --------------------------------------------------------------------------- many hosts

def test_every_host_answers_its_own_robots_txt(served):
    _, host, _ = served
    assert host.addresses == demo_hosts.addresses("127.0.0.1") and len(host.addresses) == 8
    for address, role in zip(host.addresses, demo_hosts.ROLES):
        url = f"http://{address}:{host.port}/robots.txt"
        if role.robots_slow:
            with pytest.raises((TimeoutError, urllib.error.URLError)):
                _get(url, timeout=1.0)
            continue
        status, _, body = _get(url)
        assert status == role.robots_status, role.name
        if status == 200:
            assert body.decode() == role.robots


def test_urls_sit_on_the_host_their_kind_needs(served):
    _, host, rows = served
    by_role = {address: role.name for address, role in zip(host.addresses, demo_hosts.ROLES)}
    for r in rows:
        role = by_role[r["url"].split("/")[2].split(":")[0]]
        if r["kind"] in demo_hosts.KIND_HOSTS:
            assert role in demo_hosts.KIND_HOSTS[r["kind"]], r
        else:
            assert demo_hosts.ROLES[demo_hosts.ROLE_INDEX[role]].share > 0, r
        assert ("/private/" in r["url"]) == (r["kind"] == "robots_path")
    commons = sum(by_role[r["url"].split("/")[2].split(":")[0]] == "commons" for r in rows)
    assert commons > 0.4 * len(rows)                  # one host holds a large share


def test_a_private_path_serves_the_same_file(served):
    root, _, rows = served
    r = _first(rows, "robots_path")
    status, _, body = _get(r["url"])
    assert status == 200 and body == _file_bytes(root, r["url"])


def test_the_throttled_host_answers_each_retry_after_form(served):
    _, _, rows = served
    urls = [r["url"] for r in rows if r["kind"] == "rate_limited"]
    answers = []
    for i in range(len(demo_hosts.THROTTLE_ANSWERS)):
        asked = time.time()
        status, headers, _ = _get(urls[i % len(urls)])
        answers.append((status, headers["Retry-After"], asked, time.time()))
    for (status, value, asked, answered), (want_status, want) in zip(answers, demo_hosts.THROTTLE_ANSWERS):
        assert status == want_status
        if want == "date":
            # about a second after the host answered (a whole second, so up to one earlier),
            # whenever between our asking and reading the answer that was
            assert asked <= email.utils.parsedate_to_datetime(value).timestamp() <= answered + 1
        else:
            assert value == want


def test_commons_throttles_above_two_at_once(served, monkeypatch):
    _, host, rows = served
    image = _Handler._image

    def slow_image(self, *args):
        time.sleep(0.6)                              # three requests surely in flight together
        return image(self, *args)
    monkeypatch.setattr(_Handler, "_image", slow_image)
    urls = [r["url"] for r in rows if r["kind"] == "clean" and r["url"].startswith(host.base_url)][:3]
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(_get, urls))
    statuses = sorted(a[0] for a in answers)
    assert statuses == [200, 200, 429]
    assert next(a[1]["Retry-After"] for a in answers if a[0] == 429) == "1"


def _wait_for_entry(host, index: int, timeout: float = 3.0) -> dict:
    """The host records a request once its handler returns, which can be just after the client
    has read the whole response; wait for it rather than race it."""
    deadline = time.monotonic() + timeout
    while len(host.requests()) <= index and time.monotonic() < deadline:
        time.sleep(0.01)
    entries = host.requests()
    assert len(entries) > index, "the host never logged the request"
    return entries[index]


def test_every_request_is_logged(served):
    _, host, rows = served
    r = _first(rows, "clean")
    request = urllib.request.Request(r["url"], headers={"User-Agent": "logged-agent/1"})
    before = len(host.requests())
    urllib.request.urlopen(request, timeout=3).close()
    entry = _wait_for_entry(host, before)
    assert entry["host"] == r["url"].split("/")[2].split(":")[0]
    assert entry["path"] == "/" + r["url"].split("/", 3)[3] and entry["ua"] == "logged-agent/1"
    assert entry["status"] == 200 and entry["start"] <= entry["end"]
    peaks = host.peak_concurrency()
    assert set(peaks) <= set(host.addresses) and all(p >= 1 for p in peaks.values())
