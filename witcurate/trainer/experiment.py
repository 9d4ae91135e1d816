"""The curation experiment: what does each curation step buy at equal compute?

The same small model is trained on the same number of samples (steps x batch size) on each arm
of an ablation (trainer/ablation.py): raw (every downloaded image), the CLIP threshold, + semantic
dedup, + the target filter, and both. An arm with fewer samples repeats more epochs. Each arm
runs several seeds (a seed fixes the initial weights and the data order; arms share seeds), and
every run is evaluated zero-shot and on retrieval on the same eval set. Results go to
OUT/experiment/results.json and, as a table of means and spreads, into the run's dataset card,
with the combination the table chose and the one the config in use switches on.

    witcurate experiment --run runs/experiment [--seeds 3] [--steps 600] [--default configs/demo.yaml]

Resumable: the arms' stages are skipped when done; each (arm, seed) trains in
OUT/experiment/runs/ARM-seedS/ and writes result.json when done; a rerun skips finished runs and
resumes an interrupted one from its checkpoint (when its settings and data are unchanged).
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
from witcurate.trainer.ablation import ARMS, RAW, build_arm, raw_shards  # noqa: F401 (raw_shards: API)
from witcurate.trainer.verdict import card_markdown, format_table

if TYPE_CHECKING:
    from witcurate.trainer.train import TrainArgs

DEFAULT_STEPS = 240
DEFAULT_SEEDS = 3
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


# --- the summary ---------------------------------------------------------------------------------

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
    """The training settings every arm shares; the batch must fit the smallest arm."""
    from witcurate.trainer.train import TrainArgs

    base = TrainArgs.from_section(config.train, max_steps=steps, eval_dir=eval_dir, checkpoint_every=50,
                                  keep_step_checkpoints=False, print_every=30.0)
    if batch_size:
        base.batch_size = batch_size
    if device:
        base.device = device
    if min(samples.values()) < base.batch_size:
        raise UserError(f"batch size {base.batch_size} is larger than an arm ({samples})",
                        f"pass --batch-size {min(samples.values())} or less: every arm must train at the same batch size")
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


def _arm_data(run_dir: str, exp_dir: str, config: Config, beam_args: list[str],
              progress: Callable[[str], None]) -> tuple[dict[str, list[dict[str, Any]]], dict[str, int]]:
    """Every arm's shards (built, or found done) and sample count."""
    from witcurate.pipeline.shards import MANIFEST_NAME

    raw_dir = fs.join(exp_dir, "raw_shards")
    raw = raw_shards(fs.join(run_dir, "download"), raw_dir, config, progress)
    data, samples = {RAW: _shard_list(raw_dir, raw["shards"])}, {RAW: raw["totals"]["samples"]}
    for arm in ARMS[1:]:
        shards_dir = build_arm(run_dir, exp_dir, arm, config, beam_args, progress)
        manifest = fs.read_json(fs.join(shards_dir, MANIFEST_NAME))
        data[arm], samples[arm] = _shard_list(shards_dir, manifest["shards"]), manifest["totals"]["samples"]
    for arm in ARMS:
        if not data[arm]:
            raise InputError(f"the {arm} arm has no samples", "check the run's score and download stages")
    return data, samples


def _default(config: Config, default_config: str | None) -> dict[str, Any]:
    """The combination of the config in use: `default_config` (e.g. configs/demo.yaml) or the run's."""
    from witcurate.config import load_config
    from witcurate.trainer.ablation import arm_of

    chosen = load_config(default_config, []) if default_config else config
    return {"source": default_config or "this run's config", "semdedup": chosen.semdedup.enabled,
            "target": chosen.target.enabled, "arm": arm_of(chosen.semdedup.enabled, chosen.target.enabled)}


def run_experiment(run_dir: str, seeds: int = DEFAULT_SEEDS, steps: int = DEFAULT_STEPS,
                   eval_dir: str | None = None, batch_size: int | None = None, device: str | None = None,
                   default_config: str | None = None, beam_args: list[str] | None = None,
                   progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or finish) the ablation on a finished run directory; returns the results dict."""
    from witcurate.pipeline.card import add_card_section
    from witcurate.trainer.ablation import TITLES
    from witcurate.trainer.verdict import choose

    if seeds < 1 or steps < 1:
        raise UserError("--seeds and --steps must be at least 1")
    _, config, eval_dir = _finished_run(run_dir, eval_dir)
    default = _default(config, default_config)
    exp_dir = fs.join(run_dir, "experiment")
    started = time.time()
    data, samples = _arm_data(run_dir, exp_dir, config, list(beam_args or []), progress)
    base = _base_args(config, steps, eval_dir, batch_size, device, samples)
    seed_list = [config.run.seed + i for i in range(seeds)]
    arms: dict[str, Any] = {}
    for arm in ARMS:
        runs = _train_arm(arm, data[arm], base, seed_list, exp_dir, min(samples.values()), progress)
        arms[arm] = {"title": TITLES[arm], "samples": samples[arm], "epochs": round(steps * base.batch_size / samples[arm], 2),
                     "shards": [d["path"] for d in data[arm]], "runs": runs, "summary": summarize(runs)}
    results = {"run": run_dir, "model": base.model, "steps": steps, "batch_size": base.batch_size,
               "samples_seen": steps * base.batch_size, "seeds": seed_list, "eval_dir": eval_dir, "arms": arms,
               "default": default, "results_path": fs.join(exp_dir, RESULTS),
               "seconds": round(time.time() - started, 1)}
    results["chosen"] = choose(results)
    results["table"] = format_table(results)
    fs.write_json(fs.join(exp_dir, RESULTS), results)
    add_card_section(fs.join(run_dir, "shards"), "experiment",
                     "Curation experiment: which steps help, at equal compute", card_markdown(results))
    return results
