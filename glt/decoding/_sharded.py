"""The sharded read-out: capture and read out prompts over ``torch.distributed`` ranks, merged exactly.

Batches are dealt to ranks by `glt.core._distributed.shard_range` exactly as one process would
cut them, so the merged `Readout` equals the single-process one (see that module).

Example:
    >>> # torchrun --nproc_per_node 2 my_study.py, where my_study.py does:
    >>> # torch.distributed.init_process_group("gloo")
    >>> # r = glt.sharded_readout(model, texts, batch_size=8)   # same Readout on every rank
"""

from collections.abc import Callable, Sequence
from typing import Any

from torch import Tensor

from glt.core._capture import ResidualStack, iter_residuals
from glt.core._check import checked
from glt.core._distributed import all_gather_list, rank_and_world, shard_range
from glt.core._errors import GltError
from glt.decoding._readout import Readout, readout
from glt.lenses._logit import LogitLens
from glt.lenses._protocol import Lens

__all__ = ["sharded_readout"]


def _cpu(r: Readout) -> Readout:
    vals = {k: (v.cpu() if isinstance(v, Tensor) else v) for k, v in vars(r).items()}
    return Readout(**vals)


@checked
def sharded_readout(
    model: Any,
    inputs: Sequence[Any],
    *,
    lens: Lens | None = None,
    batch_size: int = 8,
    targets: Callable[[ResidualStack, range], Tensor] | None = None,
    prepend_bos: bool | None = None,
    truncate: bool = False,
    resid_mid: bool = False,
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
        prepend_bos, truncate, resid_mid: as in `glt.capture_residuals` (``resid_mid`` needs a lens
            that reads mid-block residuals: the logit lens).
        **readout_kwargs: passed to `glt.readout` (``positions``, ``top_k``, ``threads``, ...).

    Returns:
        The merged `Readout` on the CPU; ``batch_index`` counts items of ``inputs``.
    """
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
                                    truncate=truncate, resid_mid=resid_mid)
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
