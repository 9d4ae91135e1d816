"""`witcurate run`: every stage in order under one run directory, then a summary."""

from __future__ import annotations

import contextlib
import time
from typing import Any, Callable

from witcurate.config import Config
from witcurate.errors import ConfigError
from witcurate.pipeline import fs
from witcurate.pipeline.audit import audit_run, format_table
from witcurate.pipeline.runner import run_stage
from witcurate.pipeline.stages import ORDER, get_stage


@contextlib.contextmanager
def demo_world(config: Config, needed: bool, progress: Callable[[str], None]):
    """Generate the demo world if missing and serve its image host while the stages run."""
    if not needed:
        yield None
        return
    from witcurate.demo.host import ImageHost
    from witcurate.demo.world import generate_world

    generate_world(config.demo, config.demo.root, progress=progress)
    host = ImageHost(fs.join(config.demo.root), config.demo.host, config.demo.port)
    host.start()
    progress(f"[demo] image host serving {config.demo.root} at {host.base_url}")
    try:
        yield host
    finally:
        host.stop()


def run_all(config: Config, out_root: str, beam_args: list[str], stages: list[str] | None = None,
            force: bool = False, progress: Callable[[str], None] = print) -> list[dict[str, Any]]:
    names = stages or config.run.stages
    unknown = [n for n in names if n not in ORDER]
    if unknown:
        raise ConfigError(f"unknown stage(s) in run.stages: {', '.join(unknown)}",
                          f"stages are: {', '.join(ORDER)}")
    manifests = []
    start = time.time()
    with demo_world(config, config.run.demo, progress):
        for name in names:
            stage = get_stage(name)
            inputs = stage.default_inputs(config, out_root)
            manifests.append(run_stage(stage, config, fs.join(out_root, name), inputs,
                                       beam_args + config.run.beam_args, force=force,
                                       progress=progress))
    progress(f"\nrun finished in {time.time() - start:.1f}s: {out_root}\n")
    progress(format_table(audit_run(out_root)))
    if config.run.demo:
        progress("\n" + demo_truth_report(config, out_root))
    progress(summary(out_root))
    return manifests


def demo_truth_report(config: Config, out_root: str) -> str:
    """Judge the run against the demo world's ground truth; saved beside the run and in the card."""
    from witcurate.demo.truth_report import evaluate_run, format_report
    report = evaluate_run(out_root, config.demo.root)
    fs.write_json(fs.join(out_root, "demo_truth.json"), report)
    text = format_report(report)
    shards = fs.join(out_root, "shards")
    if fs.exists(fs.join(shards, "README.md")):
        from witcurate.demo.truth_report import plot_pr_curve
        from witcurate.pipeline.card import add_card_section, save_card_plot
        markdown = "```\n" + text + "\n```"
        if report.get("clip_filter"):
            link = save_card_plot(plot_pr_curve(report["clip_filter"]), shards, "clip_pr_curve.png")
            markdown += f"\n\n![CLIP filter precision and recall]({link})"
        add_card_section(shards, "demo-truth", "Filter quality against the demo's ground truth", markdown)
    return text


def summary(out_root: str) -> str:
    lines = []
    shards = fs.join(out_root, "shards")
    if fs.exists(fs.join(shards, "manifest.json")):
        totals = fs.read_json(fs.join(shards, "manifest.json")).get("totals", {})
        lines.append(f"\nshards:       {shards}/ ({totals.get('shards', '?')} tars, "
                     f"{totals.get('samples', '?')} samples, {totals.get('queries', '?')} queries)")
        lines.append(f"dataset card: {shards}/README.md")
    train = fs.join(out_root, "train", "_SUCCESS.json")
    if fs.exists(train):
        evals = fs.read_json(train).get("eval", {})
        zs, ret = evals.get("zeroshot", {}), evals.get("retrieval", {})
        if zs:
            lines.append(f"trained CLIP:  zero-shot top-1 {zs.get('top1', 0):.3f}, top-5 {zs.get('top5', 0):.3f} "
                         f"({zs.get('classes')} classes, {zs.get('n')} images)")
        if ret:
            lines.append("               retrieval " + ", ".join(
                f"{k} {v:.3f}" for k, v in ret.items() if "@" in k) + f" ({ret.get('n')} pairs)")
        lines.append(f"               model: {fs.join(out_root, 'train', 'model.pt')}")
    return "\n".join(lines)
