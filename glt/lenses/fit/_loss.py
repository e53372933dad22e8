"""KL(final || lens) and next-token cross-entropy over a huge vocabulary, tiled, with gradients.

The tuned lens is trained on ``KL(p_final || p_layer)`` at the same position for every layer.
With 262,144 vocabulary entries a ``[layer, rows, d_vocab]`` logit tensor does not fit, and
autograd would keep one per layer for the backward. `tiled_kl` walks the vocabulary in tiles
instead and keeps running reductions (an online log-sum-exp). When its input needs a gradient it
also accumulates, in the same pass, the gradient itself::

    dKL/dx_l = sum_v (q_l(v) - p_final(v)) * dz_l(v)/dx_l
             = E_{q_l}[c'_v W_v] - E_{p_final}[c'_v W_v]

(``c'`` the soft-cap derivative, 1 without a soft-cap), so the backward pass is a multiplication
by a saved ``[layer, rows, d_model]`` tensor and no vocabulary pass at all: two matmuls per tile
in total instead of the three a recompute-in-backward scheme needs. Peak extra memory is a few
``[layer * rows, vocab_tile]`` tiles.

``compute_dtype=torch.bfloat16`` runs the tile matmuls in bfloat16 (3-4x faster on CPUs with
AVX512-BF16; logits rounded to ~3 significant digits, which training tolerates). The final
layer's distribution is always computed in float32.
"""

from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

__all__ = ["final_stats", "tiled_kl", "tiled_kl_ce", "tiled_top1"]

_TILE = 8192


def _logits(unembed: Any, W: Tensor, x: Tensor, a: int, b: int) -> tuple[Tensor, Tensor | None]:
    """Float32 logits of rows ``x`` over vocabulary ``[a, b)`` and the soft-cap derivative."""
    z = (x.to(W.dtype) @ W[a:b].T).float()
    if unembed.b is not None:
        z = z + unembed.b[a:b].float()
    if unembed.softcap is None:
        return z, None
    t = torch.tanh(z / unembed.softcap)
    return t * unembed.softcap, 1.0 - t * t


def tiled_top1(unembed: Any, xf: Float[Tensor, "row d_model"], tile: int = _TILE) -> Tensor:
    """Arg-max token of each normalised row's float32 logits (lowest id on ties), by vocabulary tile.

    The same logits and tie rule as `final_stats`'s ``top1``, without its expectations.
    """
    xf = xf.float()
    best = torch.full(xf.shape[:1], -torch.inf, device=xf.device)
    top = torch.zeros(xf.shape[:1], dtype=torch.long, device=xf.device)
    for a in range(0, unembed.d_vocab, tile):
        tmax, targ = _logits(unembed, unembed.W, xf, a, a + tile)[0].max(-1)
        top = torch.where(tmax > best, targ + a, top)
        best = torch.maximum(best, tmax)
    return top


def final_stats(
    unembed: Any, xf: Float[Tensor, "row d_model"], tile: int = _TILE, Wc: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None, Tensor]:
    """Statistics of the final layer's distribution ``p`` (rows already normalised), float32.

    Returns ``(lse, E_p[z], E_p[W_v], E_p[b_v], top1)``; ``E_p[W_v]`` and ``E_p[b_v]`` (None with
    a soft-cap) make the KL cross term linear in the lens residual:
    ``sum_v p(v) z_l(v) = x_l . E_p[W_v] + E_p[b_v]``; ``top1`` is the arg-max (lowest id on ties).
    Logits are float32; ``E_p[W_v]`` is accumulated with ``Wc`` (a low-precision copy) if given.
    """
    W = unembed.W
    xf = xf.float()
    m = torch.full(xf.shape[:1], -torch.inf, device=xf.device)
    s = torch.zeros_like(m)
    zp = torch.zeros_like(m)  # sum exp(z - m) z
    linear = unembed.softcap is None
    ew = torch.zeros_like(xf) if linear else None
    eb = torch.zeros_like(m) if linear and unembed.b is not None else None
    top = torch.zeros(xf.shape[:1], dtype=torch.long, device=xf.device)
    for a in range(0, unembed.d_vocab, tile):
        z, _ = _logits(unembed, W, xf, a, a + tile)
        tmax, targ = z.max(-1)
        top = torch.where(tmax > m, targ + a, top)
        m_new = torch.maximum(m, tmax)
        scale = torch.exp(m - m_new)
        e = torch.exp(z - m_new[:, None])
        s = s * scale + e.sum(-1)
        zp = zp * scale + (e * z).sum(-1)
        if ew is not None:
            if Wc is None:
                ew = ew * scale[:, None] + e @ W[a : a + tile].float()
            else:
                ew = ew * scale[:, None] + (e.to(Wc.dtype) @ Wc[a : a + tile]).float()
        if eb is not None:
            eb = eb * scale + e @ unembed.b[a : a + tile].float()
        m = m_new
    return (
        m + torch.log(s),
        zp / s,
        None if ew is None else ew / s[:, None],
        None if eb is None else eb / s,
        top,
    )


class _TiledKL(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: Tensor,
        xf: Tensor,
        W: Tensor,
        unembed: Any,
        tile: int,
        targets: Tensor | None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        n_layer, rows, d = x.shape
        want_grad = ctx.needs_input_grad[0]
        flat = x.detach().reshape(n_layer * rows, d).to(W.dtype)  # cast once, not per tile
        dev = x.device
        lse_f, zp_f, ew, eb, top1 = final_stats(
            unembed, xf.detach(), tile, None if W.dtype == unembed.W.dtype else W
        )
        linear = ew is not None
        m = torch.full((n_layer * rows,), -torch.inf, device=dev)
        s = torch.zeros_like(m)
        cross = torch.zeros(n_layer, rows, device=dev)  # sum_v p_f(v) z_l(v)
        tgt = torch.full_like(m, torch.nan)
        acc_q = torch.zeros(n_layer * rows, d, device=dev) if want_grad else None
        acc_p = None if linear or not want_grad else torch.zeros(n_layer * rows, d, device=dev)
        tflat = targets.repeat(n_layer) if targets is not None else None
        for a in range(0, unembed.d_vocab, tile):
            z, cprime = _logits(unembed, W, flat, a, a + tile)
            width = z.shape[1]
            if not linear:  # soft-cap: the cross term needs p_final per tile (float32)
                zf, _ = _logits(unembed, unembed.W, xf.float(), a, a + width)
                pf = torch.exp(zf - lse_f[:, None])
                cross += (z.view(n_layer, rows, -1) * pf).sum(-1)
            m_new = torch.maximum(m, z.amax(-1))
            scale = torch.exp(m - m_new)
            e = torch.exp(z - m_new[:, None])
            s = s * scale + e.sum(-1)
            m = m_new
            if tflat is not None:
                inside = (tflat >= a) & (tflat < a + width)
                if bool(inside.any()):
                    r = inside.nonzero().flatten()
                    tgt[r] = z[r, tflat[r] - a]
            if want_grad:
                Wt = W[a : a + width]
                if cprime is not None:
                    e = e * cprime
                acc_q.mul_(scale[:, None]).add_((e.to(W.dtype) @ Wt).float())
                if acc_p is not None:
                    pp = (pf.unsqueeze(0) * cprime.view(n_layer, rows, -1)).reshape(n_layer * rows, -1)
                    acc_p.add_((pp.to(W.dtype) @ Wt).float())
        if linear:
            cross = torch.einsum("lrd,rd->lr", x.detach().float(), ew)
            if eb is not None:
                cross = cross + eb
        lse = (m + torch.log(s)).view(n_layer, rows)
        kl = zp_f - lse_f - cross + lse
        ce = lse - tgt.view(n_layer, rows)
        if want_grad:
            grad = (acc_q / s[:, None]).view(n_layer, rows, d)
            grad = grad - (ew.unsqueeze(0) if linear else acc_p.view(n_layer, rows, d))
            ctx.save_for_backward(grad.to(x.dtype))
        ctx.mark_non_differentiable(ce, top1)
        return kl, ce, top1

    @staticmethod
    def backward(ctx: Any, grad_kl: Tensor, grad_ce: Tensor, grad_top: Tensor) -> tuple[Any, ...]:  # type: ignore[override]
        (grad,) = ctx.saved_tensors
        return (grad_kl.unsqueeze(-1) * grad, None, None, None, None, None)


def tiled_kl_ce(
    unembed: Any,
    x: Float[Tensor, "layer row d_model"],
    xf: Float[Tensor, "row d_model"],
    *,
    targets: Int[Tensor, " row"] | None = None,
    compute_dtype: torch.dtype = torch.float32,
    tile: int = _TILE,
    W: Tensor | None = None,
    return_top1: bool = False,
) -> Any:
    """``KL(p_final || p_layer)`` per layer and row, and the cross-entropy of ``targets``.

    Args:
        unembed: a `glt.Unembed` (its ``W``, ``b`` and ``softcap`` are used; ``x`` must already
            be normalised by ``unembed.normalize``).
        x: normalised lens residuals ``[layer, row, d_model]``; differentiable.
        xf: normalised final residuals ``[row, d_model]`` (the distribution to match).
        targets: next-token ids ``[row]`` for the cross-entropy (NaN where None).
        compute_dtype: dtype of the tile matmuls (float32 or bfloat16).
        tile: vocabulary tile width.
        W: the unembedding already cast to ``compute_dtype`` (cached by callers; optional).
        return_top1: also return the final layer's top-1 token per row.

    Returns:
        ``(kl, ce)``, both ``[layer, row]`` in nats (``kl`` differentiable in ``x``), and
        ``top1 [row]`` when ``return_top1``.

    Example:
        >>> import torch
        >>> from glt.lenses._logit import Unembed
        >>> u = Unembed(torch.nn.Identity(), torch.randn(4, 7), None)
        >>> xf = torch.randn(3, 4)
        >>> kl, ce = tiled_kl_ce(u, xf[None], xf, tile=3)
        >>> bool(kl.abs().max() < 1e-5), tuple(ce.shape)
        (True, (1, 3))
    """
    if W is None:
        W = unembed.W if unembed.W.dtype == compute_dtype else unembed.W.to(compute_dtype)
    kl, ce, top1 = _TiledKL.apply(x, xf.detach(), W, unembed, tile, targets)
    return (kl, ce, top1) if return_top1 else (kl, ce)


def tiled_kl(
    unembed: Any,
    x: Float[Tensor, "layer row d_model"],
    xf: Float[Tensor, "row d_model"],
    **kwargs: Any,
) -> Float[Tensor, "layer row"]:
    """`tiled_kl_ce` without the cross-entropy: ``KL(p_final || p_layer)``, ``[layer, row]``."""
    return tiled_kl_ce(unembed, x, xf, **kwargs)[0]
