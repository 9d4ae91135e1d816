"""`witcurate browse OUT`: build OUT/browse/, a static report of a run that opens from disk.

Gathers the run's state and views (collect), picks and writes the thumbnails within the
budget, writes the pages and data files into OUT/.tmp-browse and renames it to OUT/browse, so a
report is either the previous one or the new one whole.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

from witcurate.browse import index_page, site, thumbs
from witcurate.browse.collect import collect
from witcurate.errors import InputError
from witcurate.pipeline import fs

DIRNAME = "browse"


@dataclass(frozen=True)
class Budget:
    """How much of a run the report holds: its size is bounded by these, not by the run."""
    per_reason: int = 50           # samples per stage x reason
    per_side: int = 60             # kept and rejected samples on each side of the CLIP threshold
    per_query: int = 8             # samples listed per query
    thumbs_per_query: int = 2      # of which with a thumbnail
    max_queries: int = 50_000      # queries listed (the most pairs first)
    max_query_samples: int = 20_000  # samples over all listed queries (fewer per query if needed)
    per_kind: int = 50             # demo: samples per injected kind
    max_thumbnails: int = 1_500    # thumbnails in all


def _thumbnail_groups(views: list[dict[str, Any]], budget: Budget) -> list[tuple[list[dict[str, Any]], int]]:
    """Samples in the order they get thumbnails: rejects, the threshold's sides, the demo's
    kinds, then each query's first few (queries with the most pairs first)."""
    groups = []
    for view in views:
        if view["type"] == "samples":
            groups.append((view["samples"], 2 * budget.per_reason))       # a duplicate and its survivor
        elif view["type"] == "score":
            groups += [(view["kept"], budget.per_side), (view["rejected"], budget.per_side)]
    for view in views:
        if view["type"] == "queries":
            groups += [(q["samples"], budget.thumbs_per_query) for q in view["queries"]]
    return groups


def _nav(views: list[dict[str, Any]]) -> list[tuple[str, str]]:
    nav = [("index.html", "Funnel")]
    ids = {v["id"] for v in views}
    if "score" in ids:
        nav.append(("view.html#score", "CLIP threshold"))
    if "queries" in ids:
        nav.append(("view.html#queries", "Queries"))
    return nav


def _write(dest: str, run_name: str, gathered: dict[str, Any]) -> int:
    views = gathered["views"]
    nav = _nav(views)
    site.write_assets(dest)
    size = site.write_views(dest, views)
    site.write_text(fs.join(dest, "view.html"), site.view_html(run_name, nav))
    html = index_page.index_html(run_name, gathered["states"], nav, gathered["sections"], gathered["notes"])
    site.write_text(fs.join(dest, "index.html"), html)
    return size + len(html)


def build_report(out_root: str, truth: str | None = None, budget: Budget = Budget(),
                 progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Build OUT/browse/ and return what was written (path, views, thumbnails, seconds)."""
    start = time.perf_counter()
    out_root = fs.normalize(out_root).rstrip("/") or "/"
    if not fs.isdir(out_root):
        raise InputError(f"run directory not found: {out_root}", "pass the --out of a run")
    gathered = collect(out_root, truth, budget)
    groups = _thumbnail_groups(gathered["views"], budget)
    chosen = thumbs.choose(groups, budget.max_thumbnails)
    tmp, final = fs.join(out_root, f".tmp-{DIRNAME}"), fs.join(out_root, DIRNAME)
    fs.rm(tmp)
    fs.makedirs(tmp)
    problems = thumbs.write_thumbnails(fs.join(out_root, "download"), chosen, tmp)
    thumbs.apply((samples for samples, _ in groups), chosen, problems)
    run_name = out_root.rstrip("/").rsplit("/", 1)[-1] or out_root
    _write(tmp, run_name, gathered)
    fs.rm(final)
    fs.move(tmp, final)
    seconds = time.perf_counter() - start
    progress(f"report: {fs.join(final, 'index.html')} ({len(gathered['views'])} views, "
             f"{len(chosen) - len(problems)} thumbnails, {seconds:.1f}s)")
    return {"path": final, "views": len(gathered["views"]), "thumbnails": len(chosen) - len(problems),
            "image_problems": len(problems), "seconds": seconds, "demo": gathered["demo"]}

