"""Everything a training run sets up before its first step, as open_clip_train's main does: the
device and ranks, the model, the batch plan, the optimizer and scaler, the data loader, the
resume from a checkpoint; and writing a checkpoint of that state.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import torch
import torch.distributed as dist

from witcurate.errors import InputError, UserError
from witcurate.pipeline import fs
from witcurate.trainer import checkpoint as ckpt
from witcurate.trainer.data import LoaderSpec, count_samples, expand_shards
from witcurate.trainer.distributed import DistInfo, init_distributed
from witcurate.trainer.loss import make_loss
from witcurate.trainer.metrics_log import MetricsLog
from witcurate.trainer.model import create_model, resolve_device
from witcurate.trainer.optim import make_optimizer

if TYPE_CHECKING:
    from witcurate.trainer.train import TrainArgs


@dataclass
class BatchPlan:
    """How the data is cut: samples, per-rank and global batch, steps per epoch and in all."""
    urls: list[str]
    total_samples: int
    batch_size: int
    global_batch: int
    steps_per_epoch: int
    total_steps: int
    n_epochs: int


@dataclass
class TrainState:
    """A run set up and ready to step: what one epoch, a checkpoint and the evaluation need."""
    args: TrainArgs
    out_dir: str
    info: DistInfo
    device: torch.device
    say: Callable[[str], None]
    model: torch.nn.Module               # the weights (saved, evaluated)
    net: torch.nn.Module                 # what the step calls: the model, or its DDP wrapper
    preprocess_val: Any
    tokenizer: Any
    plan: BatchPlan
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    autocast: Callable[[], Any]
    loss_fn: Callable[..., torch.Tensor]
    spec: LoaderSpec
    step: int = 0
    resumed_from: int | None = None
    metrics_log: MetricsLog | None = None      # opened once the resume point is known


def autocast_for(device: torch.device, precision: str):
    """(autocast context factory, use a GradScaler). AMP only on CUDA; CPU trains in fp32."""
    if precision not in ("amp", "amp_bf16", "amp_fp16", "fp32"):
        raise UserError(f"unknown precision {precision!r}", "use amp, amp_bf16, amp_fp16 or fp32")
    if device.type != "cuda" or precision == "fp32":
        return contextlib.nullcontext, False
    bf16 = precision == "amp_bf16" or (precision == "amp" and torch.cuda.is_bf16_supported())
    dtype = torch.bfloat16 if bf16 else torch.float16
    return (lambda: torch.autocast("cuda", dtype=dtype)), not bf16


def _device_and_ranks(args: TrainArgs) -> tuple[torch.device, DistInfo]:
    device = resolve_device(args.device)
    info = init_distributed(device.type)
    if device.type == "cuda":
        device = torch.device("cuda", info.local_rank if info.distributed else (device.index or 0))
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return device, info


def plan_batches(args: TrainArgs, data: str | list[str], info: DistInfo,
                 say: Callable[[str], None]) -> BatchPlan:
    urls = expand_shards(data)
    total_samples = sum(count_samples(urls))
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
    return BatchPlan(urls, total_samples, batch_size, global_batch, steps_per_epoch, total_steps,
                     math.ceil(total_steps / steps_per_epoch))


def resume_from(state: TrainState, latest: str) -> None:
    """Load the latest checkpoint into the set-up run: weights, optimizer, scaler, step, RNGs."""
    saved = ckpt.load_checkpoint(latest)
    args, info, plan = state.args, state.info, state.plan
    if saved.get("model_name", args.model) != args.model:
        raise UserError(f"{latest} was trained as {saved['model_name']}, not {args.model}",
                        "pass the same --model, or a fresh --out")
    state.model.load_state_dict(saved["state_dict"])
    state.optimizer.load_state_dict(saved["optimizer"])
    if saved.get("scaler"):
        state.scaler.load_state_dict(saved["scaler"])
    state.step = int(saved["step"])
    rngs = saved.get("rng_by_rank") or [saved["rng"]]
    ckpt.set_rng_states(rngs[info.rank] if len(rngs) == info.world_size else rngs[0])
    if saved.get("steps_per_epoch") != plan.steps_per_epoch or saved.get("global_batch") != plan.global_batch:
        state.say(f"[train] warning: resuming with {plan.steps_per_epoch} steps/epoch x {plan.global_batch} "
                  f"(checkpoint: {saved.get('steps_per_epoch')} x {saved.get('global_batch')}); "
                  "the run will not repeat the original exactly")
    state.resumed_from = state.step
    state.say(f"[train] resumed from {latest} at step {state.step}")


def set_up(args: TrainArgs, data: str | list[str], out_dir: str, progress: Callable[[str], None],
           resume: bool) -> TrainState:
    """The run ready for its first (or resumed) step; the order keeps seeded runs repeatable."""
    device, info = _device_and_ranks(args)
    say = progress if info.is_main else (lambda msg: None)
    fs.makedirs(out_dir)
    torch.manual_seed(args.seed)       # the same initial weights on every rank (DDP checks shapes only)
    model, preprocess_train, preprocess_val, tokenizer = create_model(args.model, args.pretrained, "cpu")
    model = model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    plan = plan_batches(args, data, info, say)
    autocast, use_scaler = autocast_for(device, args.precision)
    spec = LoaderSpec(urls=plan.urls, batch_size=plan.batch_size, preprocess=preprocess_train,
                      tokenize=tokenizer, seed=args.seed, rank=info.rank, world_size=info.world_size,
                      workers=args.workers, shuffle_buffer=args.shuffle_buffer)
    state = TrainState(args, out_dir, info, device, say, model, model, preprocess_val, tokenizer, plan,
                       make_optimizer(model, args.lr, args.weight_decay),
                       torch.amp.GradScaler(device.type, enabled=use_scaler), autocast,
                       make_loss(info.rank, info.world_size), spec)
    latest = fs.join(out_dir, "checkpoint.pt")
    if resume and fs.exists(latest):
        resume_from(state, latest)
    state.metrics_log = MetricsLog(fs.join(out_dir, "metrics.jsonl"), info.is_main,
                                   state.resumed_from if resume else None)
    if info.distributed:
        state.net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    say(f"[train] {args.model}: {plan.total_samples} samples in {len(plan.urls)} shard(s), "
        f"{plan.n_epochs} epoch(s) x {plan.steps_per_epoch} steps, global batch {plan.global_batch}, "
        f"{info.world_size} rank(s) on {device.type}")
    return state


def _gather_rng(info: DistInfo) -> list[dict[str, Any]] | None:
    states = ckpt.rng_states()
    if not info.distributed:
        return [states]
    gathered: list[Any] = [None] * info.world_size
    dist.all_gather_object(gathered, states)
    return gathered


def save_checkpoint(state: TrainState, step: int, epoch: int) -> None:
    """checkpoint.pt (and checkpoints/step_N.pt): everything an exact resume needs."""
    rngs = _gather_rng(state.info)
    if state.info.is_main:
        args = state.args
        ckpt.save_checkpoint(state.out_dir, state.model, state.optimizer, state.scaler, step, epoch,
                             extra={"model_name": args.model, "steps_per_epoch": state.plan.steps_per_epoch,
                                    "global_batch": state.plan.global_batch, "rng_by_rank": rngs,
                                    "args": dataclasses.asdict(args)},
                             keep_step_copy=args.keep_step_checkpoints,
                             keep_last=args.keep_last_checkpoints)
