"""Data-parallel training of the core over several processes (torchrun, DistributedDataParallel).

Under ``torchrun --nproc_per_node N`` (or in a process whose
``torch.distributed`` process group is already initialised) the trainer
joins the process group (gloo on CPU, nccl on CUDA), wraps the network in
DDP over its trainable parameters only (the frozen backbone is neither
broadcast nor reduced), and every rank trains on its shard of each epoch's
samples: the same permutation on every rank (the shared seed), rank r takes
``order[r::N]``, so a step of ``batch_size // N`` samples per rank is one
step of ``batch_size`` samples over the job. Validation losses are summed
over the ranks, so every rank takes the same early-stopping decision.
Prediction stays single-process.
"""

from __future__ import annotations

import atexit
import logging
import os

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from kernel.distributed import process_rank, world_size
from kernel.errors import HybridInputError

log = logging.getLogger(__name__)

TORCHRUN_ENV = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE")


def join(device: torch.device) -> tuple[int, int]:
    """(rank, world size) of this process; joins the process group first when torchrun asks for one.

    Returns (0, 1) when the job is one process (no process group, ``WORLD_SIZE`` unset or 1).

    Raises:
        HybridInputError: ``WORLD_SIZE`` > 1 but torchrun's other variables are missing, or torch was built
            without distributed support.
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    if world_size() <= 1:
        return 0, 1
    missing = [name for name in TORCHRUN_ENV if not os.environ.get(name)]
    if missing or not dist.is_available():
        why = f"{', '.join(missing)} unset" if missing else "this torch has no torch.distributed"
        raise HybridInputError(f"WORLD_SIZE is {world_size()} but the process group cannot start ({why}); start "
                               "multi-process training with `torchrun --nproc_per_node N -m hybrid.cli fit ...`.")
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend)
    atexit.register(_leave)
    log.info("timellm: rank %d of %d joined the process group (%s)", process_rank(), world_size(), backend)
    return dist.get_rank(), dist.get_world_size()


def _leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def wrap(net: torch.nn.Module, device: torch.device) -> DistributedDataParallel:
    """``net`` in DDP over its trainable parameters; frozen parameters and every buffer are left alone.

    The frozen backbone is the same pretrained file on every rank, so it is
    neither broadcast at the start nor reduced; buffers are constants, never
    synchronised.
    """
    ignored = [n for n, p in net.named_parameters() if not p.requires_grad] + [n for n, _ in net.named_buffers()]
    # The documented (if underscored) way to keep named tensors out of DDP: pytorch/pytorch#43690.
    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(net, ignored)
    return DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)


def shard(order: np.ndarray, rank: int, world: int) -> np.ndarray:
    """Rank ``rank``'s samples of ``order``: ``order[rank::world]`` after dropping the last ``len % world``.

    Every rank gets the same number of samples, hence runs the same number of steps.
    """
    if world == 1:
        return order
    return order[: len(order) // world * world][rank::world]


def all_sum(values: list[float], device: torch.device) -> list[float]:
    """Element-wise sums of ``values`` over every rank (``values`` itself in a one-process job)."""
    if not (dist.is_available() and dist.is_initialized()):
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.cpu().tolist()


__all__ = ["all_sum", "join", "shard", "wrap"]
