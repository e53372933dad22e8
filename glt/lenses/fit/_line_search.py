"""A well-conditioned optimiser for tuned lenses: preconditioned gradient, per-layer line search.

Why: models with massive residual activations (Gemma 3: residual norms from ~30 at the
embeddings to ~4e4 at the last layer, dominated by a few coordinates) make the KL gradient with
respect to ``A_l`` concentrate on those coordinates, so tuned-lens's SGD recipe (lr 1) overshoots
by orders of magnitude at the deep layers (held-out KL of the last translator 0.42 -> 49 nats after
two steps on the default model), while a learning rate small enough for them stalls the rest.

What: each step takes the KL gradient of every translator over the step's positions, divides
column ``j`` of ``dA_l`` by ``mean(h_l[j]^2)`` (a diagonal input whitening, so every input
coordinate moves the translator output equally), rescales the direction so that a unit step
changes ``h + A h + b`` by 100% of its RMS norm on a set of validation positions, and then tries
three step sizes per layer (``c/3, c, 3c`` around a per-layer centre ``c``) on those validation
positions. Each layer keeps the size whose validation KL improvement is largest after subtracting
one standard error of the per-position improvements (paired over the same positions), or none
if no size improves by more than that margin, so the step sizes do not chase noise in a small
validation set; the centre moves toward the winner. Each layer's KL depends only on its own translator, so one
evaluation
pass per candidate serves all layers at once.

Validation KL is computed in the unembedding's own precision (float32 for float32 models) even
when training tiles are bfloat16: at the deep layers the accepted gains are a few thousandths of
a nat, the size of bfloat16 tile error. ``layers`` restricts the search to some translators (the
others are neither evaluated nor changed). The validation positions come from many texts, a
few each (`glt.lenses.fit._data.VAL_PER_SEQ`). With ``row_weight`` (the frequency-reweighted objective)
the validation KL, its improvements and their standard error are weighted the same way as the
training gradient, so step sizes are chosen for the objective being trained.
"""

from collections.abc import Callable
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from glt.lenses._tuned import TunedLens
from glt.lenses.fit._loss import tiled_kl_ce

__all__ = ["LineSearch"]

_FACTORS = (1 / 3, 1.0, 3.0)


class LineSearch:
    """Per-layer line search state over fixed validation residuals ``h_val [layer, row, d_model]``.

    ``layers`` (translator indices, increasing) restricts the search; None searches all.
    ``row_weight(top1) -> [row]`` weights each validation position by its final top-1 token
    (normalised to mean 1); None weighs them equally.
    """

    def __init__(self, lens: TunedLens, h_val: Float[Tensor, "layer row d_model"], W: Tensor, *,
                 start: float = 0.01, tile: int = 8192, layers: Tensor | None = None,
                 row_weight: Callable[[Tensor], Tensor] | None = None) -> None:
        self.lens, self.W, self.tile = lens, W, tile
        self.sel = torch.arange(lens.n_layers) if layers is None else layers
        self.head = h_val[:-1][self.sel].float()  # [selected layer, row, d_model]
        self.final = h_val[-1].float()
        self.m = self.head.pow(2).mean(1) + 1e-6  # input second moments per selected layer
        self.centre = torch.full((len(self.sel),), float(start))
        w0, b0 = lens.weight.detach()[self.sel], lens.bias.detach()[self.sel]
        if row_weight is None:
            self.f0, self.w = self.val_kl(w0, b0), torch.ones(self.final.shape[0])
        else:
            self.f0, top1 = self.val_kl(w0, b0, return_top1=True)
            w = row_weight(top1).float()
            self.w = w / w.mean()  # [row], mean 1

    def val_kl(self, weight: Tensor, bias: Tensor, return_top1: bool = False) -> Any:
        """Validation KL ``[layer, row]`` of the selected translators ``(weight, bias)``.

        With ``return_top1`` also the final distribution's top-1 token per position.
        """
        head = self.head
        moved = head + torch.einsum("lri,loi->lro", head, weight) + bias[:, None]
        u = self.lens.unembed
        with torch.no_grad():
            out = tiled_kl_ce(u, u.normalize(moved), u.normalize(self.final), W=self.W,
                              compute_dtype=self.W.dtype, tile=self.tile, return_top1=return_top1)
        return (out[0], out[2]) if return_top1 else out[0]

    def step(self, g_weight: Tensor, g_bias: Tensor) -> dict[str, Any]:
        """Update ``lens`` in place from the mean KL gradients; returns what was chosen."""
        lens, sel = self.lens, self.sel
        with torch.no_grad():
            w0, b0 = lens.weight.detach()[sel].clone(), lens.bias.detach()[sel].clone()
            d_w = -g_weight[sel] / self.m[:, None, :]
            d_b = -g_bias[sel]
            head = self.head
            cur = head + torch.einsum("lri,loi->lro", head, w0) + b0[:, None]
            delta = torch.einsum("lri,loi->lro", head, d_w) + d_b[:, None]
            scale = delta.pow(2).sum(-1).mean(-1).sqrt() / cur.pow(2).sum(-1).mean(-1).sqrt()
            scale = torch.where(scale > 0, scale, torch.ones_like(scale))
            d_w, d_b = d_w / scale[:, None, None], d_b / scale[:, None]
            trials = []
            for k in _FACTORS:
                eta = self.centre * k
                trials.append(self.val_kl(w0 + eta[:, None, None] * d_w, b0 + eta[:, None] * d_b))
            f = torch.stack([self.f0] + trials)  # [1 + candidates, layer, row]
            gain = (self.f0[None] - f) * self.w  # weighted like the training objective
            n = gain.shape[-1]
            se = gain.std(-1) / max(n, 2) ** 0.5 if n > 1 else torch.zeros_like(gain[..., 0])
            score = gain.mean(-1) - se  # [1 + candidates, layer]; candidate 0 scores 0
            best = score.argmax(0)
            factors = torch.tensor((0.0,) + _FACTORS)
            eta = self.centre * factors[best]
            lens.weight[sel] = w0 + eta[:, None, None] * d_w
            lens.bias[sel] = b0 + eta[:, None] * d_b
            self.f0 = f[best, torch.arange(f.shape[1])]
            # move the centre toward the winner; shrink it when no candidate helped
            self.centre = torch.where(best == 0, self.centre / 3, eta.clamp_min(1e-6))
        return {"step_sizes": eta.tolist(), "val_kl": (self.f0 * self.w).mean(-1).tolist()}
