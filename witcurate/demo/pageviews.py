"""Hourly pageview files in Wikimedia's format (dumps.wikimedia.org/other/pageviews/).

Each file `pageviews-YYYYMMDD-HH0000.gz` holds lines `domain_code page_title count_views
total_response_size` (the last field is always 0 in current dumps). Domain codes: `en` is
English Wikipedia on desktop, `en.m` on mobile; `en.b` (Wikibooks), `en.d` (Wiktionary), `de`,
`fr`, `commons.m` are other projects a consumer counting English Wikipedia must skip, as it must
skip titles outside the main namespace (Talk:, Special:, User:, File:, Category:, ...).

Views of a title are spread over the hours and over `en`/`en.m`, so only their sum tells
whether it reaches the demo threshold (70). Two titles sit on the edge on purpose:
AT_THRESHOLD sums to exactly 70, BELOW_THRESHOLD to 69 (English Wikipedia, main namespace).
"""

from __future__ import annotations

import gzip
import os
import random
from collections import defaultdict

HOURS = ("20240101-000000", "20240101-010000", "20240101-020000", "20240101-030000")
THRESHOLD = 70
AT_THRESHOLD = "Brown cross"
BELOW_THRESHOLD = "Pink ring"

_ENGLISH = ("en", "en.m")


def _split(total: int, parts: int, rng: random.Random) -> list[int]:
    """Split `total` into `parts` non-negative integers."""
    cuts = sorted(rng.randint(0, total) for _ in range(parts - 1))
    return [b - a for a, b in zip([0, *cuts], [*cuts, total])]


def plan_views(titles: list[str], demo_titles: set[str], seed: int) -> dict[str, int]:
    """English-Wikipedia views (en + en.m, all hours) for each main-namespace title.

    Demo titles (colours, shapes, scenes, colour+shape symbols) are mostly popular; filler
    titles mostly are not, so the title source of the queries stage contributes a real,
    partial set."""
    rng = random.Random(f"views:{seed}")
    views: dict[str, int] = {}
    for title in titles:
        if title in demo_titles:
            views[title] = rng.choice((rng.randint(70, 900), rng.randint(70, 400), rng.randint(5, 69)))
        else:
            views[title] = rng.randint(70, 300) if rng.random() < 0.08 else rng.randint(0, 40)
    views[AT_THRESHOLD] = THRESHOLD
    views[BELOW_THRESHOLD] = THRESHOLD - 1
    views["Main Page"] = 50_000
    return views


def write_pageviews(out_dir: str, views: dict[str, int], seed: int) -> list[str]:
    """Write the hourly files; returns their paths."""
    rng = random.Random(f"pageview-files:{seed}")
    lines: dict[str, list[tuple[str, str, int]]] = defaultdict(list)
    for title, total in views.items():
        page = title.replace(" ", "_")
        for (hour, domain), n in zip([(h, d) for h in HOURS for d in _ENGLISH],
                                     _split(total, len(HOURS) * len(_ENGLISH), rng)):
            if n:
                lines[hour].append((domain, page, n))
    # Noise a consumer must ignore: other projects and other namespaces, with large counts.
    some = rng.sample(sorted(views), min(40, len(views)))
    for hour in HOURS:
        for page in some[:20]:
            p = page.replace(" ", "_")
            lines[hour].append((rng.choice(("de", "fr", "en.b", "en.d", "commons.m")), p,
                                rng.randint(50, 500)))
        for page in some[20:]:
            p = page.replace(" ", "_")
            lines[hour].append((rng.choice(_ENGLISH), f"Talk:{p}", rng.randint(30, 200)))
        lines[hour] += [
            ("en", "Special:Search", rng.randint(3000, 9000)),
            ("en.m", "Special:RecentChanges", rng.randint(100, 900)),
            ("en", "User:Quillmaker", rng.randint(80, 200)),
            ("en", "File:Red_circle.svg", rng.randint(80, 200)),
            ("en", "Category:Shapes", rng.randint(80, 200)),
            ("en", "Wikipedia:About", rng.randint(80, 200)),
            ("en.b", "Snow_crystal_growth", rng.randint(80, 200)),
            ("de", "Roter_Kreis", rng.randint(80, 200)),
            ("fr", "Cercle_rouge", rng.randint(80, 200)),
            ("en.d", "circle", rng.randint(80, 200)),
            ("en", "Caf\u00e9_au_lait_spot", rng.randint(1, 5)),
        ]
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for hour in HOURS:
        path = os.path.join(out_dir, f"pageviews-{hour}.gz")
        body = "".join(f"{d} {p} {n} 0\n" for d, p, n in sorted(lines[hour]))
        # mtime=0 keeps the gzip bytes identical across runs.
        with open(path + ".part", "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0,
                                                              filename="") as f:
            f.write(body.encode("utf-8"))
        os.replace(path + ".part", path)
        paths.append(path)
    return paths
