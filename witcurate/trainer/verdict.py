"""What the ablation's numbers say: the table, each filter's effect, the combination the table
chooses, and whether the default in use agrees with it.

The rule, stated in the card: a filter helps when adding it raises the mean zero-shot top-1 on
average over the two arms it can be added to (to the CLIP threshold alone, and to the CLIP
threshold with the other filter). The chosen combination switches on exactly the filters that
help. Its margin over the CLIP threshold alone is given in standard deviations: the difference of
the means over the larger of the two arms' sample standard deviations across seeds.
"""

from __future__ import annotations

import statistics
from typing import Any

from witcurate.trainer.ablation import ARMS, CLIP, arm_of

KEY = "zeroshot/top1"
# filter -> the (without, with) arm pairs that differ only in it
PAIRS = {
    "semdedup": (("clip", "clip+semdedup"), ("clip+target", "clip+semdedup+target")),
    "target": (("clip", "clip+target"), ("clip+semdedup", "clip+semdedup+target")),
}
NAMES = {"semdedup": "semantic dedup", "target": "the target filter"}
COLUMNS = (("zeroshot/top1", "zero-shot top-1"), ("zeroshot/top5", "zero-shot top-5"),
           ("retrieval/image_to_text_R@1", "image→text R@1"), ("retrieval/text_to_image_R@1", "text→image R@1"))


def _stat(results: dict[str, Any], arm: str, key: str = KEY) -> dict[str, float] | None:
    return results["arms"].get(arm, {}).get("summary", {}).get(key)


def margin(results: dict[str, Any], arm: str, against: str = CLIP) -> dict[str, float] | None:
    """arm's mean zero-shot top-1 minus `against`'s, and that difference in standard deviations."""
    a, b = _stat(results, arm), _stat(results, against)
    if not a or not b:
        return None
    diff, spread = a["mean"] - b["mean"], max(a["std"], b["std"])
    return {"difference": round(diff, 4), "std": round(spread, 4),
            "in_std": round(diff / spread, 2) if spread > 0 else None}


def choose(results: dict[str, Any]) -> dict[str, Any]:
    """Each filter's effect, the chosen combination, its margin over the CLIP threshold alone."""
    effects = {}
    for name, pairs in PAIRS.items():
        diffs = [_stat(results, on)["mean"] - _stat(results, off)["mean"] for off, on in pairs
                 if _stat(results, on) and _stat(results, off)]
        mean = statistics.fmean(diffs) if diffs else 0.0
        effects[name] = {"differences": [round(d, 4) for d in diffs], "mean": round(mean, 4), "helps": mean > 0}
    arm = arm_of(effects["semdedup"]["helps"], effects["target"]["helps"])
    over = margin(results, arm)
    beyond = bool(over and over["in_std"] is not None and over["in_std"] > 2)
    return {"arm": arm, "effects": effects, "vs_clip": over, "beyond_2_std": beyond,
            "default_agrees": results["default"]["arm"] == arm}


def format_table(results: dict[str, Any]) -> str:
    lines = ["| arm | samples | epochs | " + " | ".join(t for _, t in COLUMNS) + " | top-1 vs CLIP threshold |",
             "|---|---:|---:|" + "---:|" * (len(COLUMNS) + 1)]
    for arm in ARMS:
        if arm not in results["arms"]:
            continue
        a = results["arms"][arm]
        cells = []
        for key, _ in COLUMNS:
            s = _stat(results, arm, key)
            cells.append(f"{s['mean']:.3f} ± {s['std']:.3f}" if s else "–")
        over = margin(results, arm) if arm != CLIP else None
        vs = "–" if not over else f"{over['difference']:+.3f}" + (
            f" ({over['in_std']:+.1f} std)" if over["in_std"] is not None else "")
        lines.append(f"| {a['title']} | {a['samples']:,} | {a['epochs']:.1f} | " + " | ".join(cells) + f" | {vs} |")
    return "\n".join(lines)


def _verdict_lines(results: dict[str, Any]) -> list[str]:
    chosen, default = results["chosen"], results["default"]
    lines = []
    for name, effect in chosen["effects"].items():
        diffs = ", ".join(f"{d:+.3f}" for d in effect["differences"])
        lines.append(f"- Adding {NAMES[name]} changes zero-shot top-1 by {diffs} (mean {effect['mean']:+.3f}): "
                     + ("it helps." if effect["helps"] else "**it does not help on this world**, so the "
                        "table leaves it off."))
    title = results["arms"][chosen["arm"]]["title"]
    lines.append(f"- The table chooses **{title}** (`semdedup.enabled: {str('semdedup' in chosen['arm']).lower()}`, "
                 f"`target.enabled: {str('target' in chosen['arm']).lower()}`).")
    state = "agrees" if chosen["default_agrees"] else "**does not agree**: change it to the table's choice"
    lines.append(f"- The default in {default['source']} is {results['arms'][default['arm']]['title']} "
                 f"(`semdedup.enabled: {str(default['semdedup']).lower()}`, `target.enabled: "
                 f"{str(default['target']).lower()}`): it {state}.")
    over = chosen["vs_clip"]
    if chosen["arm"] == CLIP:
        lines.append("- Neither filter helps here, so the default is the CLIP threshold alone.")
    elif over:
        how = "more than" if chosen["beyond_2_std"] else "not more than"
        lines.append(f"- Against the CLIP threshold alone the choice gains {over['difference']:+.3f} zero-shot top-1, "
                     f"{how} 2 standard deviations ({over['in_std']} std; the larger arm's std across seeds: "
                     f"{over['std']:.3f}).")
    return lines


def card_markdown(results: dict[str, Any]) -> str:
    n_seeds = len(results["seeds"])
    return "\n".join([
        f"The same model (`{results['model']}`) trained on the same number of samples, {results['steps']} steps "
        f"at batch size {results['batch_size']} ({results['samples_seen']:,} samples seen: equal compute; an arm "
        f"with fewer samples repeats more epochs), on each arm. The raw arm is every image the download stage "
        f"kept; the others run the real semdedup, target, cap and shards stages on this run's score output "
        f"with the steps switched on or off. {n_seeds} seed(s) per arm (seeds "
        f"{', '.join(map(str, results['seeds']))}, shared by all arms); mean ± sample standard deviation, "
        f"evaluated on `{results['eval_dir']}`.",
        "",
        format_table(results),
        "",
        "A filter helps when adding it raises the mean zero-shot top-1, on average over the two arms it can "
        "be added to; the chosen combination switches on the filters that help.",
        "",
        *_verdict_lines(results),
        "",
        f"Produced by `witcurate experiment --run {results['run']}`; per-run numbers are in "
        f"`{results['results_path']}`.",
    ])
