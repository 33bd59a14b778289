"""torchrun/DDP set-up and the few collectives the engine needs; a single process needs none.

The launcher (``torchrun``) describes the job in ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``;
we read them rather than run a runtime of our own. Every helper is a no-op without DDP, so the
engine has one code path for a laptop and for a multi-GPU node.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Sampler


@dataclass(frozen=True)
class DistEnv:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "auto") -> DistEnv:
    """Join the process group torchrun describes (NCCL on CUDA, gloo on CPU), else run alone."""
    if device not in ("auto", "cuda", "cpu"):
        raise ValueError(f"device must be auto, cuda or cpu, got {device!r}")
    rank = int(os.environ.get("RANK", 0))
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if use_cuda:
        torch.cuda.set_device(local_rank)
        torch_device = torch.device("cuda", local_rank)
    else:
        torch_device = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistEnv(rank, world_size, local_rank, torch_device)


def any_rank(flag: bool, env: DistEnv) -> bool:
    """True on every rank when ``flag`` is true on any, so all ranks stop at the same step."""
    if not env.distributed:
        return flag
    tensor = torch.tensor([int(flag)], device=env.device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item())


def mean_over_ranks(values: dict[str, torch.Tensor], env: DistEnv) -> dict[str, torch.Tensor]:
    """Average each tensor over ranks in one all-reduce (a no-op on a single process)."""
    if not env.distributed or not values:
        return values
    stacked = torch.stack([values[k] for k in values])
    dist.all_reduce(stacked)
    return dict(zip(values, stacked / env.world_size, strict=True))


def gather_objects(obj: Any, env: DistEnv) -> list[Any]:
    """Every rank's ``obj``, in rank order (``[obj]`` on a single process)."""
    if not env.distributed:
        return [obj]
    gathered: list[Any] = [None] * env.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()


class EpochShardSampler(Sampler[int]):
    """This rank's share of a permutation seeded by (seed, epoch), as whole batches.

    Like ``DistributedSampler`` with ``drop_last``, but the epoch length is rounded down to whole
    optimizer steps (``batch_size × accum_iter``) and the first ``skip_batches`` batches can be
    skipped: a mid-epoch resume then sees exactly the batches the interrupted run had not seen.
    """

    def __init__(
        self, num_samples: int, batch_size: int, accum_iter: int, env: DistEnv, seed: int
    ) -> None:
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.env = env
        self.seed = seed
        self.steps_per_epoch = num_samples // env.world_size // (batch_size * accum_iter)
        self.batches_per_epoch = self.steps_per_epoch * accum_iter
        self.epoch, self.skip_batches = 0, 0

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        self.epoch, self.skip_batches = epoch, skip_batches

    def __iter__(self) -> Iterator[int]:
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.num_samples)
        mine = order[self.env.rank :: self.env.world_size]
        start, stop = self.skip_batches * self.batch_size, self.batches_per_epoch * self.batch_size
        return iter(mine[start:stop].tolist())

    def __len__(self) -> int:
        return (self.batches_per_epoch - self.skip_batches) * self.batch_size
