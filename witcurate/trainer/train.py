"""The training loop: an open_clip model, ClipLoss over gathered features, AdamW with warmup and
cosine decay, gradient clipping, AMP and channels-last on CUDA, DDP under torchrun, checkpoints
every N steps with exact resume, JSON-lines metrics and a periodic progress line.

    from witcurate.trainer.train import TrainArgs, train
    metrics = train(TrainArgs(model="witcurate-tiny", epochs=5), "shards/{00000..00003}.tar", "runs/t1")

Writes into `out_dir`: checkpoint.pt (latest, resumable; its "state_dict" loads with
create_model), checkpoints/step_N.pt, metrics.jsonl, model.pt (plain state dict of the final
weights), eval.json when an eval dir is given.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.distributed as dist

from witcurate.errors import InputError, UserError
from witcurate.pipeline import fs
from witcurate.trainer import checkpoint as ckpt
from witcurate.trainer.data import LoaderSpec, count_samples, epoch_batches, expand_shards
from witcurate.trainer.distributed import DistInfo, barrier, init_distributed
from witcurate.trainer.loss import clamp_logit_scale, make_loss
from witcurate.trainer.model import create_model, resolve_device
from witcurate.trainer.optim import cosine_lr, make_optimizer, set_lr


@dataclass
class TrainArgs:
    model: str = "witcurate-tiny"
    pretrained: str = ""             # initial weights: open_clip tag or checkpoint path; empty = random
    epochs: int = 10
    batch_size: int = 64             # per rank; the global batch is batch_size x world size
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup_steps: int = 20
    grad_clip: float = 1.0           # max gradient norm; 0 turns clipping off
    checkpoint_every: int = 100      # steps; 0 = only at the end
    keep_step_checkpoints: bool = True
    device: str = "auto"
    workers: int = 1                 # DataLoader processes per rank decoding images; 0 = in-process
    precision: str = "amp"           # amp (bf16 where supported, else fp16) | amp_fp16 | amp_bf16 | fp32; CPU is fp32
    seed: int = 0
    shuffle_buffer: int = 1000
    log_every: int = 10              # steps between metrics.jsonl lines
    print_every: float = 10.0        # seconds between progress lines
    stop_at_step: int = 0            # stop (with a checkpoint) after this step; the schedule still spans all epochs
    max_steps: int = 0               # the run's length in steps, whatever the data size; 0 = epochs x steps per epoch
    eval_dir: str = ""               # zero-shot folder and retrieval tars, evaluated at the end

    @classmethod
    def from_section(cls, section: Any, **overrides: Any) -> "TrainArgs":
        """From a config section (TrainSection, ScorerSection): the fields both have, then overrides."""
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in dataclasses.asdict(section).items() if k in names}
        values.update(overrides)
        return cls(**values)


class MetricsLog:
    """metrics.jsonl on rank 0. On resume, lines after the resumed step are dropped first, so the
    file reads as one continuous run."""

    def __init__(self, path: str, enabled: bool, resume_step: int | None):
        self.path = path
        self.enabled = enabled
        if not enabled:
            return
        keep: list[str] = []
        if resume_step is not None and fs.exists(path):
            with fs.open_file(path, "r", encoding="utf-8") as f:
                for line in f:
                    try:
                        if json.loads(line).get("step", 0) <= resume_step:
                            keep.append(line.rstrip("\n"))
                    except json.JSONDecodeError:
                        continue   # a line torn by a kill
        with fs.open_file(path, "w", encoding="utf-8") as f:
            f.write("".join(line + "\n" for line in keep))

    def write(self, record: dict[str, Any]) -> None:
        if self.enabled:
            with open(self.path, "a", encoding="utf-8") if "://" not in self.path else _append_remote(self.path) as f:
                f.write(json.dumps(record, sort_keys=True) + "\n")


@contextlib.contextmanager
def _append_remote(path: str):
    """Object stores cannot append: read, add, rewrite (metrics files are small)."""
    import io
    old = ""
    if fs.exists(path):
        with fs.open_file(path, "r", encoding="utf-8") as f:
            old = f.read()
    buf = io.StringIO()
    yield buf
    with fs.open_file(path, "w", encoding="utf-8") as f:
        f.write(old + buf.getvalue())


def _autocast(device: torch.device, precision: str):
    """(autocast context factory, use a GradScaler). AMP only on CUDA; CPU trains in fp32."""
    if precision not in ("amp", "amp_bf16", "amp_fp16", "fp32"):
        raise UserError(f"unknown precision {precision!r}", "use amp, amp_bf16, amp_fp16 or fp32")
    if device.type != "cuda" or precision == "fp32":
        return contextlib.nullcontext, False
    bf16 = precision == "amp_bf16" or (precision == "amp" and torch.cuda.is_bf16_supported())
    dtype = torch.bfloat16 if bf16 else torch.float16
    return (lambda: torch.autocast("cuda", dtype=dtype)), not bf16


def _gather_rng(info: DistInfo) -> list[dict[str, Any]] | None:
    states = ckpt.rng_states()
    if not info.distributed:
        return [states]
    gathered: list[Any] = [None] * info.world_size
    dist.all_gather_object(gathered, states)
    return gathered


def _ranks_in_sync(model: torch.nn.Module, info: DistInfo) -> bool:
    """Whether every rank ended with the same weights (a checksum compared across ranks)."""
    if not info.distributed:
        return True
    with torch.no_grad():
        total = torch.stack([p.detach().double().sum() for p in model.parameters()]).sum()
    sums: list[Any] = [None] * info.world_size
    dist.all_gather_object(sums, float(total))
    return len(set(sums)) == 1


def train(args: TrainArgs, data: str | list[str], out_dir: str,
          progress: Callable[[str], None] = print, resume: bool = False) -> dict[str, Any]:
    """Train `args.model` on the shards `data`; returns the run's metrics (and "eval" if asked)."""
    device = resolve_device(args.device)
    info = init_distributed(device.type)
    if device.type == "cuda":
        device = torch.device("cuda", info.local_rank if info.distributed else (device.index or 0))
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    say = progress if info.is_main else (lambda msg: None)
    fs.makedirs(out_dir)

    torch.manual_seed(args.seed)       # the same initial weights on every rank (DDP checks shapes only)
    model, preprocess_train, preprocess_val, tokenizer = create_model(args.model, args.pretrained, "cpu")
    model = model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)

    urls = expand_shards(data)
    counts = count_samples(urls)
    total_samples = sum(counts)
    batch_size = args.batch_size
    if total_samples < batch_size * info.world_size:
        if total_samples < info.world_size:
            raise InputError(f"{total_samples} samples in {len(urls)} shard(s) cannot feed {info.world_size} ranks",
                             "add data or use fewer processes")
        # A small curated set (a tiny demo) still trains: one step an epoch on all of it.
        batch_size = total_samples // info.world_size
        say(f"[train] warning: {total_samples} samples do not fill a batch of {args.batch_size} "
            f"x {info.world_size} rank(s); using batches of {batch_size}")
    global_batch = batch_size * info.world_size
    steps_per_epoch = total_samples // global_batch
    # A fixed step count gives runs on differently sized data the same compute and schedule.
    total_steps = args.max_steps if args.max_steps > 0 else args.epochs * steps_per_epoch
    n_epochs = math.ceil(total_steps / steps_per_epoch)

    optimizer = make_optimizer(model, args.lr, args.weight_decay)
    autocast, use_scaler = _autocast(device, args.precision)
    scaler = torch.amp.GradScaler(device.type, enabled=use_scaler)
    loss_fn = make_loss(info.rank, info.world_size)

    step = 0
    latest = fs.join(out_dir, "checkpoint.pt")
    resumed_from = None
    if resume and fs.exists(latest):
        state = ckpt.load_checkpoint(latest)
        if state.get("model_name", args.model) != args.model:
            raise UserError(f"{latest} was trained as {state['model_name']}, not {args.model}",
                            "pass the same --model, or a fresh --out")
        model.load_state_dict(state["state_dict"])
        optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        step = int(state["step"])
        rngs = state.get("rng_by_rank") or [state["rng"]]
        ckpt.set_rng_states(rngs[info.rank] if len(rngs) == info.world_size else rngs[0])
        if state.get("steps_per_epoch") != steps_per_epoch or state.get("global_batch") != global_batch:
            say(f"[train] warning: resuming with {steps_per_epoch} steps/epoch x {global_batch} "
                f"(checkpoint: {state.get('steps_per_epoch')} x {state.get('global_batch')}); "
                "the run will not repeat the original exactly")
        resumed_from = step
        say(f"[train] resumed from {latest} at step {step}")
    metrics_log = MetricsLog(fs.join(out_dir, "metrics.jsonl"), info.is_main,
                             resumed_from if resume else None)

    net: torch.nn.Module = model
    if info.distributed:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)

    spec = LoaderSpec(urls=urls, batch_size=batch_size, preprocess=preprocess_train,
                      tokenize=tokenizer, seed=args.seed, rank=info.rank,
                      world_size=info.world_size, workers=args.workers,
                      shuffle_buffer=args.shuffle_buffer)
    say(f"[train] {args.model}: {total_samples} samples in {len(urls)} shard(s), "
        f"{n_epochs} epoch(s) x {steps_per_epoch} steps, global batch {global_batch}, "
        f"{info.world_size} rank(s) on {device.type}")

    def save(step_now: int, epoch_now: int) -> None:
        rngs = _gather_rng(info)
        if info.is_main:
            ckpt.save_checkpoint(out_dir, model, optimizer, scaler, step_now, epoch_now,
                                 extra={"model_name": args.model, "steps_per_epoch": steps_per_epoch,
                                        "global_batch": global_batch, "rng_by_rank": rngs,
                                        "args": dataclasses.asdict(args)},
                                 keep_step_copy=args.keep_step_checkpoints)

    stop_at = args.stop_at_step if args.stop_at_step > 0 else total_steps
    start_step = step
    start_time = time.time()
    last_print = start_time
    window_start, window_steps = start_time, 0
    last_loss = float("nan")
    last_saved = step
    net.train()
    while step < min(stop_at, total_steps):
        epoch = step // steps_per_epoch
        skip = step - epoch * steps_per_epoch
        for images, texts in epoch_batches(spec, epoch, steps_per_epoch, skip=skip):
            images = images.to(device, non_blocking=True)
            if device.type == "cuda":
                images = images.contiguous(memory_format=torch.channels_last)
            texts = texts.to(device, non_blocking=True)
            lr = cosine_lr(step, args.lr, args.warmup_steps, total_steps)
            set_lr(optimizer, lr)
            optimizer.zero_grad(set_to_none=True)
            with autocast():
                out = net(images, texts)
                image_features, text_features, logit_scale = out[0], out[1], out[2]
                loss = loss_fn(image_features, text_features, logit_scale)
            scaler.scale(loss).backward()
            grad_norm = None
            if args.grad_clip > 0:
                scaler.unscale_(optimizer)
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            clamp_logit_scale(model)
            step += 1
            window_steps += 1

            log_now = step % max(1, args.log_every) == 0 or step == total_steps or step == stop_at
            now = time.time()
            if log_now or now - last_print >= args.print_every:
                last_loss = float(loss.item())
                if not math.isfinite(last_loss):
                    raise UserError(f"training diverged at step {step} (loss {last_loss})",
                                    "lower --lr or raise --warmup-steps")
            if log_now:
                metrics_log.write({
                    "step": step, "epoch": epoch, "loss": last_loss, "lr": lr,
                    "logit_scale": float(model.logit_scale.exp().item()),
                    "grad_norm": float(grad_norm) if grad_norm is not None else None,
                    "samples_per_second": round(window_steps * global_batch / max(1e-9, now - window_start), 2),
                    "time": round(now - start_time, 3),
                })
            if now - last_print >= args.print_every or step == total_steps or step == stop_at:
                rate = window_steps * global_batch / max(1e-9, now - window_start)
                say(f"[train] epoch {epoch + 1}/{n_epochs} step {step}/{total_steps} "
                    f"loss {last_loss:.4f} lr {lr:.2e} scale {model.logit_scale.exp().item():.1f} "
                    f"{rate:.0f} samples/s")
                last_print = now
                window_start, window_steps = now, 0
            if args.checkpoint_every > 0 and step % args.checkpoint_every == 0:
                save(step, epoch)
                last_saved = step
            if step >= stop_at:
                break
    train_seconds = time.time() - start_time
    if last_saved != step:
        save(step, (step - 1) // steps_per_epoch if step else 0)
    samples_done = (step - start_step) * global_batch
    in_sync = _ranks_in_sync(model, info)
    metrics: dict[str, Any] = {
        "model": args.model,
        "steps": step,
        "total_steps": total_steps,
        "steps_per_epoch": steps_per_epoch,
        "epochs": n_epochs,
        "num_samples": total_samples,
        "num_shards": len(urls),
        "global_batch_size": global_batch,
        "world_size": info.world_size,
        "device": device.type,
        "final_loss": last_loss,
        "logit_scale": float(model.logit_scale.exp().item()),
        "train_seconds": round(train_seconds, 3),
        "samples_per_second": round(samples_done / train_seconds, 2) if train_seconds > 0 else None,
        "resumed_from": resumed_from,
        "stopped_early": step < total_steps,
        "ranks_in_sync": in_sync,
    }
    if info.is_main:
        ckpt.save_weights(model, fs.join(out_dir, "model.pt"))
        if args.eval_dir and step >= total_steps:
            from witcurate.trainer.evaluate import evaluate
            model.eval()
            metrics["eval"] = evaluate(model, preprocess_val, tokenizer, args.eval_dir, device=device)
            fs.write_json(fs.join(out_dir, "eval.json"), metrics["eval"])
            say(f"[train] eval: {format_eval(metrics['eval'])}")
    barrier(info)
    say(f"[train] done: {step} steps, {metrics['samples_per_second']} samples/s, "
        f"final loss {last_loss:.4f}")
    return metrics


def format_eval(ev: dict[str, Any]) -> str:
    parts = []
    if "zeroshot" in ev:
        z = ev["zeroshot"]
        parts.append(f"zero-shot top1 {z['top1']:.3f} top5 {z['top5']:.3f} ({z['n']} images, {z['classes']} classes)")
    if "retrieval" in ev:
        r = ev["retrieval"]
        parts.append("retrieval " + " ".join(
            f"{d}@{k} {r[f'{d}_R@{k}']:.3f}" for d in ("image_to_text", "text_to_image") for k in (1, 5, 10))
            + f" ({r['n']} pairs)")
    return "; ".join(parts) or "nothing to evaluate"
