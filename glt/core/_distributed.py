"""Scale-out: shard prompts over ``torch.distributed`` ranks and merge the results exactly.

The process-group helpers (`torchrun_group`, `shard_range`, `all_gather_list`) live here; the
sharded read-out built on them is `glt.decoding.sharded_readout`.

The unit of work is the forward-pass *batch*: items are cut into batches of ``batch_size``
exactly as a single process would cut them (`glt.iter_residuals`), each rank takes a contiguous
block of whole batches, and the merged result lists the batches in their original order. Every
batch is therefore computed with the same shapes as in one process, so the merged read-out
equals the single-process one: ranks, ids and targets exactly; floats bitwise too when each
process runs with the same thread setting (``readout(..., threads=...)``, ``OMP_NUM_THREADS``).

Works with any backend (``gloo`` on CPU, ``nccl`` on GPUs: put each rank's model on its own
device first); without an initialised process group everything runs as one rank.

Example:
    >>> shard_range(10, batch_size=4, rank=1, world_size=2)
    range(4, 10)
    >>> # torchrun --nproc_per_node 2 my_study.py, where my_study.py does:
    >>> # torch.distributed.init_process_group("gloo")
    >>> # r = glt.sharded_readout(model, texts, batch_size=8)   # same Readout on every rank
"""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch.distributed as dist
from torch import Tensor

from glt.core._errors import GltError

__all__ = ["all_gather_list", "rank_and_world", "shard_range", "torchrun_group"]


def rank_and_world() -> tuple[int, int]:
    """``(rank, world_size)`` of the default process group, or ``(0, 1)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@contextmanager
def torchrun_group() -> Iterator[None]:
    """Join the gloo process group that ``torchrun`` describes (``WORLD_SIZE > 1``) while inside.

    A no-op in one process or when a group is already initialised. On success the ranks leave
    together (``barrier``, then ``destroy_process_group``); after an error the group is only
    destroyed, since the other ranks may never reach a barrier. Used by ``glt lens train``.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or (dist.is_available() and dist.is_initialized()):
        yield
        return
    dist.init_process_group("gloo")
    try:
        yield
        dist.barrier()
    finally:
        dist.destroy_process_group()


def all_reduce_sum(t: Tensor) -> Tensor:
    """Sum ``t`` over all ranks in place (a no-op in one process); returns ``t``."""
    if rank_and_world()[1] > 1:
        dist.all_reduce(t)
    return t


def shard_range(
    n_items: int, *, batch_size: int = 1, rank: int | None = None, world_size: int | None = None
) -> range:
    """The items this rank computes: a contiguous block of whole batches of ``batch_size``.

    Batches are dealt out in contiguous blocks whose sizes differ by at most one batch, so
    concatenating the ranks' results in rank order restores the original item order.

    Example:
        >>> [shard_range(5, batch_size=2, rank=r, world_size=2) for r in range(2)]
        [range(0, 2), range(2, 5)]
    """
    if not isinstance(n_items, int) or n_items < 0:
        raise GltError(f"n_items must be an int >= 0, got {n_items!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise GltError(f"batch_size must be a positive int, got {batch_size!r}")
    r0, w0 = rank_and_world()
    rank = r0 if rank is None else rank
    world_size = w0 if world_size is None else world_size
    if not 0 <= rank < world_size:
        raise GltError(f"rank must lie in [0, world_size={world_size}), got {rank}")
    n_batches = -(-n_items // batch_size)
    b0 = n_batches * rank // world_size
    b1 = n_batches * (rank + 1) // world_size
    return range(min(b0 * batch_size, n_items), min(b1 * batch_size, n_items))


def all_gather_list(local: list[Any]) -> list[Any]:
    """Concatenate every rank's list in rank order; every rank receives the whole list.

    Objects travel pickled (``all_gather_object``): move tensors to the CPU first when the
    backend is NCCL. Without a process group this returns ``local`` unchanged.
    """
    rank, world = rank_and_world()
    if world == 1:
        return list(local)
    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, list(local))
    return [x for part in gathered for x in part]
