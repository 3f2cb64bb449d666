"""Distributed data parallel helpers for ``torchrun`` (NCCL on GPU, gloo on CPU).

``torchrun --nproc-per-node N -m glsmamba train CONFIG`` sets RANK / WORLD_SIZE /
LOCAL_RANK; :func:`init_distributed` reads them and starts the process group. Without
them everything runs in one process and the helpers are no-ops.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device_type: str | None = None) -> DistInfo:
    """Start the process group from the torchrun environment (if any)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device_type is None:
        device_type = "cuda" if torch.cuda.is_available() else "cpu"
    backend = "nccl" if device_type == "cuda" else "gloo"
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    return DistInfo(rank, world_size, local_rank)


def current() -> DistInfo:
    if dist.is_available() and dist.is_initialized():
        rank = dist.get_rank()
        return DistInfo(rank, dist.get_world_size(), int(os.environ.get("LOCAL_RANK", rank)))
    return DistInfo()


# The work of the last barrier, owned here so that Python frees it (see cleanup()).
_LAST_WORK: list = []


def cleanup() -> None:
    """Leave the process group together, so that the interpreter can exit cleanly.

    gloo's worker thread drops its reference to a collective just after finishing it;
    a barrier's work holds the collectives still in flight when it was queued, and
    those hold Python-owned tensors. If that drop is the last one and comes while the
    interpreter shuts down, freeing the tensors cannot take the GIL and the process
    aborts ("terminate called without an active exception", exit -6) after a good run.
    So on gloo the ranks wait for each other, and the last barrier's work stays
    referenced from Python: it is freed with the module, by the main thread.
    """
    if dist.is_available() and dist.is_initialized():
        if dist.get_world_size() > 1 and dist.get_backend() == "gloo":
            work = dist.barrier(async_op=True)
            work.wait()
            _LAST_WORK.append(work)
        dist.destroy_process_group()


def barrier() -> None:
    if current().enabled:
        dist.barrier()


def all_reduce_mean(value: float, device: torch.device | str = "cpu") -> float:
    info = current()
    if not info.enabled:
        return float(value)
    tensor = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return float(tensor.item()) / info.world_size


def gather_objects(items: list[Any]) -> list[Any]:
    """Concatenate each rank's list on every rank (rank order)."""
    info = current()
    if not info.enabled:
        return list(items)
    gathered: list[list[Any] | None] = [None] * info.world_size
    dist.all_gather_object(gathered, list(items))
    return [item for part in gathered for item in (part or [])]


def broadcast_object(value: Any) -> Any:
    if not current().enabled:
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


class ResumableSampler(DistributedSampler):
    """DistributedSampler that can start part-way through an epoch.

    The order of an epoch depends only on (seed, epoch), as in DistributedSampler, so
    skipping the first ``start`` samples of this rank's share after a resume reproduces
    exactly the batches an uninterrupted run would have drawn next.
    """

    def __init__(self, dataset, num_replicas: int = 1, rank: int = 0, shuffle: bool = True,
                 seed: int = 0, drop_last: bool = False):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle,
                         seed=seed, drop_last=drop_last)
        self.start = 0

    def set_start(self, start: int) -> None:
        """Skip this many of this rank's samples in the current epoch (once)."""
        self.start = int(start)

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        return iter(indices[self.start:])

    def __len__(self) -> int:
        return max(0, self.num_samples - self.start)


def shard_indices(count: int, info: DistInfo) -> list[int]:
    """Contiguous share of ``range(count)`` for this rank (evaluation: no padding)."""
    per_rank = math.ceil(count / info.world_size)
    return list(range(info.rank * per_rank, min(count, (info.rank + 1) * per_rank)))
