"""build_card: read the run back, draw each plot, write the README; one function per section."""

from __future__ import annotations

from witcurate.config import Config
from witcurate.pipeline import fs
from witcurate.pipeline.card.manifests import (RECORD_STAGES, CardData, collect, query_counts,
                                               query_names, score_values)
from witcurate.pipeline.card.plots import (CARD_DIR, plot_query_counts, plot_rejects, plot_scores,
                                           plot_sizes)
from witcurate.pipeline.card.hosts import top_hosts
from witcurate.pipeline.card.render import README, Section, fmt, render_readme


def query_sources(out_root: str, data: CardData, config: Config, card_dir: str) -> Section:
    """Each query source's floor, budget and what it put in the list (the queries manifest's
    `sources`), and the PMI of the last bigram admitted."""
    section = Section("Query list")
    sources = (data.manifests.get("queries") or {}).get("sources")
    if not sources:
        section.note = "Skipped: no queries stage in this run."
        return section
    section.extra = ["| source | floor | eligible | budget | admitted | in the list | last admitted |",
                     "|---|---|---:|---:|---:|---:|---|"]
    for name, s in sources.items():
        floors = ", ".join(f"{k} {v:g}" for k, v in (s.get("floors") or {}).items() if v is not None) or "–"
        last = s.get("last_admitted") or {}
        figures = ", ".join(f"{k} {last[k]:,.2f}" if isinstance(last[k], float) else f"{k} {last[k]:,}"
                            for k in ("count", "pmi", "views") if k in last)
        last_text = f"{last['query']} ({figures})" if last else "–"
        budget = s.get("budget")
        section.extra.append(f"| {name} | {floors} | {fmt(s.get('before_budget'))} | "
                             f"{fmt(budget) if budget is not None else 'none'} | {fmt(s.get('after_budget'))} | "
                             f"{fmt(s.get('in_list'))} | {last_text} |")
    bigram = (sources.get("bigram") or {}).get("last_admitted")
    total = data.manifests["queries"]["counts"]["kept"]
    section.note = (f"{total:,} queries in the list (an entry may come from several sources)."
                    + (f" The last bigram admitted has PMI {bigram['pmi']:.2f}." if bigram else ""))
    section.extra.append("")
    return section


def pairs_per_query(out_root: str, data: CardData, config: Config, card_dir: str) -> Section:
    section = Section("Pairs per query")
    counted = query_counts(out_root, data)
    if counted is None or not (counted[0] or counted[1]):
        section.note = "Skipped: no cap or score stage and no samples in this run."
        return section
    before, after, how = counted
    cap = config.cap.per_query
    section.plot = "pairs_per_query.png"
    plot_query_counts(before, after, how, cap, fs.join(card_dir, section.plot))
    names = query_names(out_root, data)
    at_cap = sum(1 for v in after.values() if v >= cap)
    section.note = (f"Before: {how}. {len(after):,} queries have samples; "
                    f"{at_cap:,} reach the cap of {cap:,}.")
    top = sorted(set(before) | set(after), key=lambda q: (-before.get(q, 0), -after.get(q, 0), q))[:10]
    section.extra = ["| query | before | after |", "|---|---:|---:|"] + [
        f"| {names.get(q, f'#{q}')} | {fmt(before.get(q, 0)) if before else '–'} | {fmt(after.get(q, 0))} |"
        for q in top] + [""]
    return section


def clip_score(out_root: str, data: CardData, config: Config, card_dir: str) -> Section:
    section = Section("CLIP score")
    kept, rejected, threshold = score_values(out_root, data)
    shipped = ([v for v in data.sidecars.column("clip_score").to_pylist() if v is not None]
               if data.sidecars is not None else [])
    if not (kept or rejected or shipped):
        section.note = "Skipped: no CLIP scores found (no score stage and no samples)."
        return section
    section.plot = "clip_score.png"
    plot_scores(kept, rejected, shipped, threshold, fs.join(card_dir, section.plot))
    parts = []
    if data.manifests.get("score") is None:
        parts.append("The score stage is not in this run: only the shipped samples' scores are shown.")
    elif not rejected:
        parts.append("The score stage's rejects carry no score, so only kept pairs are shown.")
    if shipped:
        s = sorted(shipped)
        parts.append(f"Shipped samples: median score {s[len(s) // 2]:.3f}, min {s[0]:.3f}, max {s[-1]:.3f}.")
    if threshold is not None:
        parts.append(f"Threshold: {threshold:g}.")
    section.note = " ".join(parts)
    return section


def rejects(out_root: str, data: CardData, config: Config, card_dir: str) -> Section:
    section = Section("Rejects by stage and reason")
    rows = [(name, data.manifests[name]) for name in RECORD_STAGES if data.manifests.get(name)]
    if not rows:
        section.note = "Skipped: no stage manifests found."
        return section
    section.plot = "rejects.png"
    plot_rejects(rows, fs.join(card_dir, section.plot))
    missing = [name for name in RECORD_STAGES if not data.manifests.get(name)]
    if missing:
        section.note = f"Not in this run (no _SUCCESS.json): {', '.join(missing)}."
    return section


def image_sizes(out_root: str, data: CardData, config: Config, card_dir: str) -> Section:
    section = Section("Image sizes")
    if data.sidecars is None or not data.sidecars.num_rows:
        section.note = "Skipped: no samples."
        return section
    section.plot = "image_sizes.png"
    plot_sizes(data.sidecars, fs.join(card_dir, section.plot))
    w = sorted(v for v in data.sidecars.column("width").to_pylist() if v is not None) or [0]
    h = sorted(v for v in data.sidecars.column("height").to_pylist() if v is not None) or [0]
    section.note = (f"Stored images: median {w[len(w) // 2]}×{h[len(h) // 2]} px; "
                    f"widths {w[0]}–{w[-1]}, heights {h[0]}–{h[-1]}.")
    return section


# The plotted sections, keyed as build_card reports its plots, in the README's order.
SECTIONS = {"query_sources": query_sources, "pairs_per_query": pairs_per_query, "clip_score": clip_score, "rejects": rejects,
            "top_hosts": top_hosts, "image_sizes": image_sizes}


def build_card(out_root: str, shards_dir: str, config: Config) -> dict[str, str]:
    """Write shards_dir/README.md and shards_dir/card/*.png; returns {plot key: file name}."""
    data = collect(out_root, shards_dir)
    card_dir = fs.join(shards_dir, CARD_DIR)
    fs.makedirs(card_dir)
    sections = {key: make(out_root, data, config, card_dir) for key, make in SECTIONS.items()}
    text = render_readme(out_root, config, data, list(sections.values()))
    with fs.open_file(fs.join(shards_dir, README), "w", encoding="utf-8") as f:
        f.write(text)
    return {key: s.plot for key, s in sections.items() if s.plot}
