"""The score stage: CLIP score every image-text pair with an open_clip model, keep by a rule.

Also a standalone filtering job: `witcurate score --in DIR --out DIR --model ViT-B-32
--pretrained openai --threshold 0.28`, where DIR is either a dedupe stage directory (rows
naming an image `shard` and `key` in the download stage's tars, given by --images) or any plain
img2dataset output folder (NNNNN.tar + NNNNN.parquet, or NNNNN.parquet with image bytes).

Beam graph (image bytes never cross a shuffle; only metadata rows are grouped):

    rows -> (shard, row) -> GroupByKey -> ReadAndPreprocess: read the shard once, decode and
    apply the model's own preprocessing in a thread pool that runs ahead of the model
         -> RunInference(ClipScoreModelHandler): batched, model loaded once per worker process
         -> AttachScore: clip_score, clip_model; embeddings to a side output
         -> keep rule: threshold (one pass) or top_fraction (a global cutoff computed by a
            combine over all scores, as a side input: the second pass)

On Dataflow with GPU workers, either give the whole job GPUs with `--dataflow_service_options=
"worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver"`, or only this stage's
inference step with `score.accelerator: "type:nvidia-l4;count:1;install-nvidia-driver"` (a Beam
resource hint), plus a custom SDK container with CUDA torch (`--sdk_container_image`, built from
the repo's Dockerfile) and `--experiments=no_use_multiple_sdk_containers` or `score.share_model:
true` so one model copy serves the GPU. With `score.device: auto` the handler uses the GPU where
it finds one and autocasts to `score.precision`; decoding stays on the worker CPUs
(score.num_workers threads per DoFn instance), so raise score.batch_size until decoding, not the
model, is the bound.
"""

from __future__ import annotations

import collections
import io
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Iterator

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.ml.inference.base import RunInference

from witcurate import schemas
from witcurate.config import Config
from witcurate.errors import ConfigError, InputError, UserError
from witcurate.filters import clip_score as rules
from witcurate.pipeline import fs, image_source
from witcurate.pipeline.beam_io import (KEPT, REJECTED, WriteStageOutputs, make_pipeline, read_stage,
                                        reject, run_pipeline)
from witcurate.pipeline.inference import ClipScoreModelHandler, ScoreInput, local_weights, model_label
from witcurate.pipeline.runner import StageContext, StageResult
from witcurate.pipeline.tables import count_rows, parquet_files
from witcurate.pipeline.stages import BaseStage, Option, stage_dir

RUN_SCORER = "run:scorer"           # score.pretrained: the checkpoint of this run's scorer stage
EMBEDDINGS_DIR = "embeddings"
EMBEDDINGS_TAG = "embeddings"

# Reduced-size JPEG decoding (Pillow's draft) asks the decoder for at least this many times the
# model's input size, so the antialiased bicubic resize that follows still averages >= 2 source
# pixels per output pixel; images below 4x the input (the DCT scales by 1/2, 1/4, 1/8) decode in
# full, exactly as the reference preprocessing does.
DRAFT_FACTOR = 2

EMBEDDINGS = pa.schema([
    ("uid", pa.string()),
    ("image_embedding", pa.list_(pa.float16())),    # L2-normalised
    ("text_embedding", pa.list_(pa.float16())),
])


# --- image decoding ---------------------------------------------------------------------------

def prepare_image(data: bytes, preprocess: Any, input_size: int) -> Any:
    """Decode image bytes and apply the model's own eval preprocessing (a CHW float tensor).

    JPEGs much larger than the model input are decoded at a reduced size (Pillow's draft), which
    skips most of the decode work without going below DRAFT_FACTOR x the input size.
    """
    from PIL import Image
    with Image.open(io.BytesIO(data)) as img:
        if img.format == "JPEG" and min(img.size) >= 2 * DRAFT_FACTOR * input_size:
            target = DRAFT_FACTOR * input_size
            img.draft("RGB", (target, target))
        img.load()
        return preprocess(img)


def model_input_size(model: Any) -> int:
    size = getattr(model.visual, "image_size", 224)
    return int(min(size) if isinstance(size, (tuple, list)) else size)


class ReadAndPreprocess(beam.DoFn):
    """(shard, rows) -> ScoreInput per readable image; unreadable ones -> rejects.

    Each shard is read once, front to back. Decoding and preprocessing run in a thread pool
    (Pillow and torch release the GIL) that works `prefetch` images ahead, so while the model
    runs on one batch downstream, the next batch is being decoded.
    """

    def __init__(self, images_dir: str, preprocess: Any, input_size: int, threads: int, prefetch: int):
        self.images_dir = images_dir
        self.preprocess = preprocess
        self.input_size = input_size
        self.threads = threads
        self.prefetch = max(1, prefetch)
        self._pool: ThreadPoolExecutor | None = None

    def setup(self):
        if self.threads > 0:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="witcurate-decode")

    def teardown(self):
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def process(self, element):
        shard, rows = element
        pending: collections.deque = collections.deque()
        for item in image_source.read_shard(self.images_dir, shard, rows):
            if item.data is None:
                yield beam.pvalue.TaggedOutput(REJECTED, reject(item.row, rules.REASON_UNREADABLE, item.error))
                continue
            pending.append((item.row, self._submit(item.data)))
            while len(pending) > self.prefetch:
                yield from self._emit(*pending.popleft())
        while pending:
            yield from self._emit(*pending.popleft())

    def _submit(self, data: bytes):
        if self._pool is None:
            return _Done(lambda: prepare_image(data, self.preprocess, self.input_size))
        return self._pool.submit(prepare_image, data, self.preprocess, self.input_size)

    def _emit(self, row: dict[str, Any], future) -> Iterator[Any]:
        try:
            tensor = future.result()
        except Exception as e:  # any decode failure (corrupt, truncated, bomb, odd mode) is a reject
            detail = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
            yield beam.pvalue.TaggedOutput(REJECTED, reject(row, rules.REASON_UNREADABLE, detail))
            return
        yield ScoreInput(tensor, str(row.get("caption") or ""), row)


class _Done:
    """A completed 'future' for inline decoding (num_workers 0)."""

    def __init__(self, fn):
        self._fn = fn

    def result(self):
        return self._fn()


# --- after inference ---------------------------------------------------------------------------

class AttachScore(beam.DoFn):
    """PredictionResult -> the row with clip_score and clip_model; embeddings to a side output."""

    def __init__(self, label: str):
        self.label = label

    def process(self, result):
        row, score = result.example, result.inference
        out = dict(row)
        out["clip_score"] = rules.as_stored(score.score)
        out["clip_model"] = self.label
        yield out
        yield beam.pvalue.TaggedOutput(
            EMBEDDINGS_TAG, (str(row["uid"]), score.image_embedding, score.text_embedding))


def embeddings_table(batch: list[tuple[str, np.ndarray, np.ndarray]]) -> pa.Table:
    """A parquet-ready table of (uid, image_embedding, text_embedding), float16, one row a uid."""
    uids = [u for u, _, _ in batch]

    def column(vectors: list[np.ndarray]) -> pa.Array:
        flat = np.stack(vectors).astype(np.float16)
        offsets = np.arange(0, flat.size + 1, flat.shape[1], dtype=np.int32)
        return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat.reshape(-1)))

    return pa.Table.from_arrays(
        [pa.array(uids, pa.string()), column([i for _, i, _ in batch]), column([t for _, _, t in batch])],
        schema=EMBEDDINGS)


def score_and_tie(row: dict[str, Any]) -> tuple[float, int]:
    return row["clip_score"], rules.tie_hash(str(row["uid"]))


class ScoreHistogram(beam.CombineFn):
    """Counts of scores per `rules.score_bin` (a fixed 8 MB array, however many pairs)."""

    def create_accumulator(self):
        return np.zeros(1 << rules.BIN_BITS, dtype=np.int64)

    def add_input(self, acc, score):
        acc[rules.score_bin(score)] += 1
        return acc

    def merge_accumulators(self, accs):
        accs = iter(accs)
        total = next(accs).copy()
        for acc in accs:
            total += acc
        return total

    def extract_output(self, acc):
        return acc


def _in_cutoff_bin(pair: tuple[float, int], where: dict[str, int] | None):
    if where is not None and rules.score_bin(pair[0]) == where["bin"]:
        yield pair


class TopFractionCutoff(beam.PTransform):
    """Scored rows -> the one `rules.Cutoff` of keeping the top `fraction` of them (or None).

    Exact, in two passes, without gathering every score in one place: a histogram locates
    the bin holding the cutoff, then only that bin's (score, tie hash) pairs are ranked."""

    def __init__(self, fraction: float):
        super().__init__()
        self.fraction = fraction

    def expand(self, scored):
        pairs = scored | "ScoreAndTie" >> beam.Map(score_and_tie)
        where = (pairs
                 | "Scores" >> beam.Map(lambda pair: pair[0])
                 | "Histogram" >> beam.CombineGlobally(ScoreHistogram())
                 | "LocateCutoff" >> beam.Map(rules.locate_cutoff, self.fraction))
        return (pairs
                | "InCutoffBin" >> beam.FlatMap(_in_cutoff_bin, beam.pvalue.AsSingleton(where))
                | "CutoffBin" >> beam.combiners.ToList()
                | "RankCutoffBin" >> beam.Map(rules.cutoff_in_bin, beam.pvalue.AsSingleton(where)))


class ApplyKeepRule(beam.DoFn):
    """Scored row -> kept (SCORED) or a `clip_score_below` reject naming the threshold used."""

    def __init__(self, rule: rules.KeepRule):
        self.rule = rule

    def process(self, row, cutoff=None):
        if self.rule.kind == "threshold":
            verdict = rules.keep_by_threshold(row["clip_score"], self.rule.value)
            used = self.rule.value
        else:
            verdict = rules.keep_by_cutoff(row["clip_score"], rules.tie_hash(str(row["uid"])), cutoff)
            used = cutoff.score if cutoff is not None else None
        if verdict is True:
            yield row
        else:
            yield beam.pvalue.TaggedOutput(
                REJECTED, reject(row, verdict.reason, rules.below_detail(row["clip_score"], self.rule, used)))


def key_by_shard(row: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return str(row["shard"]), row


# --- inputs -----------------------------------------------------------------------------------

@dataclass
class ScoreInputs:
    mode: str                    # "stage" (a dedupe stage dir) or "img2dataset" (a plain folder)
    rows_dir: str
    images_dir: str
    parquets: list[str]          # img2dataset mode: its NNNNN.parquet files
    n_in: int | None             # None: the runner counts the stage dir's rows


_INPUT_HINT = ("--in takes a dedupe stage directory (part-*.parquet with the dedupe columns, images "
               "under --images) or a plain img2dataset output folder (NNNNN.tar + NNNNN.parquet)")


def resolve_inputs(ctx: StageContext) -> ScoreInputs:
    """Which of the two accepted inputs `--in` is, validated; an InputError otherwise."""
    in_dir = ctx.input("in")
    parts = parquet_files(in_dir)
    if parts or fs.exists(fs.join(in_dir, "_SUCCESS.json")):
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

    parquets = image_source.img2dataset_parquets(in_dir)
    if parquets:
        for path in parquets:
            with fs.open_file(path) as f:
                names = set(pq.ParquetFile(f).schema_arrow.names)
            missing = [c for c in image_source.IMG2DATASET_COLUMNS if c not in names]
            if missing:
                raise InputError(f"{path} lacks img2dataset column(s) {', '.join(missing)}",
                                 "run img2dataset with --caption_col so captions are saved; " + _INPUT_HINT)
        return ScoreInputs("img2dataset", in_dir, in_dir, parquets,
                           image_source.count_img2dataset_successes(parquets))
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


def check_model(model_name: str, weights: str):
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


# --- the stage ---------------------------------------------------------------------------------

class ScoreStage(BaseStage):
    name = "score"
    sections = ("score",)
    inputs = ("in", "images", "checkpoint")
    options = (
        Option("--model", "score.model", "open_clip model name (ViT-B-32, witcurate-tiny, ...)"),
        Option("--pretrained", "score.pretrained",
               "open_clip pretrained tag (openai, laion2b_s34b_b79k, ...), a checkpoint path, or run:scorer"),
        Option("--threshold", "score.threshold", "keep pairs whose cosine score is >= this (e.g. 0.28)", float),
        Option("--top-fraction", "score.top_fraction", "keep this fraction of pairs, best scores first (e.g. 0.3)", float),
        Option("--batch-size", "score.batch_size", "inference batch size", int),
        Option("--device", "score.device", "auto, cpu or cuda"),
    )

    def default_inputs(self, config: Config, out_root: str) -> dict[str, str]:
        inputs = {"in": stage_dir(out_root, "dedupe"), "images": stage_dir(out_root, "download")}
        if config.score.pretrained == RUN_SCORER:
            inputs["checkpoint"] = fs.join(stage_dir(out_root, "scorer"), "checkpoint.pt")
        return inputs

    def run(self, ctx: StageContext) -> StageResult:
        from witcurate.trainer.model import resolve_device
        cfg = ctx.config.score
        rule = rules.keep_rule(cfg.threshold, cfg.top_fraction)
        if cfg.num_workers < 0:
            raise ConfigError(f"score.num_workers must be >= 0, got {cfg.num_workers}",
                              "0 decodes inline; 2 or more decode ahead of the model")
        device = cfg.device
        if runs_locally(ctx.beam_args):   # "cuda" on a machine without one: say so before starting
            device = str(resolve_device(cfg.device))
        source = resolve_inputs(ctx)
        weights = resolve_weights(ctx)
        label = model_label(cfg.model, weights)
        handler = ClipScoreModelHandler(
            cfg.model, weights, device=cfg.device, precision=cfg.precision,
            min_batch_size=cfg.min_batch_size if cfg.min_batch_size is not None else cfg.batch_size,
            max_batch_size=cfg.batch_size, share_model_across_processes=cfg.share_model,
            accelerator=cfg.accelerator, cpu_threads=cfg.cpu_threads)
        preprocess, input_size = check_model(cfg.model, weights)
        ctx.progress(f"[score] {label} ({input_size}px input, device {device}), {rule.describe()}, "
                     f"input: {source.mode} {source.rows_dir}")

        p = make_pipeline(ctx.beam_args)
        if source.mode == "stage":
            rows = read_stage(p, source.rows_dir, "ReadIn")
        else:
            rows = (p | "ListShards" >> beam.Create(source.parquets)
                      | "ReadImg2dataset" >> beam.FlatMap(image_source.img2dataset_rows)
                      | "CompleteRows" >> beam.ParDo(StandaloneRow()))
        decoded = (rows
                   | "KeyByShard" >> beam.Map(key_by_shard)
                   | "GroupByShard" >> beam.GroupByKey()
                   | "ReadAndPreprocess" >> beam.ParDo(ReadAndPreprocess(
                       source.images_dir, preprocess, input_size, cfg.num_workers,
                       prefetch=max(2 * cfg.batch_size, 2 * cfg.num_workers))).with_outputs(REJECTED, main="images"))
        scored = (decoded["images"]
                  | "RunInference" >> RunInference(handler)
                  | "AttachScore" >> beam.ParDo(AttachScore(label)).with_outputs(EMBEDDINGS_TAG, main="scored"))
        (scored[EMBEDDINGS_TAG]
         | "BatchEmbeddings" >> beam.BatchElements(min_batch_size=256, max_batch_size=4096)
         | "EmbeddingsTable" >> beam.Map(embeddings_table)
         | "WriteEmbeddings" >> beam.io.WriteToParquetBatched(
             fs.join(ctx.tmp_dir, EMBEDDINGS_DIR, "part"), EMBEDDINGS, file_name_suffix=".parquet"))

        if rule.kind == "threshold":
            decided = scored["scored"] | "Threshold" >> beam.ParDo(ApplyKeepRule(rule)).with_outputs(REJECTED, main=KEPT)
        else:
            cutoff = scored["scored"] | "Cutoff" >> TopFractionCutoff(rule.value)
            decided = scored["scored"] | "TopFraction" >> beam.ParDo(
                ApplyKeepRule(rule), cutoff=beam.pvalue.AsSingleton(cutoff)).with_outputs(REJECTED, main=KEPT)
        rejected = ((decoded[REJECTED], decided[REJECTED]) | "AllRejects" >> beam.Flatten())
        {KEPT: decided[KEPT], REJECTED: rejected} | "Write" >> WriteStageOutputs(ctx.tmp_dir, schemas.SCORED)

        start = time.time()
        run_pipeline(p)
        wall = time.time() - start

        n_scored = count_rows(fs.join(ctx.tmp_dir, EMBEDDINGS_DIR))
        if rule.kind == "threshold":
            threshold_used = rule.value
        else:
            threshold_used = _min_kept_score(ctx.tmp_dir)
        return StageResult(
            n_in=source.n_in, units="images",
            extra={
                "images_per_second": round(n_scored / wall, 2) if wall > 0 else None,
                "images_scored": n_scored,
                "threshold_used": threshold_used,
                "keep_rule": {"kind": rule.kind, "value": rule.value},
                "model": label,
                "input_mode": source.mode,
                "embeddings": f"{EMBEDDINGS_DIR}/part-*.parquet",
            })


def _min_kept_score(directory: str) -> float | None:
    """The effective threshold of a top_fraction run: the lowest kept score."""
    lowest = None
    for path in parquet_files(directory):
        with fs.open_file(path) as f:
            col = pq.read_table(f, columns=["clip_score"]).column("clip_score").to_numpy()
        if len(col):
            m = float(col.min())
            lowest = m if lowest is None else min(lowest, m)
    return lowest
