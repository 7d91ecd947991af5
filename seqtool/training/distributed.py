"""torch.distributed through torchrun: rank/world from the environment, rank 0 does all writing."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device_kind: str) -> DistInfo:
    """Join the process group torchrun describes (WORLD_SIZE > 1); a plain run stays single-process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_kind == "cuda" else "gloo")
    info = DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    if device_kind == "cuda":
        torch.cuda.set_device(info.local_rank)
    return info


def all_sum(value: float, info: DistInfo, device: torch.device) -> float:
    if info.world == 1:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return float(tensor)


def barrier(info: DistInfo) -> None:
    if info.world > 1:
        dist.barrier()


def broadcast_value(value: float, info: DistInfo, device: torch.device) -> float:
    """Rank 0's value (a decision to stop, a validation score) for every rank."""
    if info.world == 1:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.broadcast(tensor, 0)
    return float(tensor.item())
