"""The demo image host's request log, and what it says about the crawler's manners.

Every request is one entry: the host (the address it came to), the path, the User-Agent, start
and end (Unix seconds) and the status answered (0: the connection was reset). `end` is taken
when the response is handed over, before its headers are flushed, so each entry's interval lies
inside the client's own connection (the `slow` fault stalls after its headers); only the slow
robots.txt, alone on its host, stalls before them and ends after its client gave up. Entries are kept in
memory and, given a path, appended to a JSON-lines file (the demo run keeps one beside its
outputs; the truth report reads it).
"""

from __future__ import annotations

import collections
import json
import threading
from typing import Any, Iterable

Entry = dict[str, Any]


class RequestLog:
    def __init__(self, path: str | None = None):
        self._lock = threading.Lock()
        self._entries: list[Entry] = []
        self._file = open(path, "a", encoding="utf-8") if path else None  # noqa: SIM115 - closed in close()

    def record(self, entry: Entry) -> None:
        with self._lock:
            self._entries.append(entry)
            if self._file is not None:
                self._file.write(json.dumps(entry, sort_keys=True) + "\n")
                self._file.flush()

    def entries(self) -> list[Entry]:
        with self._lock:
            return list(self._entries)

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


def read_log(path: str) -> list[Entry]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def peak_concurrency(entries: Iterable[Entry]) -> dict[str, int]:
    """host -> the most requests it was serving at once (an end before an equal start)."""
    events: dict[str, list[tuple[float, int]]] = collections.defaultdict(list)
    for e in entries:
        events[e["host"]] += [(e["start"], 1), (e["end"], -1)]
    peaks = {}
    for host, points in events.items():
        now = peak = 0
        for _, step in sorted(points, key=lambda p: (p[0], p[1])):
            now += step
            peak = max(peak, now)
        peaks[host] = peak
    return peaks


def politeness(entries: list[Entry], hosts: list[dict]) -> dict[str, Any]:
    """Per host (by role name): requests, robots.txt requests, image requests its robots.txt
    refuses our agent (its role says which: /private/ paths, or every path for the hosts that
    disallow witcurate or cannot be read), 429/503 answers, the peak concurrency; and the
    User-Agents seen."""
    from witcurate.demo.hosts import PRIVATE
    by_address = {h["address"]: h for h in hosts}
    peaks = peak_concurrency(entries)
    report: dict[str, dict[str, int]] = {}
    agents: collections.Counter[str] = collections.Counter()
    for e in entries:
        role = by_address.get(e["host"], {"name": e["host"]})
        row = report.setdefault(role["name"], {"requests": 0, "robots_txt": 0, "refused_paths": 0,
                                               "throttled": 0, "peak": peaks.get(e["host"], 0)})
        row["requests"] += 1
        agents[e.get("ua") or ""] += 1
        if e["path"] == "/robots.txt":
            row["robots_txt"] += 1
            continue
        closed = role.get("name") in ("no-witcurate", "robots-500", "robots-slow")
        if closed or (e["path"].startswith(PRIVATE) and f"Disallow: {PRIVATE}" in (role.get("robots") or "")):
            row["refused_paths"] += 1
        if e.get("status") in (429, 503):
            row["throttled"] += 1
    return {"hosts": report, "user_agents": dict(agents.most_common())}
