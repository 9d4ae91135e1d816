"""robots.txt: the verdicts on plain values, and fetching it from local servers with bad answers
(10 MB, a redirect to a private address, the wrong encoding, 500, 404, a hang, a trickle).

Every server here is on loopback; the one behind the private redirect (127.0.0.2) is not on the
allowlist and must never be reached.
"""

from __future__ import annotations

import collections
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import local_server
from witcurate.filters import urls
from witcurate.filters.robots import (ALLOW_ALL, DISALLOW_ALL, NOT_FETCHED, ROBOTS_DISALLOWED,
                                      ROBOTS_MAX_BYTES, ROBOTS_UNAVAILABLE, RULES, RobotsRules,
                                      cut_body, decode_body, verdict_for)
from witcurate.pipeline.robots import FetchRobots, fetch_robots

AGENT = "witcurate"
UA = "witcurate/0.1.0 (+https://example.org/witcurate)"


# --------------------------------------------------------------------------- verdicts

@pytest.mark.parametrize("status, error, verdict", [
    (200, None, RULES), (204, None, RULES),
    (404, None, ALLOW_ALL), (403, None, ALLOW_ALL), (401, None, ALLOW_ALL), (410, None, ALLOW_ALL),
    (310, None, ALLOW_ALL),                      # past the redirect limit: unavailable (RFC 9309)
    (429, None, DISALLOW_ALL), (500, None, DISALLOW_ALL), (503, None, DISALLOW_ALL),
    (None, "timed out", DISALLOW_ALL), (None, "refused address 10.0.0.1", DISALLOW_ALL),
])
def test_verdict_of_each_answer(status, error, verdict):
    assert verdict_for(status, error) == verdict


def test_rules_for_our_token_replace_the_star_group():
    text = ("User-agent: otherbot\nDisallow: /\n\n"
            "User-agent: witcurate\nDisallow: /private/\nAllow: /private/ok/\n\n"
            "User-agent: *\nDisallow: /\n")
    rules = RobotsRules.from_text("http://h:80", RULES, text)
    assert rules.check("http://h/i/a.jpg", AGENT) is True           # our group, not *
    assert rules.check("http://h/private/ok/a.jpg", AGENT) is True   # the longer Allow wins
    drop = rules.check("http://h/private/a.jpg", AGENT)
    assert drop.reason == ROBOTS_DISALLOWED and "http://h:80/robots.txt" in drop.detail
    # without a group naming us, the * group applies; another bot's group never does
    star = RobotsRules.from_text("http://h:80", RULES, "User-agent: otherbot\nDisallow: /\n\n"
                                 "User-agent: *\nDisallow: /x/\n")
    assert star.check("http://h/i/a.jpg", AGENT) is True
    assert star.check("http://h/x/a.jpg", AGENT).reason == ROBOTS_DISALLOWED


def test_allow_all_disallow_all_and_empty_rules():
    assert RobotsRules("http://h:80", ALLOW_ALL).check("http://h/a", AGENT) is True
    assert RobotsRules("http://h:80", NOT_FETCHED).check("http://h/a", AGENT) is True
    drop = RobotsRules("http://h:80", DISALLOW_ALL, "HTTP 500").check("http://h/a", AGENT)
    assert drop.reason == ROBOTS_UNAVAILABLE and "HTTP 500" in drop.detail
    assert RobotsRules.from_text("http://h:80", RULES, "").check("http://h/a", AGENT) is True
    assert RobotsRules.from_text("http://h:80", RULES, "\x00\xff garbage {{{").check("http://h/a", AGENT) is True


def test_ten_megabytes_are_cut_at_a_line_within_500_kib():
    line = b"Disallow: /some/long/path/that/repeats/\n"
    body = b"User-agent: *\nDisallow: /early/\n" + line * (10 * 2**20 // len(line)) + b"Disallow: /late/\n"
    head, cut = cut_body(body)
    assert cut and len(head) <= ROBOTS_MAX_BYTES and head.endswith(b"\n")
    rules = RobotsRules.from_text("http://h:80", RULES, decode_body(head)[0])
    assert rules.check("http://h/early/a", AGENT).reason == ROBOTS_DISALLOWED
    assert rules.check("http://h/late/a", AGENT) is True        # past the cut: not read
    assert cut_body(b"short\n") == (b"short\n", False)


def test_wrong_encodings_are_read_not_dropped():
    latin = "User-agent: *\nDisallow: /café/\n".encode("latin-1")
    text, encoding = decode_body(latin)
    assert encoding == "latin-1" and "/café/" in text
    rules = RobotsRules.from_text("http://h:80", RULES, text)
    assert rules.check("http://h/caf%C3%A9/a.jpg", AGENT).reason == ROBOTS_DISALLOWED
    utf16 = "\ufeffUser-agent: *\nDisallow: /x/\n".encode("utf-16-le")
    text, encoding = decode_body(utf16)
    assert encoding == "utf-16-le"
    assert RobotsRules.from_text("http://h:80", RULES, text).check("http://h/x/1", AGENT).reason == ROBOTS_DISALLOWED
    assert decode_body(b"\xef\xbb\xbfUser-agent: *\n") == ("User-agent: *\n", "utf-8")


# --------------------------------------------------------------------------- fetching

class RobotsServer:
    """A loopback server whose /robots.txt answer is `answer(handler)`; records every request."""

    def __init__(self, host: str, answer):
        self.requests: list[tuple[str, str]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                outer.requests.append((self.path, self.headers.get("User-Agent", "")))
                try:
                    answer(self)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = ThreadingHTTPServer((host, 0), Handler)
        self.httpd.daemon_threads = True
        self.origin = f"http://{host}:{self.httpd.server_address[1]}"
        local_server.start(self.httpd)

    def close(self):
        local_server.stop(self.httpd)


def reply(handler, status: int, body: bytes, headers=None):
    handler.send_response(status)
    for k, v in (headers or {}).items():
        handler.send_header(k, v)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


@pytest.fixture
def serve():
    servers = []

    def start(answer, host="127.0.0.1"):
        servers.append(RobotsServer(host, answer))
        return servers[-1]
    yield start
    for s in servers:
        s.close()


def opener_for(*servers):
    policy = urls.AddressPolicy.from_config([s.origin.split("//")[1] for s in servers])
    return urls.build_opener(policy)


def test_rules_are_fetched_with_our_user_agent(serve):
    server = serve(lambda h: reply(h, 200, b"User-agent: *\nDisallow: /private/\n"))
    record = fetch_robots(server.origin, opener_for(server), UA, timeout=3)
    assert record["verdict"] == RULES and record["http_status"] == 200
    assert server.requests == [("/robots.txt", UA)]
    assert len(record["digest"]) == 32 and record["encoding"] == "utf-8" and not record["truncated"]
    rules = RobotsRules.from_text(server.origin, record["verdict"], record["text"])
    assert rules.check(server.origin + "/private/a.jpg", AGENT).reason == ROBOTS_DISALLOWED


def test_ten_megabyte_robots_is_read_only_to_the_cap(serve):
    line = b"Disallow: /x/\n"
    body = b"User-agent: *\nDisallow: /early/\n" + line * (10 * 2**20 // len(line))
    server = serve(lambda h: reply(h, 200, body))
    start = time.monotonic()
    record = fetch_robots(server.origin, opener_for(server), UA, timeout=5)
    assert time.monotonic() - start < 5
    assert record["verdict"] == RULES and record["truncated"]
    assert record["bytes"] <= ROBOTS_MAX_BYTES + 1
    rules = RobotsRules.from_text(server.origin, RULES, record["text"])
    assert rules.check(server.origin + "/early/a", AGENT).reason == ROBOTS_DISALLOWED


def test_redirect_to_a_private_address_is_unreachable_and_never_followed(serve):
    private = serve(lambda h: reply(h, 200, b"User-agent: *\nAllow: /\n"), host="127.0.0.2")
    public = serve(lambda h: (h.send_response(301), h.send_header("Location", private.origin + "/robots.txt"),
                              h.send_header("Content-Length", "0"), h.end_headers()))
    record = fetch_robots(public.origin, opener_for(public), UA, timeout=3)
    assert record["verdict"] == DISALLOW_ALL and "refused" in record["detail"]
    assert private.requests == []
    rules = RobotsRules.from_text(public.origin, record["verdict"], None, record["detail"])
    assert rules.check(public.origin + "/a.jpg", AGENT).reason == ROBOTS_UNAVAILABLE


def test_redirect_on_the_same_host_is_followed(serve):
    def answer(h):
        if h.path == "/robots.txt":
            h.send_response(302)
            h.send_header("Location", "/real-robots.txt")
            h.send_header("Content-Length", "0")
            h.end_headers()
        else:
            reply(h, 200, b"User-agent: *\nDisallow: /no/\n")
    server = serve(answer)
    record = fetch_robots(server.origin, opener_for(server), UA, timeout=3)
    assert record["verdict"] == RULES and "/no/" in record["text"]
    assert [p for p, _ in server.requests] == ["/robots.txt", "/real-robots.txt"]
    assert {ua for _, ua in server.requests} == {UA}


def test_latin1_robots_is_obeyed(serve):
    server = serve(lambda h: reply(h, 200, "User-agent: *\nDisallow: /café/\n".encode("latin-1"),
                                   {"Content-Type": "text/plain; charset=utf-8"}))
    record = fetch_robots(server.origin, opener_for(server), UA, timeout=3)
    assert record["encoding"] == "latin-1"
    rules = RobotsRules.from_text(server.origin, RULES, record["text"])
    assert rules.check(server.origin + "/caf%C3%A9/x.jpg", AGENT).reason == ROBOTS_DISALLOWED


@pytest.mark.parametrize("status, verdict", [(500, DISALLOW_ALL), (503, DISALLOW_ALL),
                                             (404, ALLOW_ALL), (403, ALLOW_ALL), (429, DISALLOW_ALL)])
def test_status_answers(serve, status, verdict):
    server = serve(lambda h: reply(h, status, b"nope"))
    record = fetch_robots(server.origin, opener_for(server), UA, timeout=3)
    assert (record["verdict"], record["http_status"]) == (verdict, status)


def test_a_hang_and_a_trickle_end_at_the_timeout(serve):
    hang = serve(lambda h: time.sleep(4))

    def trickle(h):
        h.send_response(200)
        h.send_header("Content-Length", "100000")
        h.end_headers()
        for _ in range(40):
            h.wfile.write(b"#")
            h.wfile.flush()
            time.sleep(0.2)
    slow = serve(trickle)
    for server in (hang, slow):
        start = time.monotonic()
        record = fetch_robots(server.origin, opener_for(server), UA, timeout=1)
        assert time.monotonic() - start < 3, server.origin
        assert record["verdict"] == DISALLOW_ALL and "timed out" in record["detail"]


def test_an_origin_the_address_policy_refuses_is_not_asked(serve, tmp_path):
    private = serve(lambda h: reply(h, 200, b""), host="127.0.0.2")
    from witcurate.config import DownloadSection
    fetcher = FetchRobots(DownloadSection(timeout=2), str(tmp_path))
    fetcher.setup()
    (origin, record), = list(fetcher.process((0, [private.origin])))
    assert origin == private.origin and record["verdict"] == NOT_FETCHED
    assert "refused address" in record["detail"] and private.requests == []


def test_verdicts_are_cached_in_the_work_dir(serve, tmp_path):
    server = serve(lambda h: reply(h, 200, b"User-agent: *\nDisallow: /x/\n"))
    from witcurate.config import DownloadSection
    cfg = DownloadSection(timeout=2, allow_private=[server.origin.split("//")[1]])
    for _ in range(2):
        fetcher = FetchRobots(cfg, str(tmp_path))
        fetcher.setup()
        (_, record), = list(fetcher.process((3, [server.origin, server.origin])))
        assert record["verdict"] == RULES
    assert collections.Counter(p for p, _ in server.requests) == {"/robots.txt": 1}
    assert (tmp_path / "robots" / "bucket-00003.json").exists()
