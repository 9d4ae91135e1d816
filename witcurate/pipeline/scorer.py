"""The `scorer` stage: bootstrap a CLIP scorer the way DFN does, by training a small open_clip
model on a trusted clean set that is disjoint from the pool. Its `checkpoint.pt` (a plain state
dict) is what the `score` stage loads:

    create_model(config.scorer.model, "OUT/scorer/checkpoint.pt")

Not a filter: it produces a model (checkpoint.pt, metrics.jsonl), which its manifest lists in
place of record counts.
"""

from __future__ import annotations

from witcurate.config import Config
from witcurate.errors import InputError
from witcurate.pipeline.runner import MODEL, StageContext, StageResult
from witcurate.pipeline.stages import BaseStage, Option
from witcurate.pipeline.train import land, train_in_work_dir

CHECKPOINT = "checkpoint.pt"


class ScorerStage(BaseStage):
    name = "scorer"
    produces = MODEL
    sections = ("scorer",)
    inputs = ("trusted",)
    options = (
        Option("--model", "scorer.model", "open_clip model name to train (witcurate-tiny, ...)"),
        Option("--epochs", "scorer.epochs", "passes over the trusted set", int),
        Option("--batch-size", "scorer.batch_size", "batch size", int),
        Option("--lr", "scorer.lr", "peak learning rate", float),
        Option("--instance-weight", "scorer.instance_weight",
               "weight of the self-supervised image term beside the CLIP loss (0 = plain CLIP)", float),
        Option("--device", "scorer.device", "auto, cpu or cuda"),
    )

    def default_inputs(self, config: Config, out_root: str) -> dict[str, str]:
        return {"trusted": config.scorer.trusted}

    def run(self, ctx: StageContext) -> StageResult:
        from witcurate.trainer.train import TrainArgs

        trusted = ctx.inputs.get("trusted") or ctx.config.scorer.trusted
        if not trusted:
            raise InputError("the scorer stage needs a trusted set",
                             "set scorer.trusted or pass --trusted 'DIR/trusted-*.tar'")
        # In-process decoding: on a few shared cores a loader process only competes with the
        # model for them. No step copies: only the final weights matter here.
        args = TrainArgs.from_section(ctx.config.scorer, seed=ctx.config.run.seed, workers=0,
                                      checkpoint_every=100, keep_step_checkpoints=False, log_every=1)
        metrics = train_in_work_dir(ctx, args, trusted)
        land(ctx, {"model.pt": CHECKPOINT, "metrics.jsonl": "metrics.jsonl"})
        return StageResult(units="samples", per_second=metrics["samples_per_second"],
                           extra={"train": metrics, "checkpoint": CHECKPOINT,
                                  "model": ctx.config.scorer.model,
                                  "samples_per_second": metrics["samples_per_second"]})
