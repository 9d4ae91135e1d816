"""The download workers' fork server starts under a TMPDIR too long for its socket path."""

from __future__ import annotations

import os
import subprocess
import sys

SCRIPT = '''
import multiprocessing, sys, tempfile
from witcurate.pipeline import mp_tempdir

def square(x):
    return x * x

if __name__ == "__main__":
    assert mp_tempdir.too_long(tempfile.gettempdir())
    if sys.argv[1] == "ours":
        mp_tempdir.ensure_short()
    with multiprocessing.get_context("forkserver").Pool(1) as pool:
        print(pool.map(square, [3]))
'''


def test_the_fork_server_starts_under_a_long_tmpdir(tmp_path):
    long_tmp = tmp_path / ("t" * 90)
    long_tmp.mkdir()
    script = tmp_path / "start.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "TMPDIR": str(long_tmp)}
    runs = {side: subprocess.run([sys.executable, str(script), side], env=env, cwd=tmp_path,
                                 capture_output=True, text=True, timeout=120) for side in ("plain", "ours")}
    assert "AF_UNIX path too long" in runs["plain"].stderr      # what the workers hit without it
    assert runs["ours"].returncode == 0, runs["ours"].stderr[-2000:]
    assert runs["ours"].stdout.split() == ["[9]"]
    assert list(long_tmp.iterdir()) == []                       # nothing made under the long one
