"""The curation experiment: what does curation buy at equal compute?

The same small model is trained for the same number of steps at the same batch size on two arms:
    curated   OUT/shards, the pipeline's output
    raw       every image the download stage kept (OUT/download rows + images/*.tar): before
              dedupe, CLIP-score filtering and the per-query cap, written as WebDataset shards
              with the same tar writer into OUT/experiment/raw_shards/
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
import math
import statistics
import time
from typing import Any, Callable

from witcurate.errors import InputError, UserError
from witcurate.pipeline import fs

DEFAULT_STEPS = 240
DEFAULT_SEEDS = 3
ARMS = ("curated", "raw")
RAW_MANIFEST = "raw_manifest.json"
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

def _stage_fingerprint(stage_dir: str) -> str:
    path = fs.join(stage_dir, "_SUCCESS.json")
    if not fs.exists(path):
        raise InputError(f"{stage_dir} has no _SUCCESS.json", "run the pipeline first (`make dataset`)")
    return fs.read_json(path).get("fingerprint", "")


def write_raw_shards(download_dir: str, out_dir: str, samples_per_shard: int,
                     progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Shards of every image the download stage kept, ordered by uid, cut every
    `samples_per_shard` (the curated shards' layout: UID.jpg, UID.txt, UID.json).

    Skipped when out_dir's manifest was written from the same download stage output. Rows whose
    image cannot be found are counted in the manifest (`missing`), not silently dropped.
    """
    from witcurate.pipeline.tables import read_table
    from witcurate.pipeline.shards import index_image_tar, read_member, shard_name
    from witcurate.pipeline.tar_writer import TarWriter

    source = {"download": _stage_fingerprint(download_dir), "samples_per_shard": samples_per_shard}
    manifest_path = fs.join(out_dir, RAW_MANIFEST)
    if fs.exists(manifest_path):
        manifest = fs.read_json(manifest_path)
        if manifest.get("source") == source:
            return manifest
    table = read_table(download_dir, columns=["uid", "caption", "shard", "key", "url"])
    if table is None or table.num_rows == 0:
        raise InputError(f"no kept rows in {download_dir}", "the raw arm needs the download stage's output")
    rows = sorted({r["uid"]: r for r in table.to_pylist()}.values(), key=lambda r: r["uid"])
    images_dir = download_dir          # a row's `shard` is relative to the stage dir (images/00000.tar)
    index: dict[str, dict[str, tuple[str, int, int, str]]] = {}
    for shard in sorted({r["shard"] for r in rows if r["shard"]}):
        path = fs.join(images_dir, shard)
        index[shard] = index_image_tar(path) if fs.exists(path) else {}
    located = []
    missing = 0
    for r in rows:
        hit = index.get(r["shard"] or "", {}).get(r["key"] or "")
        if hit is None:
            missing += 1
        else:
            located.append((r, hit))

    fs.rm(out_dir)
    fs.makedirs(out_dir)
    n_shards = math.ceil(len(located) / samples_per_shard)
    shards, handles = [], {}
    try:
        for i in range(n_shards):
            name = f"{shard_name(i, n_shards)}.tar"
            with fs.open_file(fs.join(out_dir, name), "wb") as out:
                writer = TarWriter(out)
                for r, (member, offset, size, _) in located[i * samples_per_shard:(i + 1) * samples_per_shard]:
                    src = fs.join(images_dir, r["shard"])
                    if src not in handles:
                        handles[src] = fs.open_file(src, "rb")
                    ext = member.rsplit(".", 1)[1].lower()
                    writer.write_sample(r["uid"], {
                        "jpg" if ext == "jpeg" else ext: read_member(handles[src], offset, size),
                        "txt": (r["caption"] or "").encode("utf-8"),
                        "json": json.dumps({"uid": r["uid"], "url": r["url"], "caption": r["caption"]},
                                           ensure_ascii=False, sort_keys=True).encode("utf-8"),
                    })
                summary = writer.close()
            shards.append({"tar": name, "samples": summary.samples, "bytes": summary.bytes,
                           "sha256": summary.sha256})
    finally:
        for h in handles.values():
            h.close()
    fs.write_json(fs.join(out_dir, "sizes.json"), {s["tar"]: s["samples"] for s in shards})
    manifest = {"source": source, "rows": len(rows), "samples": len(located), "missing": missing,
                "shards": shards}
    fs.write_json(manifest_path, manifest)     # last: its presence means the shards are complete
    progress(f"[experiment] raw arm: {len(located)} samples in {len(shards)} shard(s)"
             + (f", {missing} row(s) without an image" if missing else ""))
    return manifest


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


def run_experiment(run_dir: str, seeds: int = DEFAULT_SEEDS, steps: int = DEFAULT_STEPS,
                   eval_dir: str | None = None, batch_size: int | None = None, device: str | None = None,
                   progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or finish) the experiment on a finished run directory; returns the results dict."""
    from witcurate.config import from_dict
    from witcurate.trainer.train import TrainArgs

    if seeds < 1 or steps < 1:
        raise UserError("--seeds and --steps must be at least 1")
    shards_dir = fs.join(run_dir, "shards")
    manifest_path = fs.join(shards_dir, "manifest.json")
    if not fs.exists(manifest_path):
        raise InputError(f"no curated shards in {shards_dir} (manifest.json missing)",
                         "run the pipeline through the shards stage first (`make dataset`)")
    manifest = fs.read_json(manifest_path)
    config = from_dict(manifest.get("config") or {})
    eval_dir = eval_dir or config.train.eval_dir
    if not eval_dir or not fs.exists(eval_dir):
        raise UserError(f"eval set not found: {eval_dir or '(train.eval_dir is empty)'}",
                        "pass --eval DIR (zeroshot/ and retrieval-*.tar)")
    exp_dir = fs.join(run_dir, "experiment")
    raw_dir = fs.join(exp_dir, "raw_shards")
    started = time.time()
    raw = write_raw_shards(fs.join(run_dir, "download"), raw_dir,
                           int(manifest.get("samples_per_shard") or config.shards.samples_per_shard), progress)
    data = {"curated": _shard_list(shards_dir, manifest["shards"]),
            "raw": _shard_list(raw_dir, raw["shards"])}
    samples = {"curated": manifest["totals"]["samples"], "raw": raw["samples"]}
    for arm in ARMS:
        if not data[arm]:
            raise InputError(f"the {arm} arm has no samples", "check the run's shards and download stages")

    base = TrainArgs.from_section(config.train, max_steps=steps, eval_dir=eval_dir, checkpoint_every=50,
                                  keep_step_checkpoints=False, print_every=30.0)
    if batch_size:
        base.batch_size = batch_size
    if device:
        base.device = device
    if min(samples.values()) < base.batch_size:
        raise UserError(f"batch size {base.batch_size} is larger than an arm ({samples})",
                        f"pass --batch-size {min(samples.values())} or less: both arms must train at the same batch size")
    seed_list = [config.run.seed + i for i in range(seeds)]
    arms: dict[str, Any] = {}
    for arm in ARMS:
        runs = []
        for seed in seed_list:
            args = dataclasses.replace(base, seed=seed)
            run_path = fs.join(exp_dir, "runs", f"{arm}-seed{seed}")
            t0 = time.time()
            result = run_one(args, data[arm], run_path,
                             progress=lambda msg, tag=f"{arm} seed {seed}": progress(f"[{tag}] {msg}"))
            if result.pop("skipped", False):
                progress(f"[experiment] {arm} seed {seed}: already done, skipped")
            else:
                progress(f"[experiment] {arm} seed {seed}: {result['steps']} steps in {time.time() - t0:.0f} s")
            if result["steps"] != steps or result["global_batch_size"] != base.batch_size:
                # Equal compute is the point: a smaller batch (an arm with fewer samples than one
                # batch) or a short run would make the comparison meaningless.
                raise UserError(f"{arm} seed {seed} ran {result['steps']} steps at batch "
                                f"{result['global_batch_size']}, not {steps} at {base.batch_size}",
                                f"lower --batch-size below {min(samples.values())} samples, or delete {run_path}")
            runs.append(result)
        arms[arm] = {"samples": samples[arm], "shards": [d["path"] for d in data[arm]],
                     "runs": runs, "summary": summarize(runs)}
    results = {"run": run_dir, "model": base.model, "steps": steps, "batch_size": base.batch_size,
               "seeds": seed_list, "eval_dir": eval_dir, "arms": arms,
               "results_path": fs.join(exp_dir, RESULTS), "seconds": round(time.time() - started, 1)}
    results["table"] = format_table(results)
    fs.write_json(fs.join(exp_dir, RESULTS), results)
    from witcurate.pipeline.card import add_card_section
    add_card_section(shards_dir, "experiment", "Curation experiment: curated vs raw at equal compute",
                     card_markdown(results))
    return results
