"""The truth report's section of the dataset card: the report's text and its plots (the CLIP
filter's precision and recall; semdedup's and the target filter's curves against the ground
truth), saved through the card's public API."""

from __future__ import annotations

from typing import Any

from witcurate.demo.semantic_truth import DUPLICATE_TARGET, OFF_TARGET_TARGET
from witcurate.demo.truth_report import plot_pr_curve


def _goal_lines(ax, goal: dict[str, float]) -> None:
    ax.axhline(goal["recall"], color="tab:blue", linestyle=":", linewidth=1)
    ax.axhline(goal["clean_removed"], color="tab:red", linestyle=":", linewidth=1)


def plot_semdedup_curve(sd: dict[str, Any]):
    """Recall of semantic duplicates and share of clean pairs removed over the cosine threshold."""
    from witcurate.pipeline.card import pyplot
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    ts = [c["threshold"] for c in sd["curve"]]
    ax.plot(ts, [c["recall"] for c in sd["curve"]], label="recall of semantic duplicates", color="tab:blue")
    ax.plot(ts, [c["clean_removed_share"] for c in sd["curve"]], label="share of clean pairs removed",
            color="tab:red")
    _goal_lines(ax, DUPLICATE_TARGET)
    ax.axvline(sd["threshold"], color="black", linestyle="--", linewidth=1, label=f"threshold {sd['threshold']}")
    ax.set_xlabel("semdedup cosine threshold (duplicates at or above)")
    ax.set_ylim(0, 1.02)
    ax.set_title("semdedup on the demo's ground truth (dotted: the goals)")
    ax.legend(loc="center left", fontsize=8)
    return fig


def plot_target_curve(tg: dict[str, Any]):
    """Off-target recall and share of clean pairs removed over the kept fraction of clusters, one
    pair of lines per cluster count."""
    from witcurate.pipeline.card import pyplot
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    styles = ("-", "--", "-.")
    for style, (clusters, curve) in zip(styles, tg["curves"].items()):
        points = [c for c in curve if c["keep_fraction"] is not None]
        xs = [c["keep_fraction"] for c in points]
        ax.plot(xs, [c["recall"] for c in points], style, color="tab:blue", label=f"off-target recall, {clusters} clusters")
        ax.plot(xs, [c["clean_removed_share"] for c in points], style, color="tab:red",
                label=f"clean removed, {clusters} clusters")
    _goal_lines(ax, OFF_TARGET_TARGET)
    kept = tg.get("clusters_kept")
    if kept is not None and tg.get("clusters"):
        ax.axvline(kept / tg["clusters"], color="black", linestyle="--", linewidth=1,
                   label=f"the stage: {kept} of {tg['clusters']} clusters")
    ax.set_xlabel("fraction of clusters kept, nearest to the target set first")
    ax.set_ylim(0, 1.02)
    ax.set_title("target filter on the demo's ground truth (dotted: the goals)")
    ax.legend(loc="center right", fontsize=7)
    return fig


def card_markdown(report: dict[str, Any], text: str, shards_dir: str) -> str:
    """The section's markdown: the report's text, then each plot it has data for."""
    from witcurate.pipeline.card import save_card_plot

    markdown = "```\n" + text + "\n```"
    plots = []
    if report.get("clip_filter"):
        plots.append(("CLIP filter precision and recall", plot_pr_curve(report["clip_filter"]), "clip_pr_curve.png"))
    if (report.get("semdedup") or {}).get("curve"):
        plots.append(("semdedup recall and cost over the threshold", plot_semdedup_curve(report["semdedup"]),
                      "semdedup_curve.png"))
    if (report.get("target") or {}).get("curves"):
        plots.append(("target filter recall and cost over the clusters kept", plot_target_curve(report["target"]),
                      "target_curve.png"))
    for title, fig, name in plots:
        markdown += f"\n\n![{title}]({save_card_plot(fig, shards_dir, name)})"
    return markdown
