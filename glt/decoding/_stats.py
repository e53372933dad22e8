"""What every read-out path shares: the matmul precision and the assembly of a chunk's statistics.

Both the tiled path (`glt.decoding._tiled`) and the fused CUDA path (`glt.decoding._fused`)
reduce a chunk to folded float64 pieces; `assemble_stats` turns them into the read-out's
statistics, so the two paths cannot disagree on the soft-cap, the KL or the entropy.
"""

from typing import Any

import torch
from torch import Tensor

from glt.core._errors import GltError

__all__ = ["EXTRA_CANDIDATES", "LOWP", "assemble_stats", "resolve_matmul_dtype"]

EXTRA_CANDIDATES = 4  # float32 top-k candidates kept beyond k, for the exact re-ranking
LOWP = (torch.bfloat16, torch.float16)


def resolve_matmul_dtype(matmul_dtype: Any) -> torch.dtype:
    """Validate ``matmul_dtype`` (None means float32)."""
    if matmul_dtype is None:
        return torch.float32
    if matmul_dtype not in (torch.float32, *LOWP):
        raise GltError(
            f"matmul_dtype must be torch.float32, torch.bfloat16 or torch.float16, got "
            f"{matmul_dtype!r}: pick one of these (float32 reproduces the float32 read-out)"
        )
    return matmul_dtype


def assemble_stats(
    targets: Tensor, above: Tensor, t64: Tensor, top_v: Tensor, top_i: Tensor, c: Tensor,
    s: Tensor, e: Tensor, cross: Tensor, n_layer: int, cap: float | None,
) -> dict[str, Tensor]:
    """`chunk_stats`'s result from the folded float64 pieces of one chunk (any kernel).

    Per ``[layer * row]``: ``c`` the max logit, ``s = sum exp(z - c)``, ``e = sum exp(z - c)
    (z - c)`` and ``cross = sum_v p_final(v) (z(v) - c)``; ``above`` ``[layer * row, target]``
    exact counts, ``t64`` the exact target logits and ``top_v`` / ``top_i`` the exact top-k
    (all pre-cap; the soft-cap ``cap`` is applied to the log-probabilities here).
    """
    rows, n_t = targets.shape
    k = top_i.shape[-1]
    lse = c + torch.log(s)
    ent = torch.log(s) - e / s
    kl = (-ent[-rows:].repeat(n_layer) - cross + torch.log(s)).clamp_min(0.0)
    kl[-rows:] = 0.0

    def capped(v: Tensor) -> Tensor:
        return v if cap is None else torch.tanh(v / cap) * cap

    shape = (n_layer, rows)
    return {
        "targets": targets,
        "ranks": above.view(*shape, n_t),
        "target_logprobs": (capped(t64) - lse[:, None]).float().view(*shape, n_t),
        "topk_ids": top_i.view(*shape, k),
        "topk_logprobs": (capped(top_v) - lse[:, None]).float().view(*shape, k),
        "entropy": ent.float().view(shape),
        "kl_to_final": kl.float().view(shape),
    }
