"""Several processes through torchrun: DDP or FSDP2, with gloo on the CPU, NCCL on GPUs.

``torchrun --nproc_per_node=K -m lab ...`` starts K copies of ``lab-train``; each reads
RANK / WORLD_SIZE / LOCAL_RANK from the environment. Every rank draws the same global batch
and trains on its slice of the rows, so K processes follow the trajectory one process
would with the same global batch. Only rank 0 writes records and metrics; checkpoints are
rank 0's file under DDP, and every rank's shard under FSDP (``lab.runs.checkpoint``).

``train.parallel=fsdp`` shards as torchtitan does: FSDP2's ``fully_shard`` on each block
(its parameters are gathered for its forward and backward, then freed) and on the root
(embeddings, final norm, tied head); on CUDA parameters are gathered in bf16 and gradients
reduce-scattered in fp32 (``MixedPrecisionPolicy``). Gradients are averaged over the ranks
under both, so a step's loss scaling is the same.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from lab.runs.checkpoint import is_sharded


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    def any(self, flag: bool, device: torch.device) -> bool:
        """Whether ``flag`` holds on any rank (itself with one process)."""
        return bool(flag) if self.world == 1 else self.all_sum(float(bool(flag)), device) > 0

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


def wrap(
    model: torch.nn.Module, info: Dist, device: torch.device, parallel: str = "ddp"
) -> torch.nn.Module:
    """The module a step calls: the model itself with one process; with several, DDP around
    it, or (``parallel="fsdp"``) the model sharded in place (``fully_shard`` per block, then
    the root: build the optimizer after this, on the sharded parameters)."""
    if info.world == 1:
        return model
    if parallel == "fsdp":
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        policy = MixedPrecisionPolicy()  # fp32 on the CPU, where the lab trains in fp32
        if device.type == "cuda":
            policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        for block in model.blocks:
            fully_shard(block, mp_policy=policy)
        fully_shard(model, mp_policy=policy)
        return model
    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)


def gradient_sync(net: torch.nn.Module, sync: bool):
    """A context for one micro-batch's backward: gradients reduced over the ranks when
    ``sync`` (the last micro-batch of a step), kept local otherwise (DDP's ``no_sync``,
    FSDP2's ``set_requires_gradient_sync``)."""
    if is_sharded(net):
        net.set_requires_gradient_sync(sync)
        return contextlib.nullcontext()
    return contextlib.nullcontext() if sync else net.no_sync()


def local(t: torch.Tensor) -> torch.Tensor:
    """This rank's part of a tensor (a DTensor's local shard; a plain tensor itself)."""
    return t.to_local() if hasattr(t, "to_local") else t


def full(t: torch.Tensor) -> torch.Tensor:
    """The whole of a tensor (a DTensor gathered; a plain tensor itself)."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t
