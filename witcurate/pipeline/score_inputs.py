"""What the score stage reads, checked in the launcher before any worker starts: which of its
two inputs `--in` is, the weights to score with, and a model that loads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import pyarrow.parquet as pq

from witcurate import schemas
from witcurate.errors import InputError, UserError
from witcurate.pipeline import fs, image_source
from witcurate.pipeline.inference import local_weights
from witcurate.pipeline.runner import StageContext
from witcurate.pipeline.score import RUN_SCORER
from witcurate.pipeline.score_decode import model_input_size
from witcurate.pipeline.tables import parquet_files


@dataclass
class ScoreInputs:
    mode: str                    # "stage" (a dedupe stage dir) or "img2dataset" (a plain folder)
    rows_dir: str
    images_dir: str
    parquets: list[str]          # img2dataset mode: its NNNNN.parquet files
    n_in: int | None             # None: the runner counts the stage dir's rows


_INPUT_HINT = ("--in takes a dedupe stage directory (part-*.parquet with the dedupe columns, images "
               "under --images) or a plain img2dataset output folder (NNNNN.tar + NNNNN.parquet)")


def _stage_inputs(ctx: StageContext, in_dir: str, parts: list[str]) -> ScoreInputs:
    if parts:
        with fs.open_file(parts[0]) as f:
            actual = pq.ParquetFile(f).schema_arrow
        try:
            schemas.validate(schemas.DEDUPED, actual, parts[0])
        except InputError as e:
            raise InputError(e.message, _INPUT_HINT) from None
    images = ctx.inputs.get("images")
    if not images:
        raise InputError(f"{in_dir} is a stage directory, so its images are elsewhere",
                         "pass --images DIR, the download stage directory")
    if parts and not fs.exists(images):
        raise InputError(f"images directory not found: {images}",
                         "pass --images DIR, the download stage directory")
    return ScoreInputs("stage", in_dir, images, [], None)


def _img2dataset_inputs(in_dir: str, parquets: list[str]) -> ScoreInputs:
    for path in parquets:
        with fs.open_file(path) as f:
            names = set(pq.ParquetFile(f).schema_arrow.names)
        missing = [c for c in image_source.IMG2DATASET_COLUMNS if c not in names]
        if missing:
            raise InputError(f"{path} lacks img2dataset column(s) {', '.join(missing)}",
                             "run img2dataset with --caption_col so captions are saved; " + _INPUT_HINT)
    return ScoreInputs("img2dataset", in_dir, in_dir, parquets,
                       image_source.count_img2dataset_successes(parquets))


def resolve_inputs(ctx: StageContext) -> ScoreInputs:
    """Which of the two accepted inputs `--in` is, validated; an InputError otherwise."""
    in_dir = ctx.input("in")
    parts = parquet_files(in_dir)
    if parts or fs.exists(fs.join(in_dir, "_SUCCESS.json")):
        return _stage_inputs(ctx, in_dir, parts)
    parquets = image_source.img2dataset_parquets(in_dir)
    if parquets:
        return _img2dataset_inputs(in_dir, parquets)
    if not fs.exists(in_dir):
        raise InputError(f"input not found: {in_dir}", _INPUT_HINT)
    raise InputError(f"{in_dir} is neither a stage directory nor an img2dataset output folder", _INPUT_HINT)


class StandaloneRow(beam.DoFn):
    """An img2dataset row, completed with the dedupe columns it lacks (as nulls)."""

    def process(self, row):
        out = {f.name: None for f in schemas.DEDUPED}
        out.update(row)
        yield out


def resolve_weights(ctx: StageContext) -> str:
    """The weights to score with: the checkpoint input when there is one (the run's scorer, or
    --checkpoint), else score.pretrained (an open_clip tag, a path, or empty for random init)."""
    pretrained = ctx.config.score.pretrained
    checkpoint = ctx.inputs.get("checkpoint")
    if checkpoint:
        if not fs.exists(checkpoint):
            raise InputError(f"scorer checkpoint not found: {checkpoint}",
                             "run the `scorer` stage first, or pass --checkpoint PATH or --pretrained TAG")
        return checkpoint
    if pretrained == RUN_SCORER:
        raise InputError("score.pretrained is 'run:scorer' but no checkpoint was given",
                         "pass --checkpoint PATH (the scorer stage's checkpoint.pt) or --pretrained TAG")
    return pretrained


def runs_locally(beam_args: list[str]) -> bool:
    """Whether the pipeline's workers are this machine (the pinned local runner, Direct, Prism),
    so that this machine's devices are the workers' devices."""
    runner = ""
    for i, arg in enumerate(beam_args):
        if arg.startswith("--runner="):
            runner = arg.split("=", 1)[1]
        elif arg == "--runner" and i + 1 < len(beam_args):
            runner = beam_args[i + 1]
    return not runner or any(name in runner.lower() for name in ("direct", "fnapi", "prism"))


def check_model(model_name: str, weights: str) -> tuple[Any, int]:
    """Load the model once in the launcher: a bad name or checkpoint fails here as one clear
    line, before any worker starts; returns its eval preprocessing and input size."""
    from witcurate.trainer.model import create_model
    try:
        model, _, preprocess, _ = create_model(model_name, local_weights(weights), "cpu")
    except UserError:
        raise
    except FileNotFoundError:
        raise UserError(f"checkpoint not found: {weights}", "pass an existing checkpoint or an open_clip tag") from None
    except Exception as e:  # download failures, odd files: never a traceback for the user
        raise UserError(f"cannot load open_clip {model_name} with {weights or 'random init'!r}: "
                        f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}",
                        "check --model and --pretrained (open_clip.list_pretrained()) or the checkpoint path") from None
    size = model_input_size(model)
    del model
    return preprocess, size
