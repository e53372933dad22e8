"""Assemble the read-out's statistics from the fused kernel's per-block outputs (CUDA path).

`chunk_stats_fused` returns exactly what `glt.decoding._tiled.chunk_stats` returns, from two
launches of `glt.decoding._triton_kernel.fused_block_stats`:

1. the final layer's rows, storing their logits: folded into the final log-sum-exp, turned into
   ``p_final`` in place, and (when no targets are given) the final top-1 as the default target;
2. every layer's rows against the targets' band edges and ``p_final``.

Per (row, token block) the kernel keeps the two best logits, so top-k is exact after a check:
a block whose second logit could still reach the k-th best (within the error bound) is
recomputed whole and all its tokens join the candidates, which `glt.decoding._exact.exact_topk` then
re-ranks exactly. Band tokens (within the bound of a target's exact logit) are known by id when a
block holds one or two; a block holding more is re-evaluated exactly token by token. The
log-sum-exp, entropy and KL pieces are folded over blocks in float64 as in the eager kernel.
"""

from typing import Any

import torch
from torch import Tensor

from glt.decoding._exact import error_bound, exact_logits_at, exact_topk, target_band, weight_stats
from glt.decoding._stats import EXTRA_CANDIDATES, LOWP, assemble_stats
from glt.decoding._triton_kernel import fused_block_stats, k_chain

__all__ = ["chunk_stats_fused", "operand_weight"]

_W_CACHE: dict[tuple, Tensor] = {}
BLOCK = (64, 128, 64)  # rows, tokens, d_model slice per program
NUM_WARPS, NUM_STAGES = 4, 3


def operand_weight(W: Tensor, dtype: torch.dtype) -> Tensor:
    """``W`` in the matmul's operand dtype, converted once per weight version (cached)."""
    if W.dtype == dtype:
        return W.contiguous()
    key = (W.data_ptr(), tuple(W.shape), W._version, str(W.device), dtype)
    hit = _W_CACHE.get(key)
    if hit is None:
        _W_CACHE.clear()  # one model at a time: keep memory bounded
        hit = _W_CACHE[key] = W.to(dtype).contiguous()
    return hit


def _fold(o: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """``(c, s, e)`` per row in float64: the max, ``sum exp(z - c)``, ``sum exp(z - c)(z - c)``."""
    cb = o["m1"].double()
    c = cb.amax(0)
    dc = cb - c
    f = torch.exp(dc)
    s_b = o["s"].double()
    return c, (f * s_b).sum(0), (f * (o["ez"].double() + dc * s_b)).sum(0)


def _block_logits(x_op: Tensor, W_op: Tensor, b: Tensor | None, rows: Tensor, blocks: Tensor,
                  bn: int) -> tuple[Tensor, Tensor]:
    """Float32 logits and ids of whole token blocks ``blocks`` for rows ``rows`` ``[P, bn]``."""
    V = W_op.shape[0]
    ids = blocks[:, None] * bn + torch.arange(bn, device=x_op.device)
    ok = ids < V
    ids = ids.clamp_max(V - 1)
    z = torch.empty(ids.shape, device=x_op.device)
    for a in range(0, ids.shape[0], 256):  # a few MB of gathered weights at a time
        z[a : a + 256] = torch.bmm(W_op[ids[a : a + 256]].float(),
                                   x_op[rows[a : a + 256]].float()[:, :, None])[..., 0]
    if b is not None:
        z = z + b[ids].float()
    return torch.where(ok, z, -torch.inf), torch.where(ok, ids, -1)


def _topk(o: dict[str, Tensor], k: int, delta: Tensor, x_op: Tensor, W_op: Tensor,
          b: Tensor | None, x64: Tensor, w_rows: Any, bn: int) -> tuple[Tensor, Tensor]:
    """Exact top-k ``(float64 logit, id)`` per row from the per-block best two."""
    V = W_op.shape[0]
    m2 = o["m2"].T  # [row, block]
    cv = torch.cat([o["m1"].T, m2], -1)
    i2 = torch.where(torch.isfinite(o["m2"]), o["i2"], -1)  # a block with a single token
    ci = torch.cat([o["i1"].T, i2.T], -1).long()
    n_keep = min(k + EXTRA_CANDIDATES, cv.shape[1])
    tv, sel = cv.topk(min(n_keep + 1, cv.shape[1]), -1)
    ti = ci.gather(-1, sel)
    dropped = tv[:, n_keep] if tv.shape[1] > n_keep else torch.full_like(tv[:, 0], -torch.inf)
    tv, ti = tv[:, :n_keep], ti[:, :n_keep]
    # a block whose 2nd logit may still reach the k-th best can hide a 3rd top-k token
    kth = tv[:, min(k, n_keep) - 1].double()
    need = (m2.double() >= (kth - 2 * delta)[:, None]) & torch.isfinite(m2)
    floor = torch.where(need, -torch.inf, m2).amax(-1).clamp_min(dropped)
    pr, pb = need.nonzero(as_tuple=True)
    if pr.numel():
        dup = need.gather(-1, (ti.clamp_min(0) // bn))  # candidates inside a recomputed block
        tv, ti = torch.where(dup, -torch.inf, tv), torch.where(dup, -1, ti)
        z, ids = _block_logits(x_op, W_op, b, pr, pb, bn)
        counts = torch.bincount(pr, minlength=cv.shape[0])
        slot = torch.arange(pr.numel(), device=pr.device) - (torch.cumsum(counts, 0) - counts)[pr]
        width = int(counts.max()) * bn
        ev = torch.full((cv.shape[0], width), -torch.inf, device=cv.device)
        ei = torch.full((cv.shape[0], width), -1, dtype=torch.long, device=cv.device)
        cols = slot[:, None] * bn + torch.arange(bn, device=pr.device)
        ev[pr[:, None], cols], ei[pr[:, None], cols] = z, ids
        tv, ti = torch.cat([tv, ev], -1), torch.cat([ti, ei], -1)
    return exact_topk(tv, ti, floor, delta, k, x64, w_rows, b, V)


def _ranks(o: dict[str, Tensor], t64: Tensor, x64: Tensor, w_rows: Any, b: Tensor | None,
           bn: int, V: int) -> Tensor:
    """Exact count of logits strictly above each target ``[row, target]``."""
    n_t = t64.shape[1]
    above = o["gt"].long().sum(1).T.clone()  # [row, target]
    nb, lo_id, hi_id = o["nb"], o["bmin"].long(), o["bmax"].long()
    for j in range(n_t):
        for want, ids in (((nb[j] == 1) | (nb[j] == 2), lo_id[j]), (nb[j] == 2, hi_id[j])):
            blk, r = want.nonzero(as_tuple=True)
            if r.numel():
                v = ids[blk, r]
                ex = exact_logits_at(x64, r, w_rows, v, b)
                above[:, j].index_add_(0, r, (ex > t64[r, j]).long())
        blk, r = (nb[j] >= 3).nonzero(as_tuple=True)  # re-evaluate these blocks token by token
        if r.numel():
            ids = blk[:, None] * bn + torch.arange(bn, device=x64.device)
            ok = ids < V
            rr = r[:, None].expand_as(ids)[ok]
            ex = exact_logits_at(x64, rr, w_rows, ids[ok], b)
            n_up = torch.zeros(ids.shape, dtype=torch.long, device=x64.device)
            n_up[ok] = (ex > t64[rr, j]).long()
            above[:, j].index_add_(0, r, n_up.sum(-1) - o["gt"][j, blk, r].long())
    return above


def chunk_stats_fused(
    unembed: Any, x: Tensor, targets: Tensor | None, top_k: int, *, matmul_dtype: torch.dtype,
    block: tuple[int, int, int] | None = None, num_warps: int | None = None,
    num_stages: int | None = None,
) -> dict[str, Tensor]:
    """`glt.decoding._tiled.chunk_stats` on the fused kernel (no soft-cap; CUDA or interpreter)."""
    n_layer, rows, d_model = x.shape
    W, b = unembed.W, unembed.b
    V = W.shape[0]
    lowp = matmul_dtype in LOWP
    W_op = operand_weight(W, matmul_dtype if lowp else torch.float32)
    flat = x.reshape(n_layer * rows, d_model)
    x_op = (flat.to(matmul_dtype) if lowp else flat.float()).contiguous()
    x64 = x_op.double()
    wmax, bmax = weight_stats(W, b, matmul_dtype if lowp else W.dtype)
    block = block or BLOCK
    delta = error_bound(x_op, wmax, bmax, lowp and x.is_cuda, n_terms=k_chain(d_model, block[2]))
    bn = block[1]
    launch = dict(block=block, num_warps=num_warps or NUM_WARPS, num_stages=num_stages or NUM_STAGES)

    def w_rows(v: Tensor) -> Tensor:
        return W_op[v]

    k = min(top_k, V)
    # 1. the final layer: logits stored, folded into p_final (and the default target)
    p_final = torch.empty(rows, V, dtype=torch.float32, device=x.device)
    pre = fused_block_stats(x_op[-rows:], W_op, b, rows, store_z=p_final, **launch)
    c_f, s_f, _ = _fold(pre)
    p_final.sub_((c_f + torch.log(s_f)).float()[:, None]).exp_()
    if targets is None:
        _, targets = _topk(pre, 1, delta[-rows:], x_op[-rows:], W_op, b, x64[-rows:], w_rows, bn)
    del pre
    t64, hi, lo = target_band(x64, targets, w_rows, b, delta)
    # 2. every layer
    o = fused_block_stats(x_op, W_op, b, rows, hi=hi, lo=lo, p_final=p_final, **launch)
    del p_final
    c, s, e = _fold(o)
    above = _ranks(o, t64, x64, w_rows, b, bn, V)
    top_v, top_i = _topk(o, k, delta, x_op, W_op, b, x64, w_rows, bn)
    # sum_v p_final(v) (z_layer(v) - c_layer) from the per-block pieces (block max m1)
    cross = (o["kd"].double() + (o["m1"].double() - c) * o["ps"].double()).sum(0)
    return assemble_stats(targets, above, t64, top_v, top_i, c, s, e, cross, n_layer, None)
