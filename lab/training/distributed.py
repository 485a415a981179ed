"""Several processes through torchrun: DDP with gloo on the CPU, NCCL on GPUs.

``torchrun --nproc_per_node=K -m lab ...`` starts K copies of ``lab-train``; each reads
RANK / WORLD_SIZE / LOCAL_RANK from the environment. Every rank draws the same global batch
and trains on its slice of the rows, so K processes follow the trajectory one process
would with the same global batch. Only rank 0 writes records, metrics and checkpoints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    def all_sum(self, value: float, device: torch.device) -> float:
        """Sum a number over the ranks (itself with one process)."""
        if self.world == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=device)
        dist.all_reduce(t)
        return float(t.item())


def setup(device_type: str) -> Dist:
    """Join the process group torchrun set up (no-op for a single process)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    info = Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    if device_type == "cuda":
        torch.cuda.set_device(info.local_rank)
    return info


def teardown(info: Dist) -> None:
    if info.world > 1 and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def wrap(model: torch.nn.Module, info: Dist, device: torch.device) -> torch.nn.Module:
    """The module a step calls: the model itself, or DDP around it with several processes."""
    if info.world == 1:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
