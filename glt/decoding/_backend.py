"""The read-out's backend switch: the fused Triton kernel where it runs, the tiled path elsewhere.

`chunk_stats` returns the same statistics from either path (`glt.decoding._tiled`,
`glt.decoding._fused`). The fused kernel is used on CUDA (or under ``GLT_FUSED=1``, Triton's
CPU interpreter) when Triton is installed and the model has no soft-cap.
"""

import os
from typing import Any

import torch
from torch import Tensor

from glt.decoding import _tiled

__all__ = ["chunk_stats"]


def chunk_stats(
    unembed: Any,
    x: Tensor,
    targets: Tensor | None,
    top_k: int,
    *,
    tile: int,
    matmul_dtype: torch.dtype,
    workers: int,
) -> dict[str, Tensor]:
    """Every statistic for ``x`` ``[layer, rows, d_model]`` (normalised, float32), on the best path.

    ``targets`` ``[rows, target]`` or None (the final layer's exact top-1, lowest id on ties).
    Returns ranks, target_logprobs, topk_ids, topk_logprobs, entropy, kl_to_final and targets.
    """
    if unembed.softcap is None and (x.is_cuda or os.environ.get("GLT_FUSED") == "1"):
        from glt.decoding._triton_kernel import available  # imports Triton: only where it may run

        if available(x, unembed.softcap, matmul_dtype):
            from glt.decoding._fused import chunk_stats_fused  # imports Triton too

            return chunk_stats_fused(unembed, x, targets, top_k, matmul_dtype=matmul_dtype)
    return _tiled.chunk_stats(unembed, x, targets, top_k, tile=tile, matmul_dtype=matmul_dtype,
                              workers=workers)
