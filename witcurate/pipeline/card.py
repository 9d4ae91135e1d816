"""The dataset card: README.md and PNG plots shipped beside the shards.

Everything on the card is read back from what the run wrote: each stage's `_SUCCESS.json`
(counts, reject reasons, wall time, throughput), the score and cap stages' tables (scores,
per-query counts before the cap) and the shards' own sidecars and manifest. A stage directory
that is missing (a standalone `witcurate shards` run, a run that skipped a stage) leaves its
row or plot out, and the card says so instead of guessing.
"""

from __future__ import annotations

import collections
import io
import json
import posixpath
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

import witcurate
from witcurate.config import Config
from witcurate.pipeline import fs
from witcurate.pipeline.runner import MANIFEST
from witcurate.pipeline.tables import parquet_files, read_table, reject_counts

CARD_DIR = "card"
README = "README.md"
# Stages whose counts are records flowing toward the shards (the waterfall), in run order.
RECORD_STAGES = ("ingest", "match", "balance", "download", "dedupe", "score", "cap", "shards")
TABLE_STAGES = ("queries", "ingest", "match", "balance", "download", "dedupe", "scorer", "score",
                "cap", "shards")
# At most this many reject records are parsed for the score histogram (it is a histogram).
MAX_REJECT_RECORDS = 500_000


@dataclass
class CardData:
    manifests: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    sidecars: pa.Table | None = None
    shards_manifest: dict[str, Any] | None = None


def _stage_manifest(out_root: str, name: str) -> dict[str, Any] | None:
    path = fs.join(out_root, name, MANIFEST)
    try:
        return fs.read_json(path) if fs.exists(path) else None
    except (OSError, ValueError):
        return None


def _shards_manifest_as_stage(shards_dir: str, manifest: dict[str, Any] | None) -> dict[str, Any] | None:
    """The shards row while the stage is still running (its _SUCCESS.json comes after the card)."""
    landed_path = fs.join(shards_dir, MANIFEST)      # present when the card is rebuilt later
    if fs.exists(landed_path):
        return fs.read_json(landed_path)
    if manifest is None:
        return None
    reasons = reject_counts(shards_dir)
    kept = manifest["totals"]["samples"]
    rejected = sum(reasons.values())
    return {"stage": "shards", "counts": {"in": kept + rejected, "kept": kept, "rejected": rejected,
                                          "reasons": reasons},
            "wall_seconds": None, "throughput": {"units": "samples", "per_second": None}}


def _read_sidecars(shards_dir: str) -> pa.Table | None:
    tables = []
    for path in parquet_files(shards_dir, "[0-9]*.parquet"):
        with fs.open_file(path) as f:
            tables.append(pq.read_table(f))
    return pa.concat_tables(tables, promote_options="default") if tables else None


def collect(out_root: str, shards_dir: str) -> CardData:
    data = CardData()
    manifest_path = fs.join(shards_dir, "manifest.json")
    data.shards_manifest = fs.read_json(manifest_path) if fs.exists(manifest_path) else None
    for name in TABLE_STAGES:
        if name == "shards":
            data.manifests[name] = _shards_manifest_as_stage(shards_dir, data.shards_manifest)
        else:
            data.manifests[name] = _stage_manifest(out_root, name)
    data.sidecars = _read_sidecars(shards_dir)
    return data


# --- numbers behind the plots -------------------------------------------------------------------

def _reject_records(stage_dir: str, limit: int = MAX_REJECT_RECORDS):
    seen = 0
    for path in parquet_files(fs.join(stage_dir, "rejects")):
        with fs.open_file(path) as f:
            col = pq.read_table(f, columns=["record"]).column("record")
        for text in col.to_pylist():
            if seen >= limit:
                return
            seen += 1
            try:
                yield json.loads(text or "{}")
            except ValueError:
                continue


def query_counts(out_root: str, data: CardData) -> tuple[dict[int, int], dict[int, int], str] | None:
    """(before, after, how `before` was counted) per query id, or None if nothing to count.

    Before the cap a pair counts toward its assigned query when the cap stage recorded it (its
    kept rows and its rejects' records carry `query_id`); otherwise toward every query it matches
    among the score stage's kept rows (an upper bound, said so on the plot).
    """
    after: collections.Counter[int] = collections.Counter()
    if data.sidecars is not None:
        after.update(q for q in data.sidecars.column("query_id").to_pylist() if q is not None)
    cap_dir = fs.join(out_root, "cap")
    if data.manifests.get("cap") is not None:
        kept = read_table(cap_dir, columns=["query_id"])
        before: collections.Counter[int] = collections.Counter()
        if kept is not None:
            before.update(q for q in kept.column("query_id").to_pylist() if q is not None)
        complete = True
        for record in _reject_records(cap_dir, limit=10**12):
            qid = record.get("query_id")
            if qid is None:
                complete = False
                break
            before[int(qid)] += 1
        if complete:
            return dict(before), dict(after), "pairs assigned to the query (its rarest match), entering the cap"
    score_dir = fs.join(out_root, "score")
    if data.manifests.get("score") is not None:
        kept = read_table(score_dir, columns=["query_ids"])
        before = collections.Counter()
        if kept is not None:
            for ids in kept.column("query_ids").to_pylist():
                before.update(ids or [])
        return dict(before), dict(after), "pairs matching the query after scoring (a pair counts for each query it matches)"
    if after:
        return {}, dict(after), "no cap or score stage in this run: after-cap counts only"
    return None


def query_names(out_root: str, data: CardData) -> dict[int, str]:
    names: dict[int, str] = {}
    if data.manifests.get("queries") is not None:
        table = read_table(fs.join(out_root, "queries"), columns=["query_id", "query"])
        if table is not None:
            names.update(zip(table.column("query_id").to_pylist(), table.column("query").to_pylist()))
    if data.sidecars is not None:
        names.update(zip(data.sidecars.column("query_id").to_pylist(), data.sidecars.column("query").to_pylist()))
    return names


def score_values(out_root: str, data: CardData) -> tuple[list[float], list[float], float | None]:
    """(scores the score stage kept, scores it rejected, the threshold it used)."""
    kept: list[float] = []
    rejected: list[float] = []
    threshold = None
    manifest = data.manifests.get("score")
    if manifest is not None:
        table = read_table(fs.join(out_root, "score"), columns=["clip_score"])
        if table is not None:
            kept = [v for v in table.column("clip_score").to_pylist() if v is not None]
        for record in _reject_records(fs.join(out_root, "score")):
            v = record.get("clip_score")
            if isinstance(v, (int, float)):
                rejected.append(float(v))
        # The score stage records the threshold it applied (for a top fraction: the lowest kept
        # score); older or foreign manifests may only have the configured one.
        for value in (manifest.get("threshold_used"), manifest.get("threshold"),
                      (manifest.get("config", {}).get("score") or {}).get("threshold")):
            if isinstance(value, (int, float)):
                threshold = float(value)
                break
    return kept, rejected, threshold


# --- plots --------------------------------------------------------------------------------------

def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _plain_log_ticks(axis) -> None:
    """Counts on a log axis read as 1, 20, 5,000, not 10^0 or 2x10^3.

    Decades are labelled; 2 and 5 within a decade too when the axis spans under three decades,
    and every tick under one decade, so a narrow range still has numbers on it.
    """
    import math

    from matplotlib.ticker import FuncFormatter

    def text(v: float) -> str:
        return f"{v:,.0f}" if v >= 1 else f"{v:g}"

    def minor(v: float, _pos) -> str:
        lo, hi = sorted(axis.get_view_interval())
        if lo <= 0 or v <= 0:
            return ""
        span = math.log10(hi / lo)
        lead = round(v / 10 ** math.floor(math.log10(v) + 1e-9), 6)
        return text(v) if span < 1 or (span < 3 and lead in (2.0, 5.0)) else ""

    axis.set_major_formatter(FuncFormatter(lambda v, _pos: text(v)))
    axis.set_minor_formatter(FuncFormatter(minor))


def _save(fig, path: str) -> None:
    buf = io.BytesIO()
    # No "Software" stamp: the same run gives the same PNG bytes.
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    _pyplot().close(fig)
    with fs.open_file(path, "wb") as f:
        f.write(buf.getvalue())


def plot_query_counts(before: dict[int, int], after: dict[int, int], how: str, cap: int, path: str) -> None:
    plt = _pyplot()
    ids = sorted(set(before) | set(after), key=lambda q: (-before.get(q, 0), -after.get(q, 0), q))
    ranks = list(range(1, len(ids) + 1))
    fig, ax = plt.subplots(figsize=(8, 4.5))
    # A query with no pair left is drawn at 0.8, just under the 1 line of the log axis.
    if before:
        ax.plot(ranks, [max(before.get(q, 0), 0.8) for q in ids], "-", color="#888888",
                label=f"before the cap: {how}")
    ax.plot(ranks, [max(after.get(q, 0), 0.8) for q in ids], "o", markersize=3, color="#1f77b4",
            label="after the cap: samples in the shards")
    ax.axhline(cap, color="#d62728", linestyle="--", linewidth=1, label=f"cap = {cap:,} per query")
    ax.set_yscale("log")
    _plain_log_ticks(ax.yaxis)
    if len(ids) > 50:
        ax.set_xscale("log")
        _plain_log_ticks(ax.xaxis)
    else:
        ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("queries, most frequent first (rank)")
    ax.set_ylabel("pairs per query (log)")
    ax.set_title("Pairs per query before and after the cap")
    ax.legend(fontsize=8, loc="best")
    ax.grid(True, which="major", alpha=0.3)
    _save(fig, path)


def plot_scores(kept: list[float], rejected: list[float], shipped: list[float], threshold: float | None,
                path: str) -> None:
    plt = _pyplot()
    values = kept + rejected + shipped
    lo, hi = min(values), max(values)
    if hi <= lo:
        hi = lo + 1e-3
    bins = [lo + (hi - lo) * i / 40 for i in range(41)]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    if rejected:
        ax.hist(rejected, bins=bins, color="#d62728", alpha=0.55, label=f"rejected by score ({len(rejected):,})")
    if kept:
        ax.hist(kept, bins=bins, color="#2ca02c", alpha=0.55, label=f"kept by score ({len(kept):,})")
    if shipped:
        ax.hist(shipped, bins=bins, histtype="step", color="#1f77b4", linewidth=1.5,
                label=f"in the shards ({len(shipped):,})")
    if threshold is not None:
        ax.axvline(threshold, color="black", linestyle="--", linewidth=1, label=f"threshold {threshold:g}")
    ax.set_xlabel("CLIP score (cosine of image and text embeddings)")
    ax.set_ylabel("pairs")
    ax.set_title("CLIP score")
    ax.legend(fontsize=8)
    _save(fig, path)


def plot_rejects(rows: list[tuple[str, dict[str, Any]]], path: str) -> None:
    """Left: a waterfall from candidates to samples; right: rejects by stage and reason."""
    plt = _pyplot()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(13, 0.55 * max(len(rows), 4) + 2),
                                 gridspec_kw={"width_ratios": [1, 1.1]})
    names = [name for name, _ in rows]
    y = list(range(len(rows)))[::-1]
    for yi, (name, m) in zip(y, rows):
        c = m["counts"]
        ax.barh(yi, c["kept"], color="#2ca02c")
        ax.barh(yi, c["rejected"], left=c["kept"], color="#d62728")
        ax.text(c["in"], yi, f"  {c['kept']:,} kept / {c['in']:,}", va="center", fontsize=8)
    ax.set_yticks(y, names)
    ax.set_xlabel("records (green kept, red rejected)")
    ax.set_title("From candidates to samples")
    right = max([m["counts"]["in"] for _, m in rows] + [1])
    ax.set_xlim(0, right * 1.45)
    reasons = [(f"{name}: {reason}", n) for name, m in rows
               for reason, n in (m["counts"].get("reasons") or {}).items()]
    reasons = sorted(reasons, key=lambda kv: -kv[1])[:30][::-1]
    if reasons:
        bx.barh(range(len(reasons)), [n for _, n in reasons], color="#d62728")
        bx.set_yticks(range(len(reasons)), [label for label, _ in reasons], fontsize=8)
        bx.set_xscale("log")
        _plain_log_ticks(bx.xaxis)
        bx.set_xlim(0.8, max(n for _, n in reasons) * 3)
        for i, (_, n) in enumerate(reasons):
            bx.text(n, i, f" {n:,}", va="center", fontsize=7)
    else:
        bx.text(0.5, 0.5, "no rejects", ha="center", va="center", transform=bx.transAxes)
    bx.set_xlabel("rejected records (log)")
    bx.set_title("Rejects by stage and reason")
    fig.tight_layout()
    _save(fig, path)


def plot_sizes(table: pa.Table, path: str) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 5))
    ow, oh = table.column("original_width").to_pylist(), table.column("original_height").to_pylist()
    w, h = table.column("width").to_pylist(), table.column("height").to_pylist()
    orig = [(a, b) for a, b in zip(ow, oh) if a and b]
    stored = [(a, b) for a, b in zip(w, h) if a and b]
    if orig:
        ax.scatter([a for a, _ in orig], [b for _, b in orig], s=6, alpha=0.35, color="#888888",
                   label=f"original ({len(orig):,})")
    if stored:
        ax.scatter([a for a, _ in stored], [b for _, b in stored], s=6, alpha=0.6, color="#1f77b4",
                   label=f"stored ({len(stored):,})")
    ax.set_xscale("log")
    ax.set_yscale("log")
    _plain_log_ticks(ax.xaxis)
    _plain_log_ticks(ax.yaxis)
    ax.set_xlabel("width (px, log)")
    ax.set_ylabel("height (px, log)")
    ax.set_title("Image sizes")
    ax.legend(fontsize=8)
    _save(fig, path)


# --- the README ---------------------------------------------------------------------------------

def _fmt(n: Any) -> str:
    if n is None:
        return "–"
    if isinstance(n, float):
        return f"{n:,.1f}"
    return f"{n:,}" if isinstance(n, int) else str(n)


def _top_reasons(reasons: dict[str, int], k: int = 4) -> str:
    if not reasons:
        return ""
    items = sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))
    text = ", ".join(f"{r} {n:,}" for r, n in items[:k])
    return text + (f", +{len(items) - k} more" if len(items) > k else "")


def _stage_table(data: CardData) -> list[str]:
    lines = ["| stage | in | kept | rejected | kept % | reject reasons | wall s | throughput |",
             "|---|---:|---:|---:|---:|---|---:|---:|"]
    for name in TABLE_STAGES:
        m = data.manifests.get(name)
        if m is None:
            lines.append(f"| {name} | – | – | – | – | not found in this run (no {name}/_SUCCESS.json) | – | – |")
            continue
        tp = m.get("throughput") or {}
        rate = f"{tp['per_second']:,.1f} {tp.get('units', '')}/s" if tp.get("per_second") else "–"
        wall = _fmt(m.get("wall_seconds")) if m.get("wall_seconds") is not None else "(this run)"
        c = m.get("counts")
        if c is None:                      # a stage that produced a model: files, no records
            lines.append(f"| {name} | – | – | – | – | model: {', '.join(sorted(m.get('outputs', {})))} "
                         f"| {wall} | {rate} |")
            continue
        pct = f"{100 * c['kept'] / c['in']:.1f}" if c["in"] else "–"
        lines.append(f"| {name} | {_fmt(c['in'])} | {_fmt(c['kept'])} | {_fmt(c['rejected'])} | {pct} | "
                     f"{_top_reasons(c.get('reasons') or {})} | {wall} | {rate} |")
    return lines


def _loading(manifest: dict[str, Any] | None) -> list[str]:
    pattern = (manifest or {}).get("pattern") or "00000.tar"
    total = ((manifest or {}).get("totals") or {}).get("samples", 0)
    return [
        "## How to load", "",
        "Paths below are relative to this directory; samples are `UID.jpg` (the downloaded image),",
        "`UID.txt` (the caption) and `UID.json` (metadata), keyed by the stable uid.", "",
        "webdataset:", "", "```python", "import webdataset as wds",
        f"ds = wds.WebDataset(\"{pattern}\", shardshuffle=False).decode(\"pil\").to_tuple(\"jpg\", \"txt\", \"json\")",
        "for image, caption, meta in ds:", "    ...", "```", "",
        "open_clip_train (reads `sizes.json` here, or pass the count):", "", "```sh",
        f"python -m open_clip_train.main --dataset-type webdataset --train-data '{pattern}' \\",
        f"    --train-num-samples {total} --model ViT-B-32 --batch-size 256 --warmup 500 --epochs 10",
        "```", "",
        "The bundled trainer:", "", "```sh",
        f"witcurate train --data '{pattern}' --model witcurate-tiny --out RUN", "```", "",
        "Hugging Face datasets:", "", "```python", "from datasets import load_dataset",
        "ds = load_dataset(\"webdataset\", data_files={\"train\": \"*.tar\"}, split=\"train\")", "```", "",
        "duckdb over the sidecars (one row a sample, no image bytes):", "", "```python", "import duckdb",
        "duckdb.sql(\"select query, count(*) n, avg(clip_score) from '*.parquet' group by query order by n desc\")",
        "```", "",
    ]


def render_readme(out_root: str, config: Config, data: CardData,
                  plots: dict[str, str], plot_notes: dict[str, str], extras: dict[str, list[str]]) -> str:
    m = data.shards_manifest or {}
    totals = m.get("totals") or {}
    first = next((data.manifests[s] for s in RECORD_STAGES if data.manifests.get(s)), None)
    candidates = data.manifests["ingest"]["counts"]["in"] if data.manifests.get("ingest") else None
    queries = data.manifests.get("queries")
    n_queries = queries["counts"]["kept"] if queries else None
    covered = totals.get("queries")
    title = posixpath.basename(out_root.rstrip("/")) or "dataset"
    lines = [f"# witcurate dataset: {title}", "",
             "WIT-style image-text pairs (the WebImageText recipe CLIP was trained on): candidate",
             "alt-text pairs matched against a query list, balanced, downloaded, deduplicated, CLIP-score",
             f"filtered and capped per query, written by witcurate {witcurate.__version__}.", "",
             "## Summary", "", "| | |", "|---|---:|",
             f"| candidates in (ingest) | {_fmt(candidates) if candidates is not None else 'not in this run'} |"]
    if candidates is None and first is not None:
        lines.append(f"| records in (first stage found) | {_fmt(first['counts']['in'])} |")
    for name in RECORD_STAGES[:-1]:
        if data.manifests.get(name):
            lines.append(f"| kept after {name} | {_fmt(data.manifests[name]['counts']['kept'])} |")
    lines += [f"| final samples | {_fmt(totals.get('samples'))} |",
              f"| tar files | {_fmt(totals.get('shards'))} (up to {_fmt(m.get('samples_per_shard'))} samples each) |",
              f"| total size | {_fmt(round((totals.get('bytes') or 0) / 2**20, 1))} MiB |",
              f"| queries covered | {_fmt(covered)}" + (f" of {_fmt(n_queries)}" if n_queries else "") + " |",
              f"| cap per query | {_fmt(config.cap.per_query)} |", ""]
    lines += ["## Stages", "",
              "Counts come from each stage's `_SUCCESS.json`; for every stage in = kept + rejected,",
              "and every rejected record is kept with its reason in that stage's `rejects/`.", ""]
    lines += _stage_table(data) + [""]
    sections = [("pairs_per_query", "Pairs per query"), ("clip_score", "CLIP score"),
                ("rejects", "Rejects by stage and reason"), ("image_sizes", "Image sizes")]
    for key, heading in sections:
        lines += [f"## {heading}", ""]
        if key in plots:
            lines += [f"![{heading}]({CARD_DIR}/{plots[key]})", ""]
        if plot_notes.get(key):
            lines += [plot_notes[key], ""]
        lines += extras.get(key, [])
    lines += _loading(data.shards_manifest)
    if m.get("shards"):
        lines += ["## Shards", "", "| tar | samples | MiB | sha256 |", "|---|---:|---:|---|"]
        for s in m["shards"][:20]:
            lines.append(f"| {s['tar']} | {_fmt(s['samples'])} | {s['bytes'] / 2**20:.2f} | `{s['sha256']}` |")
        if len(m["shards"]) > 20:
            lines.append(f"| … {len(m['shards']) - 20} more in manifest.json | | | |")
        lines.append("")
    lines += ["## Config", "", "The full configuration of the run (also in `manifest.json`):", "",
              "```yaml", yaml.safe_dump(config.to_dict(), sort_keys=False).rstrip(), "```", ""]
    return "\n".join(lines)


def build_card(out_root: str, shards_dir: str, config: Config) -> dict[str, str]:
    """Write shards_dir/README.md and shards_dir/card/*.png; returns {plot key: file name}."""
    data = collect(out_root, shards_dir)
    card_dir = fs.join(shards_dir, CARD_DIR)
    fs.makedirs(card_dir)
    plots: dict[str, str] = {}
    notes: dict[str, str] = {}
    extras: dict[str, list[str]] = {}

    counted = query_counts(out_root, data)
    if counted is None or not (counted[0] or counted[1]):
        notes["pairs_per_query"] = "Skipped: no cap or score stage and no samples in this run."
    else:
        before, after, how = counted
        plot_query_counts(before, after, how, config.cap.per_query, fs.join(card_dir, "pairs_per_query.png"))
        plots["pairs_per_query"] = "pairs_per_query.png"
        names = query_names(out_root, data)
        at_cap = sum(1 for v in after.values() if v >= config.cap.per_query)
        notes["pairs_per_query"] = (f"Before: {how}. {len(after):,} queries have samples; "
                                    f"{at_cap:,} reach the cap of {config.cap.per_query:,}.")
        top = sorted(set(before) | set(after), key=lambda q: (-before.get(q, 0), -after.get(q, 0), q))[:10]
        extras["pairs_per_query"] = ["| query | before | after |", "|---|---:|---:|"] + [
            f"| {names.get(q, f'#{q}')} | {_fmt(before.get(q, 0)) if before else '–'} | {_fmt(after.get(q, 0))} |"
            for q in top] + [""]

    kept, rejected, threshold = score_values(out_root, data)
    shipped = ([v for v in data.sidecars.column("clip_score").to_pylist() if v is not None]
               if data.sidecars is not None else [])
    if kept or rejected or shipped:
        plot_scores(kept, rejected, shipped, threshold, fs.join(card_dir, "clip_score.png"))
        plots["clip_score"] = "clip_score.png"
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
        notes["clip_score"] = " ".join(parts)
    else:
        notes["clip_score"] = "Skipped: no CLIP scores found (no score stage and no samples)."

    rows = [(name, data.manifests[name]) for name in RECORD_STAGES if data.manifests.get(name)]
    if rows:
        plot_rejects(rows, fs.join(card_dir, "rejects.png"))
        plots["rejects"] = "rejects.png"
        missing = [name for name in RECORD_STAGES if not data.manifests.get(name)]
        if missing:
            notes["rejects"] = f"Not in this run (no _SUCCESS.json): {', '.join(missing)}."
    else:
        notes["rejects"] = "Skipped: no stage manifests found."

    if data.sidecars is not None and data.sidecars.num_rows:
        plot_sizes(data.sidecars, fs.join(card_dir, "image_sizes.png"))
        plots["image_sizes"] = "image_sizes.png"
        w = sorted(v for v in data.sidecars.column("width").to_pylist() if v is not None) or [0]
        h = sorted(v for v in data.sidecars.column("height").to_pylist() if v is not None) or [0]
        notes["image_sizes"] = (f"Stored images: median {w[len(w) // 2]}×{h[len(h) // 2]} px; "
                                f"widths {w[0]}–{w[-1]}, heights {h[0]}–{h[-1]}.")
    else:
        notes["image_sizes"] = "Skipped: no samples."

    text = render_readme(out_root, config, data, plots, notes, extras)
    with fs.open_file(fs.join(shards_dir, README), "w", encoding="utf-8") as f:
        f.write(text)
    return plots


def add_card_section(shards_dir: str, key: str, title: str, markdown: str) -> None:
    """Add or replace a named section of a finished card (e.g. the curation experiment's table).

    The section sits between markers, so running the experiment again replaces it in place.
    """
    path = fs.join(shards_dir, README)
    with fs.open_file(path, "r", encoding="utf-8") as f:
        text = f.read()
    begin, end = f"<!-- witcurate:{key} -->", f"<!-- /witcurate:{key} -->"
    block = f"{begin}\n## {title}\n\n{markdown.strip()}\n{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        tail = rest.split(end, 1)[1]
        text = head + block + tail
    else:
        marker = "## Config"
        if marker in text:
            head, tail = text.split(marker, 1)
            text = head + block + "\n\n" + marker + tail
        else:
            text = text.rstrip("\n") + "\n\n" + block + "\n"
    with fs.open_file(path, "w", encoding="utf-8") as f:
        f.write(text)
