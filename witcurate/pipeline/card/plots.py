"""The card's PNG plots, and the two helpers anyone adding a plot to a card uses
(`pyplot`, `save_plot`): the same figure always gives the same PNG bytes."""

from __future__ import annotations

import io
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from witcurate.pipeline import fs

CARD_DIR = "card"      # the plots' folder beside the card's README.md


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend (no display needed)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plain_log_ticks(axis) -> None:
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


def save_plot(fig, path: str) -> None:
    """Write `fig` as a PNG to `path` (any fsspec path) and close it."""
    buf = io.BytesIO()
    # No "Software" stamp: the same run gives the same PNG bytes.
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    pyplot().close(fig)
    with fs.open_file(path, "wb") as f:
        f.write(buf.getvalue())


def save_card_plot(fig, shards_dir: str, name: str) -> str:
    """Save `fig` among a card's plots (shards_dir/card/NAME); returns the README's link to it."""
    fs.makedirs(fs.join(shards_dir, CARD_DIR))
    save_plot(fig, fs.join(shards_dir, CARD_DIR, name))
    return f"{CARD_DIR}/{name}"


def plot_query_counts(before: dict[int, int], after: dict[int, int], how: str, cap: int, path: str) -> None:
    plt = pyplot()
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
    plain_log_ticks(ax.yaxis)
    if len(ids) > 50:
        ax.set_xscale("log")
        plain_log_ticks(ax.xaxis)
    else:
        ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("queries, most frequent first (rank)")
    ax.set_ylabel("pairs per query (log)")
    ax.set_title("Pairs per query before and after the cap")
    ax.legend(fontsize=8, loc="best")
    ax.grid(True, which="major", alpha=0.3)
    save_plot(fig, path)


def plot_scores(kept: list[float], rejected: list[float], shipped: list[float], threshold: float | None,
                path: str) -> None:
    plt = pyplot()
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
    save_plot(fig, path)


def plot_rejects(rows: list[tuple[str, dict[str, Any]]], path: str) -> None:
    """Left: a waterfall from candidates to samples; right: rejects by stage and reason."""
    plt = pyplot()
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
        plain_log_ticks(bx.xaxis)
        bx.set_xlim(0.8, max(n for _, n in reasons) * 3)
        for i, (_, n) in enumerate(reasons):
            bx.text(n, i, f" {n:,}", va="center", fontsize=7)
    else:
        bx.text(0.5, 0.5, "no rejects", ha="center", va="center", transform=bx.transAxes)
    bx.set_xlabel("rejected records (log)")
    bx.set_title("Rejects by stage and reason")
    fig.tight_layout()
    save_plot(fig, path)


MAX_SCATTER_POINTS = 20_000      # drawn per series; the legend gives the full count


def _size_points(table: pa.Table, width: str, height: str) -> tuple[list[int], list[int], int]:
    """(widths, heights, how many samples have both): at most MAX_SCATTER_POINTS of them drawn,
    every k-th in the sidecars' uid order (a hash order, so an even sample), since a scatter of
    a million points takes matplotlib longer than the rest of the stage and shows no more."""
    w, h = table.column(width), table.column(height)
    both = pc.and_(pc.fill_null(pc.greater(w, 0), False), pc.fill_null(pc.greater(h, 0), False))
    w, h = pc.filter(w, both), pc.filter(h, both)
    every = pa.array(range(0, len(w), max(1, -(-len(w) // MAX_SCATTER_POINTS))), pa.int64())
    return pc.take(w, every).to_pylist(), pc.take(h, every).to_pylist(), len(w)


def plot_sizes(table: pa.Table, path: str) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 5))
    for (width, height), label, style in (
            (("original_width", "original_height"), "original", dict(alpha=0.35, color="#888888")),
            (("width", "height"), "stored", dict(alpha=0.6, color="#1f77b4"))):
        xs, ys, n = _size_points(table, width, height)
        if n:
            drawn = f", {len(xs):,} drawn" if len(xs) < n else ""
            ax.scatter(xs, ys, s=6, label=f"{label} ({n:,}{drawn})", **style)
    ax.set_xscale("log")
    ax.set_yscale("log")
    plain_log_ticks(ax.xaxis)
    plain_log_ticks(ax.yaxis)
    ax.set_xlabel("width (px, log)")
    ax.set_ylabel("height (px, log)")
    ax.set_title("Image sizes")
    ax.legend(fontsize=8)
    save_plot(fig, path)
