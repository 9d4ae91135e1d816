"""The demo's image host: serves root/images at /i/<name> on each of the world's host addresses,
answers /robots.txt as each host's role says (demo/hosts.py), rate-limits and throttles where
its role says so, logs every request (host_log.py), and acts out host.json's faults.

Faults, by kind (see faults.HOST_FAULTS):
  http_404 / http_500   that status with a short text body
  slow                  sends the headers, then sleeps host.json's slow_seconds (4 s) before
                        the body
  reset                 closes the connection with a TCP reset, no response at all
  truncated             Content-Length twice the body, half the body sent, connection closed
  html                  200 with a text/html page instead of an image
  redirect_private      302 to host.json's redirect_location (a loopback address and port
                        that is not on the download allowlist)
  noai                  the image, with `X-Robots-Tag: noai`
Content faults (decompression bomb, oversized, tiny images) are ordinary files to the host.
A host's manners (hosts.py): its robots.txt (200 with rules, 404, 500, or late), a limit on the
image requests it serves at once (above it: 429 with Retry-After: 1), or a 429/503 for every
image request with a Retry-After in one form after another. /private/i/<name> serves the same
file as /i/<name>: robots.txt decides whether it may be asked for.

Built on ThreadingHTTPServer: one thread per connection, a deep listen backlog for the
downloader's 2 x 16 concurrent fetches, no per-request log lines on stderr.
"""

from __future__ import annotations

import collections
import json
import os
import socket
import struct
import threading
import time
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

from witcurate.demo.host_log import RequestLog, peak_concurrency
from witcurate.demo.hosts import PRIVATE, THROTTLE_ANSWERS
from witcurate.errors import UserError

_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp"}


def load_host_config(root: str) -> dict:
    path = os.path.join(root, "host.json")
    if not os.path.exists(path):
        raise UserError(f"no demo world at {root} (host.json is missing)",
                        "run `witcurate demo generate` first")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 256
    allow_reuse_address = True

    def __init__(self, address, handler, root: str, config: dict, role: dict, state: "_HostState"):
        self.root = root
        self.images = os.path.join(root, "images")
        self.config = config
        self.faults: dict[str, str] = config.get("faults", {})
        self.prefix: str = config.get("prefix", "/i/")
        self.role = role
        self.state = state
        super().__init__(address, handler)

    def handle_error(self, request, client_address):
        """Clients hang up (timeouts, resets): nothing worth a traceback on stderr."""


class _HostState:
    """What the servers of one image host share: the request log, each host's requests in
    flight (for its `tolerate` limit), and where each throttled host is in THROTTLE_ANSWERS."""

    def __init__(self, log: RequestLog):
        self.log = log
        self.lock = threading.Lock()
        self.in_flight: collections.Counter[str] = collections.Counter()
        self.throttle_turn: collections.Counter[str] = collections.Counter()

    def enter(self, host: str) -> int:
        with self.lock:
            self.in_flight[host] += 1
            return self.in_flight[host]

    def leave(self, host: str) -> None:
        with self.lock:
            self.in_flight[host] -= 1

    def next_throttle(self, host: str) -> int:
        with self.lock:
            self.throttle_turn[host] += 1
            return self.throttle_turn[host] - 1


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"
    server_version = "witcurate-demo-host/1"
    sys_version = ""

    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        pass

    def do_HEAD(self):
        self._respond(head=True)

    def do_GET(self):
        self._respond(head=False)

    def send_response(self, code, message=None):
        self._status = code
        super().send_response(code, message)

    # -- responses --------------------------------------------------------------------------

    def _respond(self, head: bool) -> None:
        host = self.server.server_address[0]
        self._status, self._end, self._counted = 0, None, False
        start = time.time()
        try:
            self._dispatch(head)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError):
            self.close_connection = True
        finally:
            self._handed_over()
            self.server.state.log.record({
                "host": host, "path": urlsplit(self.path).path, "ua": self.headers.get("User-Agent", ""),
                "start": start, "end": self._end, "status": self._status})

    def _handed_over(self) -> None:
        """The response is about to leave (before its headers are flushed: from then on the
        client may be done with it): the request ends here for the log and for the host's
        in-flight count."""
        if self._end is None:
            self._end = time.time()
            if self._counted:
                self.server.state.leave(self.server.server_address[0])

    def _dispatch(self, head: bool) -> None:
        path = unquote(urlsplit(self.path).path)
        role = self.server.role
        if path == "/robots.txt":
            return self._robots(role, head)
        self._counted = True
        in_flight = self.server.state.enter(self.server.server_address[0])
        if role.get("throttled"):
            return self._throttle(head)
        if role.get("tolerate") and in_flight > role["tolerate"]:
            return self._send(429, "text/plain; charset=utf-8", b"429 Too Many Requests\n", head,
                              {"Retry-After": "1"})
        kind = self.server.faults.get(path)
        if kind == "http_404":
            return self._text(404, "Not Found", head)
        if kind == "http_500":
            return self._text(500, "Internal Server Error", head)
        if kind == "reset":
            return self._reset()
        if kind == "redirect_private":
            self.send_response(302)
            self.send_header("Location", self.server.config.get("redirect_location", "http://127.0.0.2:9/x.jpg"))
            self.send_header("Content-Length", "0")
            self._handed_over()
            self.end_headers()
            return None
        if kind == "html":
            body = ("<!DOCTYPE html>\n<html><head><title>Gallery</title></head><body>"
                    "<h1>Photo gallery</h1><p>This picture has moved. "
                    "<a href=\"/\">Back to the gallery</a></p></body></html>\n").encode()
            return self._send(200, "text/html; charset=utf-8", body, head)
        return self._image(path, kind, head)

    def _image(self, path: str, kind: str | None, head: bool) -> None:
        blob, ctype = self._file(path)
        if blob is None:
            return self._text(404, "Not Found", head)
        if kind == "slow":
            # Headers now, the body after slow_seconds: the client times out reading it. The
            # request is handed over with its headers, so the log's interval stays inside the
            # client's connection even though the client gives up before the host is done.
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(blob)))
            self._handed_over()
            self.end_headers()
            time.sleep(float(self.server.config.get("slow_seconds", 4.0)))
            if not head:
                self.wfile.write(blob)
            return None
        if kind == "truncated":
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(2 * len(blob)))
            self._handed_over()
            self.end_headers()
            if not head:
                self.wfile.write(blob[: len(blob) // 2])
            self.close_connection = True
            return None
        extra = {"X-Robots-Tag": "noai"} if kind == "noai" else {}
        return self._send(200, ctype, blob, head, extra)

    def _robots(self, role: dict, head: bool) -> None:
        if role.get("robots_slow"):
            time.sleep(float(self.server.config.get("slow_seconds", 4.0)))
        status = int(role.get("robots_status", 200))
        if status != 200:
            return self._text(status, "robots.txt", head)
        return self._send(200, "text/plain; charset=utf-8", (role.get("robots") or "").encode(), head)

    def _throttle(self, head: bool) -> None:
        turn = self.server.state.next_throttle(self.server.server_address[0])
        status, retry_after = THROTTLE_ANSWERS[turn % len(THROTTLE_ANSWERS)]
        if retry_after == "date":
            retry_after = formatdate(time.time() + 1, usegmt=True)
        return self._send(status, "text/plain; charset=utf-8", f"{status} slow down\n".encode(), head,
                          {"Retry-After": retry_after})

    def _file(self, path: str) -> tuple[bytes | None, str]:
        if path.startswith(PRIVATE):
            path = path[len(PRIVATE) - 1:]             # /private/i/NAME serves /i/NAME
        prefix = self.server.prefix
        if not path.startswith(prefix):
            return None, ""
        name = path[len(prefix):]
        if not name or "/" in name or name.startswith("."):
            return None, ""
        full = os.path.join(self.server.images, name)
        try:
            with open(full, "rb") as f:
                blob = f.read()
        except OSError:
            return None, ""
        return blob, _TYPES.get(os.path.splitext(name)[1].lower(), "application/octet-stream")

    def _send(self, code: int, ctype: str, body: bytes, head: bool, extra: dict | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self._handed_over()
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _text(self, code: int, message: str, head: bool) -> None:
        self._send(code, "text/plain; charset=utf-8", f"{code} {message}\n".encode(), head)

    def _reset(self) -> None:
        """Abort the connection: SO_LINGER with a zero timeout makes close() send a RST."""
        self.close_connection = True
        self._handed_over()
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.rfile.close()          # drop the file's reference so close() really closes
            self.connection.close()
        except OSError:
            pass


class ImageHost:
    """The demo image host in background threads, one server per host address of the world.

        with ImageHost("demo_world", "127.0.0.1", 0) as host:
            urllib.request.urlopen(host.base_url + "i/<name>.jpg")
            host.requests()                 # the request log so far

    The addresses come from host.json (demo/hosts.py: demo.host and the next ones); `host` is
    used only for a world without that list. port=0 picks a free port on the first address and
    takes the same one on the others (see .port / .base_url after start()). `log_path` appends
    the request log to a JSON-lines file as well.
    """

    def __init__(self, root: str, host: str = "127.0.0.1", port: int = 0, log_path: str | None = None):
        self.root = root
        self.requested_port = port
        self.config = load_host_config(root)
        self.roles = self.config.get("hosts") or [{"address": host}]
        self.host = self.roles[0]["address"]
        self.log_path = log_path
        self._servers: list[_Server] = []
        self._threads: list[threading.Thread] = []
        self._log: RequestLog | None = None

    @property
    def port(self) -> int:
        if not self._servers:
            return self.requested_port
        return self._servers[0].server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    @property
    def addresses(self) -> list[str]:
        return [role["address"] for role in self.roles]

    def requests(self) -> list[dict]:
        """Every request served so far (host_log.py's entries)."""
        return self._log.entries() if self._log is not None else []

    def peak_concurrency(self) -> dict[str, int]:
        return peak_concurrency(self.requests())

    def start(self) -> "ImageHost":
        if self._servers:
            return self
        self._log = RequestLog(self.log_path)
        state = _HostState(self._log)
        port = self.requested_port
        try:
            for role in self.roles:
                server = self._bind(role, port, state)
                port = server.server_address[1]
                self._servers.append(server)
        except BaseException:
            self.stop()
            raise
        for server in self._servers:
            thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                      name=f"witcurate-demo-host-{server.server_address[0]}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def _bind(self, role: dict, port: int, state: _HostState) -> _Server:
        address = role["address"]
        try:
            return _Server((address, port), _Handler, self.root, self.config, role, state)
        except OSError as e:
            hint = ("pick another port (demo.port) or stop the other server" if e.errno == 98 else
                    f"the demo serves {len(self.roles)} loopback addresses ({self.addresses[0]} ... "
                    f"{self.addresses[-1]}); on macOS add each with `sudo ifconfig lo0 alias ADDRESS up`")
            raise UserError(f"cannot serve the demo world on {address}:{port}: {e.strerror or e}",
                            hint) from None

    def stop(self) -> None:
        for i, server in enumerate(self._servers):
            if i < len(self._threads):                  # serving: stop its loop first
                server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._servers, self._threads = [], []
        if self._log is not None:
            self._log.close()

    def __enter__(self) -> "ImageHost":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def serve_forever(root: str, host: str = "127.0.0.1", port: int = 18080, progress=print) -> None:
    """Serve the demo world in the foreground until interrupted (Ctrl-C)."""
    server = ImageHost(root, host, port).start()
    progress(f"serving {root} at {server.base_url} and the other demo hosts "
             f"({', '.join(server.addresses[1:])}, port {server.port}) (Ctrl-C to stop)")
    try:
        with open(os.path.join(root, "world.json"), encoding="utf-8") as f:
            expected = json.load(f).get("base_url")
    except (OSError, ValueError):
        expected = None
    if expected and expected != server.base_url:
        progress(f"note: the pool's URLs point at {expected}, not at {server.base_url}")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        progress("stopping the demo image host")
    finally:
        server.stop()
