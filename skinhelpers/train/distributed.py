"""Distributed data parallel: one process per GPU under ``torchrun``, or one process.

``torchrun --nproc_per_node N -m skinhelpers.train.launch --config cfg.json`` sets ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK``; :func:`setup` then joins the process group (NCCL on
GPUs, gloo on CPU) and picks the device. Without those variables everything runs in the
calling process and these helpers are no-ops, so the trainer has one code path.

Several machines (``torchrun --nnodes``, c10d rendezvous): the rendezvous numbers the
processes in an order of its own (by host name), so the process that writes checkpoints,
history and logs (:attr:`DistInfo.is_main`) is chosen by the node rank the user gave
(``SKINHELPERS_NODE_RANK``, set by :func:`skinhelpers.train.launch.launch`): local rank 0 of
node 0. Every other process writes nothing.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from skinhelpers.device import pick_device

log = logging.getLogger(__name__)

#: the node rank the user gave (``--node-rank``), passed to every worker of that node
NODE_RANK_ENV = "SKINHELPERS_NODE_RANK"


@dataclass
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    main_rank: int = 0  # the global rank that writes: local rank 0 of node 0
    node_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == self.main_rank


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def setup(device: str = "auto", backend: str | None = None, timeout_s: int = 1800) -> DistInfo:
    """Join the process group if launched by torchrun; return rank, world size and device."""
    if not launched_by_torchrun() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return DistInfo(device=pick_device(device))
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    dev = pick_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        backend = backend or ("nccl" if dev.type == "cuda" else "gloo")
        kwargs = {"device_id": dev} if backend == "nccl" else {}
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s), **kwargs)
    node_rank = int(os.environ.get(NODE_RANK_ENV, os.environ.get("GROUP_RANK", "0")))
    return DistInfo(rank, local_rank, world, dev, main_rank(node_rank, local_rank), node_rank)


def main_rank(node_rank: int, local_rank: int) -> int:
    """The global rank of local rank 0 on node 0, agreed by every process (a collective)."""
    places: list = [None] * dist.get_world_size()
    dist.all_gather_object(places, (int(node_rank), int(local_rank)))
    mains = [r for r, place in enumerate(places) if place == (0, 0)]
    if len(mains) != 1:
        raise RuntimeError(
            f"{len(mains)} processes are local rank 0 of node 0 (node, local rank of each "
            f"rank: {places}): give every machine its own --node-rank, 0 to exactly one"
        )
    return mains[0]


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.distributed:
        if info.device.type == "cuda":
            dist.barrier(device_ids=[info.device.index])
        else:
            dist.barrier()


def all_gather_cat(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Concatenate a (variable-length) tensor from every rank, in rank order."""
    if not info.distributed:
        return tensor
    parts: list = [None] * info.world_size
    dist.all_gather_object(parts, tensor.cpu())
    return torch.cat(parts)


def all_reduce_mean(value: float, info: DistInfo) -> float:
    if not info.distributed:
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64, device=info.device)
    dist.all_reduce(t)
    return float(t.item()) / info.world_size


def broadcast_object(obj, info: DistInfo):
    """The main process's ``obj`` on every rank."""
    if not info.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=info.main_rank)
    return box[0]


def wrap(model: torch.nn.Module, info: DistInfo) -> torch.nn.Module:
    """Wrap in DistributedDataParallel (only the parameters that train now are synced).

    Re-wrap after freezing/unfreezing: DDP records the trainable parameters when built.
    """
    if not info.distributed:
        return model

    ids = [info.device.index] if info.device.type == "cuda" else None
    return DDP(model, device_ids=ids)


def sync_buffers(model: torch.nn.Module, info: DistInfo) -> None:
    """Give every rank the main process's buffers (BatchNorm statistics drift apart per
    rank)."""
    if not info.distributed:
        return
    for b in model.buffers():
        dist.broadcast(b.data, src=info.main_rank)
