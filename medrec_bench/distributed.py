"""Data parallelism over processes (``accelerate launch``, ``torchrun``): which process this is, and the one
``accelerate.Accelerator`` of the process that a data-parallel model (``leader_t``) trains and infers through.

A launch starts the same command in every process and sets ``WORLD_SIZE`` (> 1) and ``RANK``. Each process then:
trains on its share of every batch (DDP averages the gradients, so a batch of ``batch_size`` samples is split
over the processes, not multiplied), computes predictions and features for its share of the samples and gathers
the others' (:func:`gather_rows`), so that every process holds the same arrays and takes the same decisions (early
stopping, the resume rule). Only the main process (rank 0) writes: the store, the model cache, the feature cache.

Without a launch nothing here is used (the models run as before), except in tests: :func:`use` installs an
accelerator explicitly (``Accelerator(cpu=True)``: the same code path in one process).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import numpy as np

from .extras import require_extra

_T = TypeVar("_T")
_accelerator: Any = None


def world_size() -> int:
    """The number of processes of the launch (1 without one)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def launched() -> bool:
    """Whether this process is one of several started by ``accelerate launch`` / ``torchrun``."""
    return world_size() > 1


def is_main() -> bool:
    """Whether this process writes (rank 0, or no launch)."""
    acc = accelerator()
    return acc.is_main_process if acc is not None else int(os.environ.get("RANK", "0")) == 0


def accelerator() -> Any:
    """The process's ``Accelerator``: the one installed by :func:`use`, else under a launch one created on first use
    (it binds the process to its GPU, so ``cuda`` is that GPU; without a GPU the processes run on CPU over gloo),
    else None. RuntimeError when accelerate does not see the launch's processes."""
    global _accelerator
    if _accelerator is None and launched():
        accelerate = require_extra("accelerate", "llm", "data-parallel training (accelerate launch)")
        import torch

        acc = accelerate.Accelerator(cpu=not torch.cuda.is_available())
        if acc.num_processes != world_size():
            raise RuntimeError(f"WORLD_SIZE is {world_size()} but accelerate sees {acc.num_processes} process(es)")
        _accelerator = acc
    return _accelerator


@contextmanager
def use(acc: Any) -> Iterator[Any]:
    """Install ``acc`` as the process's accelerator for the ``with`` block (tests: ``Accelerator(cpu=True)``)."""
    global _accelerator
    previous, _accelerator = _accelerator, acc
    try:
        yield acc
    finally:
        _accelerator = previous


def shard(items: Sequence[_T]) -> list[_T]:
    """This process's share of ``items`` (every ``num_processes``-th, from its index); all of them without a
    multi-process accelerator."""
    acc = accelerator()
    if acc is None or acc.num_processes == 1:
        return list(items)
    return list(items[acc.process_index::acc.num_processes])


def check_batch_size(batch_size: int) -> None:
    """ValueError unless ``batch_size`` splits evenly over the processes (each gets ``batch_size / n`` samples, so
    the averaged gradient is the whole batch's)."""
    acc = accelerator()
    if acc is not None and batch_size % acc.num_processes:
        raise ValueError(f"batch_size {batch_size} does not split over {acc.num_processes} processes: use a multiple")


def gather_rows(rows: np.ndarray, n: int) -> np.ndarray:
    """All ``n`` rows in sample order, on every process, from each process's rows of :func:`shard` of ``range(n)``
    (float arrays [k, d]); ``rows`` itself without a multi-process accelerator."""
    acc = accelerator()
    if acc is None or acc.num_processes == 1:
        return rows
    import torch

    world, per = acc.num_processes, math.ceil(n / acc.num_processes)
    padded = np.zeros((per, rows.shape[1]), dtype=np.float32)  # equal shapes on every process for the gather
    padded[:len(rows)] = rows
    gathered = acc.gather(torch.from_numpy(padded).to(acc.device)).cpu().numpy()  # [world * per, d], rank by rank
    out = np.empty((n, rows.shape[1]), dtype=rows.dtype)
    for rank in range(world):
        mine = np.arange(rank, n, world)
        out[mine] = gathered[rank * per: rank * per + len(mine)]
    return out


def mean_over_processes(value: float) -> float:
    """The mean of ``value`` over the processes (every process gets it); ``value`` without a launch."""
    acc = accelerator()
    if acc is None or acc.num_processes == 1:
        return value
    import torch

    return float(acc.reduce(torch.tensor([value], device=acc.device), reduction="mean").item())


def wrap_for_training(module: Any) -> Any:
    """``module`` prepared by the accelerator for training (DDP over the processes; moved to its device); ``module``
    itself without an accelerator. The caller keeps the plain module for its state and inference."""
    acc = accelerator()
    return module if acc is None else acc.prepare_model(module)
