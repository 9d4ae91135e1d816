"""open_clip models: the repo's small configs (data in model_configs/), and loading from an
open_clip pretrained tag or from a local checkpoint, always with `weights_only=True`."""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path
from typing import Any

import open_clip
import torch

from witcurate.errors import UserError

CONFIG_DIR = Path(__file__).parent / "model_configs"
_registered = False


def register_configs() -> None:
    """Make the repo's model configs (witcurate-tiny, ...) known to open_clip by name."""
    global _registered
    if not _registered:
        open_clip.add_model_config(CONFIG_DIR)
        _registered = True


class _DropRandomInitWarning(logging.Filter):
    """open_clip warns "initialized randomly" before we load a local checkpoint into the model."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("No pretrained weights loaded")


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {device!r} asked for, but no CUDA device is visible",
                        "use --device cpu or run on a GPU worker")
    return torch.device(device)


def _state_dict_from(path: str) -> dict[str, Any]:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"checkpoint not found: {path}", "pass an existing .pt file or an open_clip tag") from None
    except Exception as e:  # corrupt file, pickle with code in it, wrong format
        raise UserError(f"cannot load checkpoint {path}: {type(e).__name__}: {str(e).splitlines()[0][:200]}",
                        "pass a checkpoint written by `witcurate train`/open_clip_train, or an open_clip pretrained tag") from None
    if isinstance(ckpt, dict) and "state_dict" in ckpt:
        ckpt = ckpt["state_dict"]
    if not isinstance(ckpt, dict):
        raise UserError(f"checkpoint {path} holds no state dict", "pass a model checkpoint")
    # DDP checkpoints prefix every key with "module.".
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in ckpt.items()}


def create_model(model_name: str, pretrained: str = "", device: str = "cpu"):
    """(model, train_preprocess, eval_preprocess, tokenizer) for an open_clip name.

    `pretrained` is an open_clip tag (e.g. "openai", downloaded and cached by open_clip), a local
    checkpoint path (a state dict or a {"state_dict": ...} training checkpoint), or empty.
    """
    register_configs()
    if model_name not in open_clip.list_models():
        raise UserError(f"unknown open_clip model {model_name!r}",
                        "see open_clip.list_models() or witcurate/trainer/model_configs/")
    is_path = bool(pretrained) and (os.path.sep in pretrained or pretrained.endswith((".pt", ".pth", ".bin", ".safetensors")))
    tag = None if (not pretrained or is_path) else pretrained
    quiet = _DropRandomInitWarning() if is_path else None  # weights come right after
    if quiet:
        logging.getLogger().addFilter(quiet)
    try:
        model, preprocess_train, preprocess_val = open_clip.create_model_and_transforms(
            model_name, pretrained=tag, device="cpu", weights_only=True)
    except RuntimeError as e:
        raise UserError(f"cannot load open_clip {model_name} pretrained={pretrained!r}: {str(e).splitlines()[0][:200]}",
                        "check the tag with open_clip.list_pretrained(), or pass a local checkpoint") from None
    if is_path:
        state = _state_dict_from(pretrained)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise UserError(f"checkpoint {pretrained} does not fit model {model_name}: {str(e).splitlines()[0][:200]}",
                            "pass the --model the checkpoint was trained with") from None
    model = model.to(resolve_device(device))
    return model, preprocess_train, preprocess_val, tokenizer_for(model_name)


@functools.lru_cache(maxsize=8)
def tokenizer_for(model_name: str) -> Any:
    """The model's own open_clip tokenizer, built once per process: open_clip builds its BPE
    tables anew on every call (0.15 s for the tiny model), and the experiment, the trainer's
    evaluation and the score stage ask for the same one many times. It keeps no state a caller
    could see (its cache of words already split only saves work)."""
    register_configs()
    return open_clip.get_tokenizer(model_name)
