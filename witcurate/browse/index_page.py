"""The report's first page: the funnel (each stage's in, kept, rejected by reason) as plain HTML.

It needs no script and no data file, so it is interactive as soon as it is parsed, whatever the
size of the run. Every value that comes from the run goes through `html.escape`.
"""

from __future__ import annotations

import html
from typing import Any

from witcurate.browse.run_state import DONE, StageState
from witcurate.browse.views import view_id


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def num(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else esc(value)


def count(value: Any) -> int:
    """A count from a manifest; anything but an integer (a damaged manifest) counts as 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def page(title: str, body: str, scripts: tuple[str, ...] = ()) -> str:
    tags = "".join(f'<script src="{esc(s)}"></script>' for s in scripts)
    return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{esc(title)}</title><link rel=\"icon\" href=\"data:,\">"   # no favicon request
            "<link rel=\"stylesheet\" href=\"assets/report.css\"></head>\n"
            f"<body>{body}{tags}</body></html>\n")


def header(run_name: str, links: list[tuple[str, str]]) -> str:
    nav = "".join(f'<li><a href="{esc(href)}">{esc(text)}</a></li>' for href, text in links)
    return (f'<a class="skip" href="#main">Skip to the report</a><header><p class="title">'
            f'<a href="index.html">Run report</a> <span class="run">{esc(run_name)}</span></p>'
            f'<nav aria-label="Report sections"><ul>{nav}</ul></nav></header>')


def _reasons(state: StageState) -> str:
    reasons = state.counts.get("reasons")
    if not reasons or not isinstance(reasons, dict):
        return ""
    items = "".join(
        f'<li><a class="reason" href="view.html#{esc(view_id("rejects", state.name, reason))}">'
        f'{esc(reason)} <span class="n">{num(n)}</span></a></li>'
        for reason, n in sorted(reasons.items(), key=lambda kv: (-count(kv[1]), str(kv[0]))))
    return f'<ul class="reasons">{items}</ul>'


def _bar(kept: int, n_in: int) -> str:
    if not n_in:
        return ""
    share = max(0.0, min(1.0, kept / n_in))
    return (f'<span class="bar" role="img" aria-label="{share:.0%} kept">'
            f'<span class="kept" style="width:{share * 100:.1f}%"></span></span>')


def _row(state: StageState) -> str:
    name = f'<th scope="row">{esc(state.name)}</th>'
    if state.status != DONE:
        return (f'<tr class="not-done">{name}<td colspan="4"><span class="status {esc(state.status.replace(" ", "-"))}">'
                f'{esc(state.status)}</span> {esc(state.note)}</td></tr>')
    if state.is_model:
        outputs = state.manifest.get("outputs")
        made = (", ".join(sorted(outputs)) if isinstance(outputs, dict) and outputs else
                state.manifest.get("model") or state.manifest.get("checkpoint") or "a model")
        return f'<tr class="model">{name}<td colspan="4">produced {esc(made)} (a model, not a filter)</td></tr>'
    c = state.counts
    n_in, kept = count(c.get("in")), count(c.get("kept"))
    return (f'<tr>{name}<td class="num" data-label="in">{num(n_in)}</td>'
            f'<td class="num" data-label="kept">{num(kept)} {_bar(kept, n_in)}</td>'
            f'<td class="num" data-label="rejected">{num(count(c.get("rejected")))}</td>'
            f"<td>{_reasons(state)}</td></tr>")


def funnel_table(states: list[StageState]) -> str:
    rows = "".join(_row(s) for s in states)
    return ('<div class="table-wrap"><table class="funnel"><caption>Every stage: records in, kept, and '
            'rejected by reason (select a reason to see its samples)</caption><thead><tr><th scope="col">stage</th>'
            '<th scope="col">in</th><th scope="col">kept</th><th scope="col">rejected</th>'
            f'<th scope="col">rejects by reason</th></tr></thead><tbody>{rows}</tbody></table></div>')


def problems_banner(states: list[StageState], notes: list[str]) -> str:
    lines = [f"<li><strong>{esc(s.name)}</strong>: {esc(s.status)}. {esc(s.note)}</li>"
             for s in states if s.status not in (DONE, "not run")]
    lines += [f"<li>{esc(n)}</li>" for n in notes]
    if not lines:
        return ""
    return (f'<section class="problems" aria-labelledby="problems"><h2 id="problems">Not all of this run '
            f'could be shown</h2><ul>{"".join(lines)}</ul><p>The rest of the run is below.</p></section>')


def links_section(title: str, links: list[tuple[str, str, str]]) -> str:
    if not links:
        return ""
    items = "".join(f'<li><a href="{esc(href)}">{esc(text)}</a> <span class="hint">{esc(hint)}</span></li>'
                    for href, text, hint in links)
    return f'<section><h2>{esc(title)}</h2><ul class="links">{items}</ul></section>'


def index_html(run_name: str, states: list[StageState], nav: list[tuple[str, str]],
               sections: list[str], notes: list[str]) -> str:
    done = [s for s in states if s.done and not s.is_model and s.name != "queries"]   # the candidates' stages
    first_in = count(done[0].counts.get("in")) if done else 0
    last_kept = count(done[-1].counts.get("kept")) if done else 0
    summary = (f'<p class="summary">{num(first_in)} records entered {esc(done[0].name)}; '
               f'{num(last_kept)} left {esc(done[-1].name)}.</p>' if done else
               '<p class="summary">No stage of this run has finished.</p>')
    body = (header(run_name, nav) + '<main id="main" tabindex="-1"><h1>From candidates to samples</h1>'
            + summary + problems_banner(states, notes) + funnel_table(states) + "".join(sections) + "</main>")
    return page(f"Run report: {run_name}", body)
