"""Which process of a multi-process (torchrun) job this is, without importing torch.

``torchrun --nproc_per_node N -m hybrid.cli fit ...`` starts N copies of the
whole run; they train the core together (DistributedDataParallel, see
``llm_core.trainer``) and only rank 0 writes the run. torchrun tells each
process its place through the environment (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``); a
process group started another way (``torch.distributed.init_process_group``
by the caller) is asked directly, if torch is already imported.
"""

from __future__ import annotations

import os
import sys


def _group() -> object | None:
    """``torch.distributed`` when torch is imported and a process group is initialised, else None."""
    torch = sys.modules.get("torch")  # never import torch here: runs without the core must not pay for it
    dist = getattr(torch, "distributed", None)
    if dist is not None and dist.is_available() and dist.is_initialized():
        return dist
    return None


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name, "")
    try:
        return int(text) if text else default
    except ValueError:
        raise ValueError(f"the environment variable {name} must be an integer (torchrun sets it); got {text!r}.") from None


def world_size() -> int:
    """Processes in the job: the process group's size, else ``WORLD_SIZE`` (1 without torchrun)."""
    dist = _group()
    return int(dist.get_world_size()) if dist is not None else max(1, _env_int("WORLD_SIZE", 1))  # type: ignore[attr-defined]


def process_rank() -> int:
    """This process's rank: the process group's, else ``RANK`` (0 without torchrun)."""
    dist = _group()
    return int(dist.get_rank()) if dist is not None else _env_int("RANK", 0)  # type: ignore[attr-defined]


def local_rank() -> int:
    """This process's rank on its machine (``LOCAL_RANK``; 0 without torchrun): the GPU it uses."""
    return _env_int("LOCAL_RANK", 0)


def local_world_size() -> int:
    """Processes of the job on this machine (``LOCAL_WORLD_SIZE``; 1 without torchrun): they share its cores."""
    return max(1, _env_int("LOCAL_WORLD_SIZE", 1))


def is_main_process() -> bool:
    """True in rank 0 (and in every run without torchrun): the process that writes files and prints."""
    return process_rank() == 0


__all__ = ["is_main_process", "local_rank", "local_world_size", "process_rank", "world_size"]
