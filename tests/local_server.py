"""A test's local HTTP server, served from a daemon thread and stopped at once.

socketserver's serve_forever looks for a shutdown request every 0.5 s by default, so stopping a
server waited up to half a second; the suite starts dozens (every robots.txt and politeness case
has its own), which added up to several seconds of waiting. Served here, a stop takes at most
POLL_S.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from socketserver import BaseServer

POLL_S = 0.02


def start(server: BaseServer) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": POLL_S}, daemon=True)
    thread.start()
    return thread


def stop(server: BaseServer, thread: threading.Thread | None = None) -> None:
    server.shutdown()
    server.server_close()
    if thread is not None:
        thread.join(10)


@contextmanager
def serving(server: BaseServer):
    """Serve `server` for the block; stop and close it after."""
    thread = start(server)
    try:
        yield server
    finally:
        stop(server, thread)
