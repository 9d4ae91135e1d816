"""Process-group setup for torchrun: rank and world size come from the environment variables
torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK); NCCL on CUDA, gloo on CPU. A plain
`python -m witcurate.trainer` is a world of one and touches no process group."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def env_info() -> DistInfo:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    return DistInfo(rank=int(os.environ.get("RANK", "0")),
                    local_rank=int(os.environ.get("LOCAL_RANK", "0")),
                    world_size=world)


def init_distributed(device_type: str) -> DistInfo:
    """Join the process group torchrun described, once; a world of one needs none."""
    info = env_info()
    if info.distributed and not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group(backend=backend, rank=info.rank, world_size=info.world_size)
    if info.distributed and device_type == "cpu":
        # Ranks share the machine's cores: without this each one starts a thread per core.
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(info.world_size)))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    return info


def barrier(info: DistInfo) -> None:
    if info.distributed and dist.is_initialized():
        dist.barrier()


def cleanup(info: DistInfo) -> None:
    if info.distributed and dist.is_initialized():
        dist.destroy_process_group()
