"""Training checkpoints that resume exactly: model, optimizer, grad scaler, step, epoch and every
RNG state, stored as plain tensors and numbers so they load with `weights_only=True`. The
`state_dict` key makes a training checkpoint loadable by `create_model` as it is."""

from __future__ import annotations

import random
import re
from typing import Any

import numpy as np
import torch

from witcurate.errors import UserError
from witcurate.pipeline import fs


def rng_states() -> dict[str, Any]:
    py_version, py_state, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": {"version": py_version, "state": torch.tensor(py_state, dtype=torch.int64),
                   "gauss": py_gauss},
        "numpy": {"name": np_name, "keys": torch.from_numpy(np_keys.astype(np.int64)),
                  "pos": int(np_pos), "has_gauss": int(np_has_gauss), "gauss": float(np_gauss)},
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    py = states["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    n = states["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["gauss"]))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _save(obj: Any, path: str) -> None:
    """Write to a temporary name, then rename: a kill mid-write never leaves a torn checkpoint."""
    tmp = path + ".partial"
    with fs.open_file(tmp, "wb") as f:
        torch.save(obj, f)
    fs.rm(path)
    fs.move(tmp, path)


def save_checkpoint(out_dir: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scaler: Any, step: int, epoch: int, extra: dict[str, Any] | None = None,
                    keep_step_copy: bool = True, keep_last: int = 0) -> str:
    """out_dir/checkpoint.pt (the latest) and, with keep_step_copy, out_dir/checkpoints/step_N.pt,
    of which only the newest `keep_last` stay (0 keeps every one). Returns the former."""
    state = {
        "state_dict": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else {},
        "step": step,
        "epoch": epoch,
        "rng": rng_states(),
        **(extra or {}),
    }
    latest = fs.join(out_dir, "checkpoint.pt")
    _save(state, latest)
    if keep_step_copy:
        fs.makedirs(fs.join(out_dir, "checkpoints"))
        filesystem, src = fs.fs_for(latest)
        _, dst = fs.fs_for(fs.join(out_dir, "checkpoints", f"step_{step}.pt"))
        filesystem.copy(src, dst)
        if keep_last > 0:
            prune_step_copies(fs.join(out_dir, "checkpoints"), keep_last)
    return latest


def step_of(name: str) -> int:
    """The step in a step_N.pt name; -1 for any other file."""
    match = re.fullmatch(r"step_(\d+)\.pt", name)
    return int(match.group(1)) if match else -1


def prune_step_copies(directory: str, keep_last: int) -> list[str]:
    """Delete all but the newest `keep_last` step_N.pt files (by step, not by name or mtime), so a
    long run's checkpoints take bounded disk, as open_clip's --delete-previous-checkpoint does for one.
    Returns what was deleted."""
    steps = sorted((step_of(name), name) for name in fs.listdir(directory) if step_of(name) >= 0)
    doomed = [fs.join(directory, name) for _, name in steps[:-keep_last]] if keep_last > 0 else []
    for path in doomed:
        fs.rm(path)
    return doomed


def load_checkpoint(path: str) -> dict[str, Any]:
    try:
        with fs.open_file(path) as f:
            state = torch.load(f, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"cannot resume from {path}: {type(e).__name__}: {str(e).splitlines()[0][:200]}",
                        "delete it to start over, or point --out at the run that wrote it") from None
    for key in ("state_dict", "optimizer", "step", "epoch"):
        if key not in state:
            raise UserError(f"{path} is not a training checkpoint (no {key!r})",
                            "resume from the checkpoint.pt a training run wrote")
    return state


def save_weights(model: torch.nn.Module, path: str) -> None:
    """A plain state dict: what `create_model(name, path)` and the score stage load."""
    _save({k: v.detach().cpu() for k, v in model.state_dict().items()}, path)
