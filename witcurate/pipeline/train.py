"""The `train` stage: the bundled trainer on the run's shards, then zero-shot and retrieval
evaluation. Not a filter: it produces a model (model.pt, checkpoint.pt, metrics.jsonl and
eval.json), which its manifest lists in place of record counts.

Training runs in the stage's work dir, which survives a killed attempt: the rerun resumes from
the last checkpoint (when the settings are the same) instead of starting over.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from witcurate.config import Config
from witcurate.pipeline import fs
from witcurate.pipeline.runner import MODEL, StageContext, StageResult
from witcurate.pipeline.stages import BaseStage, Option

RUN_SPEC = "train_spec.json"


def train_in_work_dir(ctx: StageContext, args: Any, data: str) -> dict[str, Any]:
    """Train into ctx.work_dir, resuming only a run with identical settings and data."""
    from witcurate.trainer.data import expand_shards
    from witcurate.trainer.train import train

    # Where a run stops or how often it prints does not change what it trains.
    settings = {k: v for k, v in dataclasses.asdict(args).items() if k not in ("stop_at_step", "print_every")}
    spec = {"args": settings, "data": expand_shards(data)}
    spec_path = fs.join(ctx.work_dir, RUN_SPEC)
    same = fs.exists(spec_path) and fs.read_json(spec_path) == json.loads(json.dumps(spec))
    if not same:
        fs.rm(ctx.work_dir)
        fs.makedirs(ctx.work_dir)
        fs.write_json(spec_path, spec)
    elif fs.exists(fs.join(ctx.work_dir, "checkpoint.pt")):
        ctx.progress(f"[{ctx.name}] resuming the interrupted training in {ctx.work_dir}")
    return train(args, data, ctx.work_dir, progress=ctx.progress, resume=same)


def land(ctx: StageContext, names: dict[str, str]) -> None:
    """Move finished files from the work dir into the stage output ({work name: output name})."""
    for src, dst in names.items():
        path = fs.join(ctx.work_dir, src)
        if fs.exists(path):
            fs.move(path, fs.join(ctx.tmp_dir, dst))


class TrainStage(BaseStage):
    name = "train"
    produces = MODEL
    sections = ("train",)
    inputs = ("in", "eval")
    options = (
        Option("--data", "train.data", "shards to train on (brace pattern, glob or directory); default: the run's shards"),
        Option("--model", "train.model", "open_clip model name (witcurate-tiny, ViT-B-32, ...)"),
        Option("--epochs", "train.epochs", "passes over the shards", int),
        Option("--batch-size", "train.batch_size", "batch size per process", int),
        Option("--lr", "train.lr", "peak learning rate", float),
        Option("--device", "train.device", "auto, cpu or cuda"),
        Option("--workers", "train.workers", "image decoding processes", int),
    )

    def default_inputs(self, config: Config, out_root: str) -> dict[str, str]:
        inputs = {"in": config.train.data or fs.join(out_root, "shards")}
        if config.train.eval_dir:
            inputs["eval"] = config.train.eval_dir
        return inputs

    def run(self, ctx: StageContext) -> StageResult:
        from witcurate.trainer.train import TrainArgs

        cfg = ctx.config.train
        data = ctx.input("in")           # a shards directory (its *.tar), a brace pattern or a glob
        eval_dir = ctx.inputs.get("eval") or cfg.eval_dir
        args = TrainArgs.from_section(cfg, seed=ctx.config.run.seed, eval_dir=eval_dir)
        metrics = train_in_work_dir(ctx, args, data)
        land(ctx, {"model.pt": "model.pt", "checkpoint.pt": "checkpoint.pt",
                   "metrics.jsonl": "metrics.jsonl", "eval.json": "eval.json"})
        return StageResult(units="samples", per_second=metrics["samples_per_second"], extra={
            "eval": metrics.get("eval", {}),
            "samples_per_second": metrics["samples_per_second"],
            "train": metrics,
            "model": "model.pt",
        })
