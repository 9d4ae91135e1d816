"""The curation experiment: what does curation buy at equal compute?

The same small model is trained for the same number of steps at the same batch size on two arms:
    curated   OUT/shards, the pipeline's output
    raw       every image the download stage kept (OUT/download rows + images/*.tar): before
              dedupe, CLIP-score filtering and the per-query cap, written by the shards stage
              itself, run on the download output, into OUT/experiment/raw_shards/
with several seeds each (a seed fixes the initial weights and the data order; arms share seeds),
and every run is evaluated zero-shot and on retrieval on the same eval set. Results go to
OUT/experiment/results.json and, as a table of means and spreads, into the dataset card.

    witcurate experiment --run runs/demo [--seeds 3] [--steps 240]

Resumable: each (arm, seed) trains in OUT/experiment/runs/ARM-seedS/ and writes result.json
when done; a rerun skips finished runs and resumes an interrupted one from its checkpoint
(when its settings and data are unchanged).
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import time
from typing import TYPE_CHECKING, Any, Callable

from witcurate.config import Config
from witcurate.errors import InputError, UserError
from witcurate.pipeline import fs

if TYPE_CHECKING:
    from witcurate.trainer.train import TrainArgs

DEFAULT_STEPS = 240
DEFAULT_SEEDS = 3
ARMS = ("curated", "raw")
RUN_SPEC = "run_spec.json"
RESULT = "result.json"
RESULTS = "results.json"

# (results key, column title): what the table reports, in order.
METRICS = (
    ("zeroshot/top1", "zero-shot top-1"),
    ("zeroshot/top5", "zero-shot top-5"),
    ("retrieval/image_to_text_R@1", "image→text R@1"),
    ("retrieval/image_to_text_R@5", "image→text R@5"),
    ("retrieval/text_to_image_R@1", "text→image R@1"),
    ("retrieval/text_to_image_R@5", "text→image R@5"),
)


# --- the raw arm's shards -----------------------------------------------------------------------

def raw_shards(download_dir: str, out_dir: str, config: Config,
               progress: Callable[[str], None] = print) -> dict[str, Any]:
    """The shards stage itself, run on the download stage's output: every image it kept, in the
    curated shards' layout (uid order, cut every shards.samples_per_shard). Returns its manifest.

    The score and cap columns are absent from those rows, so the raw samples ship without a CLIP
    score or an assigned query. Like any stage it is skipped when already done from the same
    download output and settings, and a row that cannot be shipped (its image missing, a uid seen
    twice) is a reject with its reason in OUT/experiment/raw_shards/rejects/.
    """
    from witcurate.pipeline.runner import run_stage
    from witcurate.pipeline.shards import MANIFEST_NAME, ShardsStage

    if not fs.exists(fs.join(download_dir, "_SUCCESS.json")):
        raise InputError(f"{download_dir} has no _SUCCESS.json", "run the pipeline first (`make dataset`)")
    landed = run_stage(ShardsStage(), config, out_dir, {"in": download_dir, "images": download_dir},
                       [], progress=lambda msg: progress(f"[experiment] raw arm: {msg}"))
    if landed["counts"]["kept"] == 0:
        raise InputError(f"no samples from {download_dir}", "the raw arm needs the download stage's output")
    return fs.read_json(fs.join(out_dir, MANIFEST_NAME))


# --- one training run ----------------------------------------------------------------------------

def run_one(args: Any, data: list[str], run_dir: str, progress: Callable[[str], None]) -> dict[str, Any]:
    """Train and evaluate one (arm, seed), or return its result if it already finished.

    The spec (settings + shard paths and sha256s) decides whether what is in run_dir belongs to
    this run: a different spec starts over, the same one resumes or is skipped.
    """
    from witcurate.trainer.train import train

    settings = {k: v for k, v in dataclasses.asdict(args).items() if k not in ("print_every", "stop_at_step")}
    spec = json.loads(json.dumps({"args": settings, "data": data}))
    spec_path, result_path = fs.join(run_dir, RUN_SPEC), fs.join(run_dir, RESULT)
    same = fs.exists(spec_path) and fs.read_json(spec_path) == spec
    if same and fs.exists(result_path):
        return {**fs.read_json(result_path), "skipped": True}
    if not same:
        fs.rm(run_dir)
        fs.makedirs(run_dir)
        fs.write_json(spec_path, spec)
    metrics = train(args, [d["path"] for d in data], run_dir, progress=progress, resume=same)
    if "eval" not in metrics:
        raise UserError(f"the run in {run_dir} finished without an evaluation",
                        "check the eval set (zeroshot/ and retrieval-*.tar)")
    result = {"seed": args.seed, "steps": metrics["steps"], "global_batch_size": metrics["global_batch_size"],
              "num_samples": metrics["num_samples"], "final_loss": metrics["final_loss"],
              "samples_per_second": metrics["samples_per_second"], "eval": metrics["eval"]}
    fs.write_json(result_path, result)
    for name in ("checkpoint.pt", "checkpoints"):     # finished: the result and model.pt are what stay
        fs.rm(fs.join(run_dir, name))
    return result


# --- the table -----------------------------------------------------------------------------------

def metric_value(ev: dict[str, Any], key: str) -> float | None:
    group, name = key.split("/", 1)
    value = (ev.get(group) or {}).get(name)
    return None if value is None else float(value)


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """{metric: {mean, std, n}} over runs (std: sample standard deviation, 0 for one run)."""
    out = {}
    for key, _ in METRICS:
        values = [v for v in (metric_value(r["eval"], key) for r in runs) if v is not None]
        if values:
            out[key] = {"mean": statistics.fmean(values),
                        "std": statistics.stdev(values) if len(values) > 1 else 0.0, "n": len(values)}
    return out


def format_table(results: dict[str, Any]) -> str:
    arms = results["arms"]
    lines = ["| metric | " + " | ".join(f"{a} ({arms[a]['samples']:,} samples)" for a in arms)
             + " | curated − raw |",
             "|---|" + "---:|" * (len(arms) + 1)]
    for key, title in METRICS:
        cells, means = [], {}
        for a in arms:
            s = arms[a]["summary"].get(key)
            cells.append(f"{s['mean']:.3f} ± {s['std']:.3f}" if s else "–")
            if s:
                means[a] = s["mean"]
        diff = f"{means['curated'] - means['raw']:+.3f}" if {"curated", "raw"} <= set(means) else "–"
        lines.append(f"| {title} | " + " | ".join(cells) + f" | {diff} |")
    return "\n".join(lines)


def card_markdown(results: dict[str, Any]) -> str:
    n_seeds = len(results["seeds"])
    raw = results["arms"]["raw"]
    return "\n".join([
        f"The same model (`{results['model']}`) trained for the same {results['steps']} steps at batch "
        f"size {results['batch_size']} (equal compute) on the curated shards and on raw shards: every image "
        f"the download stage kept ({raw['samples']:,} samples), before dedupe, CLIP-score filtering and the "
        f"cap. {n_seeds} seed(s) per arm (seeds {', '.join(map(str, results['seeds']))}, shared by both arms); "
        f"mean ± sample standard deviation, evaluated on `{results['eval_dir']}`.",
        "",
        format_table(results),
        "",
        f"Produced by `witcurate experiment --run {results['run']}`; per-run numbers are in "
        f"`{results['results_path']}`.",
    ])


# --- the experiment ------------------------------------------------------------------------------

def _shard_list(shards_dir: str, shards: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"path": fs.join(shards_dir, s["tar"]), "sha256": s["sha256"]} for s in shards if s["samples"]]


def _finished_run(run_dir: str, eval_dir: str | None) -> tuple[dict[str, Any], Config, str]:
    """The curated shards' manifest, the run's config and the eval set, or a one-line error."""
    from witcurate.config import from_dict

    manifest_path = fs.join(run_dir, "shards", "manifest.json")
    if not fs.exists(manifest_path):
        raise InputError(f"no curated shards in {fs.join(run_dir, 'shards')} (manifest.json missing)",
                         "run the pipeline through the shards stage first (`make dataset`)")
    manifest = fs.read_json(manifest_path)
    config = from_dict(manifest.get("config") or {})
    config.shards.samples_per_shard = int(manifest.get("samples_per_shard") or config.shards.samples_per_shard)
    eval_dir = eval_dir or config.train.eval_dir
    if not eval_dir or not fs.exists(eval_dir):
        raise UserError(f"eval set not found: {eval_dir or '(train.eval_dir is empty)'}",
                        "pass --eval DIR (zeroshot/ and retrieval-*.tar)")
    return manifest, config, eval_dir


def _base_args(config: Config, steps: int, eval_dir: str, batch_size: int | None, device: str | None,
               samples: dict[str, int]) -> TrainArgs:
    """The training settings both arms share; the batch must fit the smaller arm."""
    from witcurate.trainer.train import TrainArgs

    base = TrainArgs.from_section(config.train, max_steps=steps, eval_dir=eval_dir, checkpoint_every=50,
                                  keep_step_checkpoints=False, print_every=30.0)
    if batch_size:
        base.batch_size = batch_size
    if device:
        base.device = device
    if min(samples.values()) < base.batch_size:
        raise UserError(f"batch size {base.batch_size} is larger than an arm ({samples})",
                        f"pass --batch-size {min(samples.values())} or less: both arms must train at the same batch size")
    return base


def _train_arm(arm: str, data: list[dict[str, Any]], base: TrainArgs, seeds: list[int], exp_dir: str,
               smallest_arm: int, progress: Callable[[str], None]) -> list[dict[str, Any]]:
    """Every seed of one arm, each resumed or skipped when already done; refuses unequal compute."""
    runs = []
    for seed in seeds:
        args = dataclasses.replace(base, seed=seed)
        run_path = fs.join(exp_dir, "runs", f"{arm}-seed{seed}")
        t0 = time.time()
        result = run_one(args, data, run_path,
                         progress=lambda msg, tag=f"{arm} seed {seed}": progress(f"[{tag}] {msg}"))
        if result.pop("skipped", False):
            progress(f"[experiment] {arm} seed {seed}: already done, skipped")
        else:
            progress(f"[experiment] {arm} seed {seed}: {result['steps']} steps in {time.time() - t0:.0f} s")
        if result["steps"] != base.max_steps or result["global_batch_size"] != base.batch_size:
            # Equal compute is the point: a smaller batch (an arm with fewer samples than one
            # batch) or a short run would make the comparison meaningless.
            raise UserError(f"{arm} seed {seed} ran {result['steps']} steps at batch "
                            f"{result['global_batch_size']}, not {base.max_steps} at {base.batch_size}",
                            f"lower --batch-size below {smallest_arm} samples, or delete {run_path}")
        runs.append(result)
    return runs


def run_experiment(run_dir: str, seeds: int = DEFAULT_SEEDS, steps: int = DEFAULT_STEPS,
                   eval_dir: str | None = None, batch_size: int | None = None, device: str | None = None,
                   progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or finish) the experiment on a finished run directory; returns the results dict."""
    from witcurate.pipeline.card import add_card_section

    if seeds < 1 or steps < 1:
        raise UserError("--seeds and --steps must be at least 1")
    manifest, config, eval_dir = _finished_run(run_dir, eval_dir)
    shards_dir, exp_dir = fs.join(run_dir, "shards"), fs.join(run_dir, "experiment")
    raw_dir = fs.join(exp_dir, "raw_shards")
    started = time.time()
    raw = raw_shards(fs.join(run_dir, "download"), raw_dir, config, progress)
    data = {"curated": _shard_list(shards_dir, manifest["shards"]), "raw": _shard_list(raw_dir, raw["shards"])}
    samples = {"curated": manifest["totals"]["samples"], "raw": raw["totals"]["samples"]}
    for arm in ARMS:
        if not data[arm]:
            raise InputError(f"the {arm} arm has no samples", "check the run's shards and download stages")
    base = _base_args(config, steps, eval_dir, batch_size, device, samples)
    seed_list = [config.run.seed + i for i in range(seeds)]
    arms: dict[str, Any] = {}
    for arm in ARMS:
        runs = _train_arm(arm, data[arm], base, seed_list, exp_dir, min(samples.values()), progress)
        arms[arm] = {"samples": samples[arm], "shards": [d["path"] for d in data[arm]],
                     "runs": runs, "summary": summarize(runs)}
    results = {"run": run_dir, "model": base.model, "steps": steps, "batch_size": base.batch_size,
               "seeds": seed_list, "eval_dir": eval_dir, "arms": arms,
               "results_path": fs.join(exp_dir, RESULTS), "seconds": round(time.time() - started, 1)}
    results["table"] = format_table(results)
    fs.write_json(fs.join(exp_dir, RESULTS), results)
    add_card_section(shards_dir, "experiment", "Curation experiment: curated vs raw at equal compute",
                     card_markdown(results))
    return results
