"""`witcurate run`: every stage in order under one run directory, then a summary."""

from __future__ import annotations

import contextlib
import time
from typing import Any, Callable, ContextManager, Protocol, Sequence

from witcurate.config import Config
from witcurate.config_checks import validate
from witcurate.errors import ConfigError
from witcurate.pipeline import fs
from witcurate.pipeline.audit import audit_run, format_table
from witcurate.pipeline.runner import run_stage
from witcurate.pipeline.stages import ORDER, get_stage


class RunHook(Protocol):
    """Something that plugs into a run without the pipeline importing it: the CLI registers the
    demo's (its world and image host while the stages run, its ground-truth report after)."""

    def running(self, out_root: str, progress: Callable[[str], None]) -> ContextManager[Any]:
        """Entered before the first stage, left after the last one (or when one fails)."""
        ...

    def after(self, out_root: str, progress: Callable[[str], None]) -> None:
        """Runs once every stage has finished and the audit is printed; may add to the card."""
        ...


def run_all(config: Config, out_root: str, beam_args: list[str], stages: list[str] | None = None,
            force: bool = False, progress: Callable[[str], None] = print,
            hooks: Sequence[RunHook] = ()) -> list[dict[str, Any]]:
    names = stages or config.run.stages
    unknown = [n for n in names if n not in ORDER]
    if unknown:
        raise ConfigError(f"unknown stage(s) in run.stages: {', '.join(unknown)}",
                          f"stages are: {', '.join(ORDER)}")
    validate(config, stages=names)          # e.g. score's keep rule, before the first stage
    manifests = []
    start = time.time()
    with contextlib.ExitStack() as running:
        for hook in hooks:
            running.enter_context(hook.running(out_root, progress))
        for name in names:
            stage = get_stage(name)
            inputs = stage.default_inputs(config, out_root)
            manifests.append(run_stage(stage, config, fs.join(out_root, name), inputs,
                                       beam_args + config.run.beam_args, force=force,
                                       progress=progress))
    progress(f"\nrun finished in {time.time() - start:.1f}s: {out_root}\n")
    progress(format_table(audit_run(out_root)))
    for hook in hooks:
        hook.after(out_root, progress)
    progress(summary(out_root))
    return manifests


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
