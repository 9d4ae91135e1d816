"""The urllib opener of the download workers: the URL-safety guard, plus politeness.

img2dataset fetches every image with `urllib.request.urlopen(Request(url, headers={"User-Agent":
...}), timeout)`; its worker processes install this opener instead of urllib's (see
download_worker.install), which
  * sends our User-Agent (download.user_agent) on every request, replacing img2dataset's
    browser-like string (its `user_agent_token` stays the token X-Robots-Tag is matched with);
  * takes a connection slot of the URL's host (host_gate) before connecting and gives it back
    when the response is closed, so at most download.per_host_connections requests to one host
    are open at once across the shard's worker processes, started download.per_host_delay apart;
    a redirect gives its slot back before the next hop takes one (no two slots held at once);
  * backs off on 429/503 by Retry-After (filters/retry_after.py): the host is held off for what
    it asked, every thread and process of the shard waits for it, and the URL is retried up to
    download.rate_limit_retries times; a URL given up raises RateLimited, whose text
    download_results maps to the `rate_limited` reason.
"""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
import weakref
from typing import Callable
from urllib.parse import urlsplit

from witcurate.filters import urls
from witcurate.filters.retry_after import RATE_LIMITED_MARKER, plan_backoff
from witcurate.pipeline.host_gate import HostGate, HostHeldOff, Lease


class RateLimited(OSError):
    """A URL given up on a throttling host; the text starts with RATE_LIMITED_MARKER."""


def host_key(url: str) -> str:
    """The host a request counts against: its lower-cased host name (any scheme, any port)."""
    try:
        return (urlsplit(url).hostname or "").lower()
    except ValueError:
        return ""


def _release_on_close(response, lease: Lease) -> None:
    """Give the slot back when the response is closed (or, at the latest, collected)."""
    close = response.close

    def close_and_release() -> None:
        try:
            close()
        finally:
            lease.release()

    response.close = close_and_release
    weakref.finalize(response, lease.release)


def gated_open(gate: HostGate, req: urllib.request.Request, open_connection: Callable):
    """open_connection(req) while holding one of the host's slots (kept by the response)."""
    host = host_key(req.full_url)
    try:
        lease = gate.acquire(host)
    except HostHeldOff as e:
        raise RateLimited(f"{RATE_LIMITED_MARKER}: {e}") from None
    try:
        response = open_connection(req)
    except BaseException:
        lease.release()
        raise
    _release_on_close(response, lease)
    return response


class PoliteHTTPHandler(urls.GuardedHTTPHandler):
    def __init__(self, policy: urls.AddressPolicy, gate: HostGate):
        super().__init__(policy)
        self.gate = gate

    def http_open(self, req):
        return gated_open(self.gate, req, super().http_open)


class PoliteHTTPSHandler(urls.GuardedHTTPSHandler):
    def __init__(self, policy: urls.AddressPolicy, gate: HostGate):
        super().__init__(policy)
        self.gate = gate

    def https_open(self, req):
        return gated_open(self.gate, req, super().https_open)


class PoliteOpener(urllib.request.OpenerDirector):
    """OpenerDirector that sends our User-Agent and backs off throttled answers (see module)."""

    def __init__(self, gate: HostGate, user_agent: str, retries: int, max_wait: float):
        super().__init__()
        self.gate = gate
        self.user_agent = user_agent
        self.retries = retries
        self.max_wait = max_wait
        self.addheaders = [("User-agent", user_agent)]

    def open(self, fullurl, data=None, timeout=socket._GLOBAL_DEFAULT_TIMEOUT):
        req = fullurl if isinstance(fullurl, urllib.request.Request) else urllib.request.Request(fullurl, data)
        req.add_header("User-Agent", self.user_agent)
        attempt = 0
        while True:
            try:
                return super().open(req, data, timeout)
            except urllib.error.HTTPError as err:
                err.close()                       # gives the slot back
                header = err.headers.get("Retry-After") if err.headers is not None else None
                plan = plan_backoff(err.code, header, attempt, self.retries, self.max_wait, time.time())
                if plan is None:
                    raise
                host = host_key(req.full_url)
                self.gate.hold_off(host, plan.hold)
                if not plan.retry:
                    raise RateLimited(f"{RATE_LIMITED_MARKER}: {host} {plan.why}") from None
                attempt += 1


def build_opener(policy: urls.AddressPolicy, gate: HostGate, user_agent: str, retries: int,
                 max_wait: float, content_type_ok: Callable[[str], object] | None = None) -> PoliteOpener:
    opener = PoliteOpener(gate, user_agent, retries, max_wait)
    for handler in urls.guarded_handlers(policy, content_type_ok, http=PoliteHTTPHandler(policy, gate),
                                         https=PoliteHTTPSHandler(policy, gate)):
        opener.add_handler(handler)
    return opener
