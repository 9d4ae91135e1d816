"""Serve a built report over HTTP (`witcurate browse OUT --serve`): the directory as it is, on
loopback unless told otherwise, for looking at a run on a remote machine through a tunnel."""

from __future__ import annotations

import functools
import http.server
import os

from witcurate.errors import InputError


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):      # noqa: A002 (the base class's name)
        pass


def make_server(directory: str, host: str = "127.0.0.1", port: int = 8000) -> http.server.ThreadingHTTPServer:
    """A server for `directory` (a local path); port 0 picks a free one (server.server_address)."""
    if "://" in directory or not os.path.isdir(directory):
        raise InputError(f"cannot serve {directory}: not a local directory", "build the report on local disk")
    handler = functools.partial(_QuietHandler, directory=directory)
    try:
        return http.server.ThreadingHTTPServer((host, port), handler)
    except OSError as e:
        raise InputError(f"cannot listen on {host}:{port}: {e.strerror or e}", "pick another --port") from None


def serve(directory: str, host: str, port: int, progress=print) -> None:
    server = make_server(directory, host, port)
    bound_host, bound_port = server.server_address[:2]
    progress(f"serving {directory} at http://{bound_host}:{bound_port}/ (Ctrl-C to stop)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
