"""The training loop: an open_clip model, ClipLoss over gathered features, AdamW with warmup and
cosine decay, gradient clipping, AMP and channels-last on CUDA, DDP under torchrun, checkpoints
every N steps with exact resume, JSON-lines metrics and a periodic progress line.

    from witcurate.trainer.train import TrainArgs, train
    metrics = train(TrainArgs(model="witcurate-tiny", epochs=5), "shards/{00000..00003}.tar", "runs/t1")

Writes into `out_dir`: checkpoint.pt (latest, resumable; its "state_dict" loads with
create_model), checkpoints/step_N.pt, metrics.jsonl, model.pt (plain state dict of the final
weights), eval.json when an eval dir is given.

Split the way open_clip_train splits its loop: set-up (trainer/setup.py), one epoch
(`train_one_epoch`), the evaluation and final metrics (`finish`), checkpoints (setup.save_checkpoint).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.distributed as dist

from witcurate.errors import UserError
from witcurate.pipeline import fs
from witcurate.trainer import checkpoint as ckpt
from witcurate.trainer.data import epoch_batches
from witcurate.trainer.distributed import DistInfo, barrier
from witcurate.trainer.instance import augment_views, instance_loss
from witcurate.trainer.loss import clamp_logit_scale
from witcurate.trainer.optim import cosine_lr, set_lr
from witcurate.trainer.setup import TrainState, save_checkpoint, set_up

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
    keep_last_checkpoints: int = 2   # step copies kept in checkpoints/, oldest deleted first; 0 = all
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
    # A self-supervised image term beside the CLIP loss (trainer/instance.py): its weight (0 = off),
    # how many images of each batch get a second view (0 = all), and its temperature.
    instance_weight: float = 0.0
    instance_views: int = 0
    instance_temperature: float = 0.1

    @classmethod
    def from_section(cls, section: Any, **overrides: Any) -> "TrainArgs":
        """From a config section (TrainSection, ScorerSection): the fields both have, then overrides."""
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in dataclasses.asdict(section).items() if k in names}
        values.update(overrides)
        return cls(**values)


@dataclass
class Clock:
    """Timing and reporting state across epochs: when the last line was printed, the window
    a throughput is measured over, the last loss read from the device, the last saved step."""
    start: float = field(default_factory=time.time)
    last_print: float = 0.0
    window_start: float = 0.0
    window_steps: int = 0
    last_loss: float = float("nan")
    last_saved: int = 0

    def __post_init__(self) -> None:
        self.last_print = self.window_start = self.start


def _ranks_in_sync(model: torch.nn.Module, info: DistInfo) -> bool:
    """Whether every rank ended with the same weights (a checksum compared across ranks)."""
    if not info.distributed:
        return True
    with torch.no_grad():
        total = torch.stack([p.detach().double().sum() for p in model.parameters()]).sum()
    sums: list[Any] = [None] * info.world_size
    dist.all_gather_object(sums, float(total))
    return len(set(sums)) == 1


def _step(state: TrainState, images: torch.Tensor, texts: torch.Tensor, lr: float):
    """One optimizer step; returns (loss tensor, grad norm or None)."""
    device, optimizer, scaler = state.device, state.optimizer, state.scaler
    images = images.to(device, non_blocking=True)
    if device.type == "cuda":
        images = images.contiguous(memory_format=torch.channels_last)
    texts = texts.to(device, non_blocking=True)
    set_lr(optimizer, lr)
    optimizer.zero_grad(set_to_none=True)
    args, n = state.args, images.shape[0]
    views = min(n, args.instance_views or n) if args.instance_weight > 0 else 0
    if views:       # one forward for both, so DDP sees one pass
        images = torch.cat([images, augment_views(images[:views])])
    with state.autocast():
        out = state.net(images, texts)
        # image features, text features, logit scale
        loss = state.loss_fn(out[0][:n], out[1], out[2])
        if views:
            loss = loss + args.instance_weight * instance_loss(out[0][:views], out[0][n:],
                                                               args.instance_temperature)
    scaler.scale(loss).backward()
    grad_norm = None
    if state.args.grad_clip > 0:
        scaler.unscale_(optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(state.model.parameters(), state.args.grad_clip)
    scaler.step(optimizer)
    scaler.update()
    clamp_logit_scale(state.model)
    return loss, grad_norm


def _report(state: TrainState, clock: Clock, epoch: int, lr: float, loss: torch.Tensor, grad_norm,
            stop_at: int) -> None:
    """The metrics line every log_every steps and the progress line every print_every seconds."""
    args, plan, step = state.args, state.plan, state.step
    last = step == plan.total_steps or step == stop_at
    log_now = step % max(1, args.log_every) == 0 or last
    now = time.time()
    if log_now or now - clock.last_print >= args.print_every:
        clock.last_loss = float(loss.item())
        if not math.isfinite(clock.last_loss):
            raise UserError(f"training diverged at step {step} (loss {clock.last_loss})",
                            "lower --lr or raise --warmup-steps")
    rate = clock.window_steps * plan.global_batch / max(1e-9, now - clock.window_start)
    if log_now:
        state.metrics_log.write({
            "step": step, "epoch": epoch, "loss": clock.last_loss, "lr": lr,
            "logit_scale": float(state.model.logit_scale.exp().item()),
            "grad_norm": float(grad_norm) if grad_norm is not None else None,
            "samples_per_second": round(rate, 2), "time": round(now - clock.start, 3),
        })
    if now - clock.last_print >= args.print_every or last:
        state.say(f"[train] epoch {epoch + 1}/{plan.n_epochs} step {step}/{plan.total_steps} "
                  f"loss {clock.last_loss:.4f} lr {lr:.2e} scale {state.model.logit_scale.exp().item():.1f} "
                  f"{rate:.0f} samples/s")
        clock.last_print = now
        clock.window_start, clock.window_steps = now, 0


def train_one_epoch(state: TrainState, clock: Clock, stop_at: int) -> None:
    """The steps left in the current epoch (all of them, or those after a resumed step), up to
    stop_at; a checkpoint every checkpoint_every steps."""
    args, plan = state.args, state.plan
    epoch = state.step // plan.steps_per_epoch
    skip = state.step - epoch * plan.steps_per_epoch
    for images, texts in epoch_batches(state.spec, epoch, plan.steps_per_epoch, skip=skip):
        lr = cosine_lr(state.step, args.lr, args.warmup_steps, plan.total_steps)
        loss, grad_norm = _step(state, images, texts, lr)
        state.step += 1
        clock.window_steps += 1
        _report(state, clock, epoch, lr, loss, grad_norm, stop_at)
        if args.checkpoint_every > 0 and state.step % args.checkpoint_every == 0:
            save_checkpoint(state, state.step, epoch)
            clock.last_saved = state.step
        if state.step >= stop_at:
            return


def finish(state: TrainState, clock: Clock, start_step: int) -> dict[str, Any]:
    """The last checkpoint, the run's metrics, model.pt and (at the planned end) the evaluation."""
    args, plan, step, info = state.args, state.plan, state.step, state.info
    train_seconds = time.time() - clock.start
    if clock.last_saved != step:
        save_checkpoint(state, step, (step - 1) // plan.steps_per_epoch if step else 0)
    samples_done = (step - start_step) * plan.global_batch
    metrics: dict[str, Any] = {
        "model": args.model, "steps": step, "total_steps": plan.total_steps,
        "steps_per_epoch": plan.steps_per_epoch, "epochs": plan.n_epochs,
        "num_samples": plan.total_samples, "num_shards": len(plan.urls),
        "global_batch_size": plan.global_batch, "world_size": info.world_size,
        "device": state.device.type, "final_loss": clock.last_loss,
        "logit_scale": float(state.model.logit_scale.exp().item()),
        "train_seconds": round(train_seconds, 3),
        "samples_per_second": round(samples_done / train_seconds, 2) if train_seconds > 0 else None,
        "resumed_from": state.resumed_from, "stopped_early": step < plan.total_steps,
        "ranks_in_sync": _ranks_in_sync(state.model, info),
    }
    if info.is_main:
        ckpt.save_weights(state.model, fs.join(state.out_dir, "model.pt"))
        if args.eval_dir and step >= plan.total_steps:
            from witcurate.trainer.evaluate import evaluate
            state.model.eval()
            metrics["eval"] = evaluate(state.model, state.preprocess_val, state.tokenizer, args.eval_dir,
                                       device=state.device)
            fs.write_json(fs.join(state.out_dir, "eval.json"), metrics["eval"])
            state.say(f"[train] eval: {format_eval(metrics['eval'])}")
    return metrics


def train(args: TrainArgs, data: str | list[str], out_dir: str,
          progress: Callable[[str], None] = print, resume: bool = False) -> dict[str, Any]:
    """Train `args.model` on the shards `data`; returns the run's metrics (and "eval" if asked)."""
    state = set_up(args, data, out_dir, progress, resume)
    total_steps = state.plan.total_steps
    stop_at = args.stop_at_step if args.stop_at_step > 0 else total_steps
    start_step = state.step
    clock = Clock(last_saved=state.step)
    state.net.train()
    while state.step < min(stop_at, total_steps):
        train_one_epoch(state, clock, stop_at)
    metrics = finish(state, clock, start_step)
    barrier(state.info)
    state.say(f"[train] done: {state.step} steps, {metrics['samples_per_second']} samples/s, "
              f"final loss {clock.last_loss:.4f}")
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
