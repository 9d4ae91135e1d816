"""The demo's image host: serves root/images at /i/<name> and acts out host.json's faults.

Faults, by kind (see faults.HOST_FAULTS):
  http_404 / http_500   that status with a short text body
  slow                  sleeps host.json's slow_seconds (4 s), then serves the image
  reset                 closes the connection with a TCP reset, no response at all
  truncated             Content-Length twice the body, half the body sent, connection closed
  html                  200 with a text/html page instead of an image
  redirect_private      302 to host.json's redirect_location (a loopback address and port
                        that is not on the download allowlist)
  noai                  the image, with `X-Robots-Tag: noai`
Content faults (decompression bomb, oversized, tiny images) are ordinary files to the host.

Built on ThreadingHTTPServer: one thread per connection, a deep listen backlog for the
downloader's 2 x 16 concurrent fetches, no per-request log lines.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

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

    def __init__(self, address, handler, root: str, config: dict):
        self.root = root
        self.images = os.path.join(root, "images")
        self.config = config
        self.faults: dict[str, str] = config.get("faults", {})
        self.prefix: str = config.get("prefix", "/i/")
        super().__init__(address, handler)

    def handle_error(self, request, client_address):
        """Clients hang up (timeouts, resets): nothing worth a traceback on stderr."""


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

    # -- responses --------------------------------------------------------------------------

    def _respond(self, head: bool) -> None:
        try:
            self._dispatch(head)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError):
            self.close_connection = True

    def _dispatch(self, head: bool) -> None:
        path = unquote(urlsplit(self.path).path)
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
            self.end_headers()
            return None
        if kind == "html":
            body = ("<!DOCTYPE html>\n<html><head><title>Gallery</title></head><body>"
                    "<h1>Photo gallery</h1><p>This picture has moved. "
                    "<a href=\"/\">Back to the gallery</a></p></body></html>\n").encode()
            return self._send(200, "text/html; charset=utf-8", body, head)

        blob, ctype = self._file(path)
        if blob is None:
            return self._text(404, "Not Found", head)
        if kind == "slow":
            time.sleep(float(self.server.config.get("slow_seconds", 4.0)))
        if kind == "truncated":
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(2 * len(blob)))
            self.end_headers()
            if not head:
                self.wfile.write(blob[: len(blob) // 2])
            self.close_connection = True
            return None
        extra = {"X-Robots-Tag": "noai"} if kind == "noai" else {}
        return self._send(200, ctype, blob, head, extra)

    def _file(self, path: str) -> tuple[bytes | None, str]:
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
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _text(self, code: int, message: str, head: bool) -> None:
        self._send(code, "text/plain; charset=utf-8", f"{code} {message}\n".encode(), head)

    def _reset(self) -> None:
        """Abort the connection: SO_LINGER with a zero timeout makes close() send a RST."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.rfile.close()          # drop the file's reference so close() really closes
            self.connection.close()
        except OSError:
            pass


class ImageHost:
    """The demo image host in a background thread.

        with ImageHost("demo_world", "127.0.0.1", 0) as host:
            urllib.request.urlopen(host.base_url + "i/<name>.jpg")

    port=0 picks a free port (see .port / .base_url after start()).
    """

    def __init__(self, root: str, host: str = "127.0.0.1", port: int = 0):
        self.root = root
        self.host = host
        self.requested_port = port
        self.config = load_host_config(root)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            return self.requested_port
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def start(self) -> "ImageHost":
        if self._server is not None:
            return self
        try:
            self._server = _Server((self.host, self.requested_port), _Handler, self.root, self.config)
        except OSError as e:
            raise UserError(f"cannot serve the demo world on {self.host}:{self.requested_port}: "
                            f"{e.strerror or e}", "pick another port (demo.port) or stop the "
                            "other server") from None
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.1},
                                        name="witcurate-demo-host", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> "ImageHost":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def serve_forever(root: str, host: str = "127.0.0.1", port: int = 18080, progress=print) -> None:
    """Serve the demo world in the foreground until interrupted (Ctrl-C)."""
    server = ImageHost(root, host, port).start()
    progress(f"serving {root} at {server.base_url} (Ctrl-C to stop)")
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
