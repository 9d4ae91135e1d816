"""The contrastive loss: open_clip's ClipLoss with features gathered from every rank, so each
rank's loss sees the global batch as negatives (gathered with gradients, as open_clip_train does
with --gather-with-grad), and the learnable temperature's clamp."""

from __future__ import annotations

import math
import warnings

import torch
from open_clip.loss import ClipLoss

# open_clip gathers with torch.distributed.nn.all_gather, which torch now flags as deprecated on
# every step of every rank; it still works and is what open_clip_train runs.
warnings.filterwarnings("ignore", message=r"torch\.distributed\.nn\.functional\.all_gather is deprecated")

# CLIP initialises the logit scale at log(1/0.07) and clips the scale (exp of it) at 100.
INIT_LOGIT_SCALE = math.log(1 / 0.07)
MAX_LOGIT_SCALE = math.log(100)


def make_loss(rank: int = 0, world_size: int = 1) -> ClipLoss:
    return ClipLoss(local_loss=False, gather_with_grad=True, cache_labels=True,
                    rank=rank, world_size=world_size)


def clamp_logit_scale(model: torch.nn.Module) -> None:
    """Keep exp(logit_scale) within [1, 100] after an optimizer step."""
    with torch.no_grad():
        model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
