"""Scale-out: shard prompts over ``torch.distributed`` ranks and merge the results exactly.

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
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch.distributed as dist
from torch import Tensor

from glt._capture import ResidualStack, iter_residuals
from glt._errors import GltError
from glt._readout import Readout, readout

__all__ = ["all_gather_list", "rank_and_world", "shard_range", "sharded_readout", "torchrun_group"]


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


def _cpu(r: Readout) -> Readout:
    vals = {k: (v.cpu() if isinstance(v, Tensor) else v) for k, v in vars(r).items()}
    return Readout(**vals)


def sharded_readout(
    model: Any,
    inputs: Sequence[Any],
    *,
    lens: Any = None,
    batch_size: int = 8,
    targets: Callable[[ResidualStack, range], Tensor] | None = None,
    prepend_bos: bool | None = None,
    truncate: bool = False,
    **readout_kwargs: Any,
) -> Readout:
    """Capture and read out ``inputs`` sharded over the ranks; every rank gets the merged result.

    Args:
        model: the rank's model (on the rank's device).
        inputs: texts or token id lists (every rank passes the same list).
        lens: the lens to read with; default the model's logit lens.
        batch_size: forward-pass batch size, the unit of sharding.
        targets: optional ``f(stack, items) -> [row] or [row, target]`` giving the targets of one
            batch (``items`` is the batch's range in ``inputs``); default the final top-1.
        prepend_bos, truncate: as in `glt.capture_residuals`.
        **readout_kwargs: passed to `glt.readout` (``positions``, ``top_k``, ``threads``, ...).

    Returns:
        The merged `Readout` on the CPU; ``batch_index`` counts items of ``inputs``.
    """
    from glt._lens import LogitLens

    if isinstance(inputs, str) or not isinstance(inputs, Sequence) or len(inputs) == 0:
        raise GltError(f"inputs must be a non-empty list of texts or token id lists, got {inputs!r:.80}")
    if targets is not None and not callable(targets):
        raise GltError(
            f"targets must be a function f(stack, items) -> ids (a global tensor cannot be "
            f"sharded), got {type(targets).__name__}"
        )
    lens = lens if lens is not None else LogitLens.from_model(model)
    shard = shard_range(len(inputs), batch_size=batch_size)
    parts: list[Readout] = []
    error = None
    try:
        if len(shard):
            stacks = iter_residuals(model, list(inputs[shard.start : shard.stop]),
                                    batch_size=batch_size, prepend_bos=prepend_bos,
                                    truncate=truncate)
            for i, stack in enumerate(stacks):
                start = shard.start + i * batch_size
                items = range(start, min(start + batch_size, shard.stop))
                tgt = None if targets is None else targets(stack, items)
                r = readout(stack, lens, targets=tgt, **readout_kwargs)
                parts.append(_cpu(Readout.concat([r], batch_offsets=[start])))
    except GltError as err:  # tell the other ranks instead of leaving them waiting
        error = f"rank {rank_and_world()[0]}: {err}"
    errors = [e for e in all_gather_list([error]) if e is not None]
    if errors:
        raise GltError("sharded read-out failed: " + "; ".join(errors))
    merged = all_gather_list(parts)
    if not merged:
        raise GltError("no rank produced a read-out: check inputs and positions")
    return Readout.concat(merged)
