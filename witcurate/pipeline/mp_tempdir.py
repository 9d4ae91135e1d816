"""A multiprocessing temporary folder short enough for the fork server's socket.

The fork server listens on an AF_UNIX socket in multiprocessing's temporary folder,
TMPDIR/pymp-XXXXXXXX/listener-XXXXXXXX, and Linux caps such a path at 107 bytes. Under a long
TMPDIR (a scheduler's per-job folder, a test's tmp_path) the download workers then fail to start
with "AF_UNIX path too long". Python 3.13 falls back
to a standard short folder in that case (multiprocessing.util._get_base_temp_dir); this does the
same on 3.11, before the fork server starts, using only tempfile's own folder override.
"""

from __future__ import annotations

import os
import tempfile

SUN_PATH_MAX = 107                                     # sizeof(sockaddr_un.sun_path) - 1 on Linux
SOCKET_SUFFIX = len("/pymp-XXXXXXXX/listener-XXXXXXXX")
SHORT_CANDIDATES = ("/tmp", "/var/tmp", "/dev/shm")


def too_long(base: str) -> bool:
    return len(base) + SOCKET_SUFFIX > SUN_PATH_MAX


def ensure_short() -> str:
    """multiprocessing's temporary folder for this process, created under a short standard
    folder when TMPDIR is too long for a socket path; returns it."""
    from multiprocessing import util
    short = None
    if too_long(tempfile.gettempdir()):
        short = next((d for d in SHORT_CANDIDATES if os.access(d, os.W_OK | os.X_OK)), None)
    if short is None:
        return util.get_temp_dir()
    saved, tempfile.tempdir = tempfile.tempdir, short
    try:
        return util.get_temp_dir()       # made under `short` (unless made already), removed at exit
    finally:
        tempfile.tempdir = saved
