"""Gather everything the report shows from a run directory: stage states and the data views.

A part of the run that does not read becomes a note on the first page, never a failed report:
the report says what it could not show and shows the rest.
"""

from __future__ import annotations

from typing import Any, Callable

from witcurate.browse import demo_truth
from witcurate.browse.index_page import links_section, num
from witcurate.browse.queries import queries_view
from witcurate.browse.run_state import StageState, run_config, run_states
from witcurate.browse.views import reject_views, score_view
from witcurate.errors import InputError
from witcurate.pipeline import fs


def _guarded(notes: list[str], what: str, build: Callable[[], Any]) -> Any:
    try:
        return build()
    except (InputError, OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        notes.append(f"{what} could not be read ({type(e).__name__}: {str(e)[:160]})")
        return None


def _score_link(view: dict[str, Any]) -> tuple[str, str, str]:
    threshold = view.get("threshold")
    where = f" at {threshold:.4g}" if isinstance(threshold, (int, float)) else ""
    return ("view.html#score", "Both sides of the CLIP-score threshold",
            f"the kept pairs with the lowest scores beside the rejected with the highest{where}")


def _queries_link(view: dict[str, Any]) -> tuple[str, str, str]:
    cap = view.get("per_query_cap")
    at_cap = f", {num(view['at_cap'])} at the cap of {num(cap)}" if cap else ""
    return ("view.html#queries", "Queries",
            f"{num(view['total_queries'])} queries with {num(view['total_pairs'])} pairs{at_cap}; search "
            "queries and captions")


def _demo_views(out_root: str, config: dict[str, Any] | None, truth: str | None, views: list[dict[str, Any]],
                budget, notes: list[str]) -> list[dict[str, Any]]:
    """Demo mode: tag every sample with its injected kind, and a view per kind that was kept."""
    path = demo_truth.truth_path(config, truth)
    if not path or not fs.exists(path):
        notes.append(f"This is a demo run, but the demo world's ground truth was not found"
                     f"{' at ' + path if path else ''}: pass --truth PATH to tag samples with their kind.")
        return []
    kinds = _guarded(notes, f"the ground truth {path}", lambda: demo_truth.load_kinds(path)) or {}
    kind_views = []
    if kinds and any(v["type"] == "queries" for v in views):
        kind_views = _guarded(notes, "cap's kept rows",
                              lambda: demo_truth.shipped_by_kind(out_root, kinds, budget.per_kind)) or []
    demo_truth.tag_samples(views + kind_views, kinds)
    return kind_views


def collect(out_root: str, truth: str | None, budget) -> dict[str, Any]:
    """{"states", "views", "sections" (HTML for the first page), "notes", "demo"}."""
    config = run_config(out_root)
    configured = ((config or {}).get("run") or {}).get("stages")
    states = run_states(out_root, configured if isinstance(configured, list) else None)
    if not any(s.done for s in states):
        raise InputError(f"no finished stage under {out_root}", "run `witcurate run` first, or pass a run directory")
    by_name: dict[str, StageState] = {s.name: s for s in states}
    views: list[dict[str, Any]] = []
    notes: list[str] = []
    for state in states:
        if state.done and not state.is_model:
            stage_views, problem = _guarded(notes, f"{state.name}'s rejects",
                                            lambda: reject_views(out_root, state, budget.per_reason)) or ([], "")
            views += stage_views
            if problem:
                notes.append(f"{state.name}: {problem}")
    links = []
    if by_name["score"].done:
        view = _guarded(notes, "score's rows", lambda: score_view(out_root, by_name["score"], budget.per_side))
        if view:
            views.append(view)
            links.append(_score_link(view))
    if by_name["cap"].done:
        view = _guarded(notes, "cap's kept rows",
                        lambda: queries_view(out_root, by_name["cap"], budget.per_query, budget.max_queries,
                                             budget.max_query_samples))
        if view:
            views.append(view)
            links.append(_queries_link(view))
    sections = [links_section("Look closer", links)]
    demo = bool(truth) or demo_truth.is_demo_run(out_root, config)
    if demo:
        kind_views = _demo_views(out_root, config, truth, views, budget, notes)
        views += kind_views
        sections.append(links_section(
            "Kept to the end, by the kind of noise the demo world injected (its ground truth)",
            [(f"view.html#{v['id']}", v["kind"], f"{num(v['total'])} kept pairs") for v in kind_views]))
    return {"states": states, "views": views, "sections": sections, "notes": notes, "demo": demo}
