"""metrics.jsonl: one JSON line every few steps, written by rank 0, continuous across resumes."""

from __future__ import annotations

import contextlib
import io
import json
from typing import Any

from witcurate.pipeline import fs


class MetricsLog:
    """metrics.jsonl on rank 0. On resume, lines after the resumed step are dropped first, so the
    file reads as one continuous run."""

    def __init__(self, path: str, enabled: bool, resume_step: int | None):
        self.path = path
        self.enabled = enabled
        if not enabled:
            return
        keep: list[str] = []
        if resume_step is not None and fs.exists(path):
            with fs.open_file(path, "r", encoding="utf-8") as f:
                for line in f:
                    try:
                        if json.loads(line).get("step", 0) <= resume_step:
                            keep.append(line.rstrip("\n"))
                    except json.JSONDecodeError:
                        continue   # a line torn by a kill
        with fs.open_file(path, "w", encoding="utf-8") as f:
            f.write("".join(line + "\n" for line in keep))

    def write(self, record: dict[str, Any]) -> None:
        if self.enabled:
            with open(self.path, "a", encoding="utf-8") if "://" not in self.path else _append_remote(self.path) as f:
                f.write(json.dumps(record, sort_keys=True) + "\n")


@contextlib.contextmanager
def _append_remote(path: str):
    """Object stores cannot append: read, add, rewrite (metrics files are small)."""
    old = ""
    if fs.exists(path):
        with fs.open_file(path, "r", encoding="utf-8") as f:
            old = f.read()
    buf = io.StringIO()
    yield buf
    with fs.open_file(path, "w", encoding="utf-8") as f:
        f.write(old + buf.getvalue())
