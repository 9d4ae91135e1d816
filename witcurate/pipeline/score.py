"""The score stage: CLIP score every image-text pair with an open_clip model, keep by a rule.

Also a standalone filtering job: `witcurate score --in DIR --out DIR --model ViT-B-32
--pretrained openai --threshold 0.28`, where DIR is either a dedupe stage directory (rows
naming an image `shard` and `key` in the download stage's tars, given by --images) or any plain
img2dataset output folder (NNNNN.tar + NNNNN.parquet, or NNNNN.parquet with image bytes).

Beam graph (image bytes never cross a shuffle; only metadata rows are grouped):

    rows -> (shard, row) -> GroupByKey -> DecodeBatches: read each shard once; decode threads
    running ahead of the model apply the model's own preprocessing into uint8 batches of
    score.batch_size images and tokenise their captions (score_decode)
         -> RunInference(ClipScoreModelHandler): a batch per call, the model loaded once per
            worker process; ToTensor + Normalize once per batch, on the model's device
         -> AttachScores: rows with clip_score, clip_model; a table of embeddings per batch
         -> keep rule: threshold (one pass) or top_fraction (a global cutoff computed by a
            combine over all scores, as a side input: the second pass) (score_keep)

On Dataflow with GPU workers, either give the whole job GPUs with `--dataflow_service_options=
"worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver"`, or only this stage's
inference step with `score.accelerator: "type:nvidia-l4;count:1;install-nvidia-driver"` (a Beam
resource hint), plus a custom SDK container with CUDA torch (`--sdk_container_image`, built from
the repo's Dockerfile) and `--experiments=no_use_multiple_sdk_containers` or `score.share_model:
true` so one model copy serves the GPU. With `score.device: auto` the handler uses the GPU where
it finds one and autocasts to `score.precision`; decoding stays on the worker CPUs
(score.num_workers threads per DoFn instance, working score.num_workers + 1 batches ahead, in
pinned memory), so raise score.num_workers until the GPU, not decoding, is the bound.
"""

from __future__ import annotations

from witcurate.config import Config
from witcurate.pipeline import fs
from witcurate.pipeline.runner import StageContext, StageResult
from witcurate.pipeline.score_keep import TopFractionCutoff
from witcurate.pipeline.score_outputs import EMBEDDINGS, EMBEDDINGS_DIR
from witcurate.pipeline.stages import BaseStage, Option, stage_dir

RUN_SCORER = "run:scorer"           # score.pretrained: the checkpoint of this run's scorer stage

# Re-exported: what callers of the score stage's module use.
__all__ = ["ScoreStage", "EMBEDDINGS", "EMBEDDINGS_DIR", "RUN_SCORER", "TopFractionCutoff"]


class ScoreStage(BaseStage):
    name = "score"
    sections = ("score",)
    # query_counts: balance's directory, read only by score.per_query_top_fraction
    inputs = ("in", "images", "checkpoint", "query_counts")
    options = (
        Option("--model", "score.model", "open_clip model name (ViT-B-32, witcurate-tiny, ...)"),
        Option("--pretrained", "score.pretrained",
               "open_clip pretrained tag (openai, laion2b_s34b_b79k, ...), a checkpoint path, or run:scorer"),
        Option("--threshold", "score.threshold", "keep pairs whose cosine score is >= this (e.g. 0.28)", float),
        Option("--top-fraction", "score.top_fraction", "keep this fraction of pairs, best scores first (e.g. 0.3)", float),
        Option("--per-query-top-fraction", "score.per_query_top_fraction",
               "keep this fraction of each query's pairs, best scores first", float),
        Option("--batch-size", "score.batch_size", "inference batch size", int),
        Option("--device", "score.device", "auto, cpu or cuda"),
    )

    def default_inputs(self, config: Config, out_root: str) -> dict[str, str]:
        inputs = {"in": stage_dir(out_root, "dedupe"), "images": stage_dir(out_root, "download")}
        if config.score.pretrained == RUN_SCORER:
            inputs["checkpoint"] = fs.join(stage_dir(out_root, "scorer"), "checkpoint.pt")
        if config.score.per_query_top_fraction is not None:
            inputs["query_counts"] = stage_dir(out_root, "balance")
        return inputs

    def run(self, ctx: StageContext) -> StageResult:
        from witcurate.pipeline.score_graph import run_score   # torch: only when the stage runs
        return run_score(ctx)
