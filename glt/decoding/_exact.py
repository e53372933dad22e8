"""Exact arithmetic for the read-out: float64 logits, rigorous float32 error bounds, exact top-k.

The streamed read-out (`glt.decoding._tiled`, `glt.decoding._fused`) computes float32 tile logits; this module decides
everything a float32 rounding could get wrong:

* `exact_logits`: ``x . w (+ b)`` in float64 from float32 or 16-bit operands (whose products are
  exact in float64), summed by a fixed pairwise tree, so the value of a logit never depends on
  batch size, threads or device and identical unembedding rows tie exactly;
* `error_bound`: the half-width ``delta`` of a band that provably holds every exact logit around
  its float32 tile value: ``gamma_n * ||x|| * max_v ||W_v||`` with ``gamma_n = n u / (1 - n u)``
  (Higham's dot-product bound, valid for any summation order, with ``n`` the longest chain of
  roundings; Cauchy-Schwarz for the sum of ``|x_d w_d|``), doubled for CUDA half-precision tensor
  cores whose adders may truncate, plus float32 rounding of a bias;
* `exact_topk`: re-ranks float32 top-k candidates exactly (ties: lowest id first) and verifies
  that no other token can beat the k-th, falling back to a full exact row when it could.

Example:
    >>> x = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    >>> exact_logits(x, torch.tensor([[3.0, 4.0]]), None)
    tensor([11.], dtype=torch.float64)
"""

import threading
from collections.abc import Callable

import torch
from torch import Tensor

__all__ = [
    "error_bound", "exact_logits", "exact_logits_at", "exact_topk", "round_outward", "target_band",
    "weight_stats",
]

_W_STATS: "dict[tuple, tuple[float, float]]" = {}
_W_STATS_LOCK = threading.Lock()


def _budget(x: Tensor) -> int:
    """Float64 products per slice: 4 MB on CPU (stays in cache), 256 MB on a GPU (few launches)."""
    return 2**25 if x.is_cuda else 2**19


def exact_logits(x64: Tensor, w_rows: Tensor, b_rows: Tensor | None) -> Tensor:
    """Row-wise ``x64 . w_rows (+ b)`` in float64 by a fixed pairwise tree (bitwise reproducible).

    The products of float32 (or 16-bit) operands are exact in float64; the fixed tree makes the
    sum independent of batch size, threads and device, so identical unembedding rows tie exactly.
    """
    out = torch.empty(x64.shape[0], dtype=torch.float64, device=x64.device)
    step = max(1, _budget(x64) // max(1, x64.shape[-1]))
    for a in range(0, x64.shape[0], step):
        p = x64[a : a + step] * w_rows[a : a + step].to(torch.float64)
        d = p.shape[-1]
        while d > 1:
            h = d // 2
            q = p[:, :h] + p[:, h : 2 * h]
            if d % 2:
                q[:, 0] += p[:, 2 * h]
            p, d = q, h
        out[a : a + step] = p[:, 0]
    if b_rows is not None:
        out = out + b_rows.to(torch.float64)
    return out


def exact_logits_at(
    x64: Tensor, rows: Tensor, w_rows: Callable[[Tensor], Tensor], ids: Tensor, b: Tensor | None
) -> Tensor:
    """`exact_logits` of ``x64[rows]`` against unembedding rows ``ids``, gathered in slices.

    Memory stays at a few MB however many (row, id) pairs are asked for.
    """
    out = torch.empty(rows.shape[0], dtype=torch.float64, device=x64.device)
    step = max(1, _budget(x64) // max(1, x64.shape[-1]))
    for a in range(0, rows.shape[0], step):
        r, v = rows[a : a + step], ids[a : a + step]
        out[a : a + step] = exact_logits(x64[r], w_rows(v), None if b is None else b[v])
    return out


def weight_stats(W: Tensor, b: Tensor | None, dtype: torch.dtype) -> tuple[float, float]:
    """``max_v ||W_v||`` (of the operand) and ``max |b|``, cached per weight tensor version."""
    key = (W.data_ptr(), tuple(W.shape), W._version, str(W.device), dtype,
           None if b is None else (b.data_ptr(), b._version))
    with _W_STATS_LOCK:
        hit = _W_STATS.get(key)
    if hit is not None:
        return hit
    wmax = 0.0
    for a in range(0, W.shape[0], 16384):
        blk = W[a : a + 16384].to(dtype).double()
        wmax = max(wmax, float(blk.norm(dim=-1).max()))
    bmax = 0.0 if b is None else float(b.double().abs().max())
    with _W_STATS_LOCK:
        if len(_W_STATS) > 8:
            _W_STATS.clear()
        _W_STATS[key] = (wmax, bmax)
    return wmax, bmax


def error_bound(x_op: Tensor, wmax: float, bmax: float, cuda_lowp: bool, n_terms: int) -> Tensor:
    """Half-width of a band that holds every exact logit around its float32 tile value.

    ``gamma_n * ||x|| * wmax`` with ``n = n_terms`` the longest chain of roundings a product
    goes through (``d_model``, or less when the matmul accumulates slices separately), doubled
    for CUDA half-precision tensor cores, plus the float32 rounding of a bias.
    """
    u = 2.0**-24
    gamma = n_terms * u / (1 - n_terms * u)
    safety = 2.0 if cuda_lowp else 1.0  # tensor cores may truncate instead of rounding
    xn = x_op.double().norm(dim=-1)
    return safety * gamma * (xn * wmax) + 2 * u * (xn * wmax + bmax) * (bmax > 0) + 1e-300


def round_outward(t: Tensor, up: bool) -> Tensor:
    """Float64 ``t`` as float32, rounded up (``up``) or down, never towards the other side."""
    f = t.float()
    inf = torch.full_like(f, torch.inf if up else -torch.inf)
    off = (f.double() < t) if up else (f.double() > t)
    return torch.where(off, torch.nextafter(f, inf), f)


def target_band(
    x64: Tensor, targets: Tensor, w_rows: Callable[[Tensor], Tensor], b: Tensor | None,
    delta: Tensor,
) -> tuple[Tensor, Tensor, Tensor]:
    """Exact target logits and the float32 band edges around them, ``[layer * row, target]`` each.

    ``x64`` holds ``[layer * row, d_model]`` exact operand rows (layer-major), ``targets``
    ``[row, target]`` the ids read at every layer, ``delta`` ``[layer * row]`` the `error_bound`.
    Returns ``(t64, hi, lo)``: ``hi`` / ``lo`` are ``t64 +- delta`` rounded outward to float32,
    so a float32 tile logit above ``hi`` (below ``lo``) is surely above (below) the target.
    """
    n_rows, n_t = targets.shape
    n_all = x64.shape[0]
    r_all = torch.arange(n_all, device=x64.device).repeat_interleave(n_t)
    ids = targets[r_all % n_rows, torch.arange(n_t, device=x64.device).repeat(n_all)]
    t64 = exact_logits_at(x64, r_all, w_rows, ids, b).view(-1, n_t)
    dl = delta[:, None]
    return t64, round_outward(t64 + dl, True), round_outward(t64 - dl, False)


def exact_topk(
    cand_v: Tensor,
    cand_i: Tensor,
    floor: Tensor,
    delta: Tensor,
    k: int,
    x64: Tensor,
    w_rows: Callable[[Tensor], Tensor],
    b: Tensor | None,
    d_vocab: int,
) -> tuple[Tensor, Tensor]:
    """Exact top-k ``(float64 logit, id)`` per row from float32 candidates, ties by lowest id.

    ``cand_v``/``cand_i`` ``[row, c]`` are float32 candidates (id -1 = empty), ``floor`` ``[row]``
    bounds the float32 logit of every token that is not a candidate, ``delta`` ``[row]`` is the
    `error_bound`, ``w_rows(ids)`` gives operand rows of the unembedding.
    """
    valid = cand_i >= 0
    safe = cand_i.clamp_min(0)
    rows = torch.arange(cand_i.shape[0], device=cand_i.device)[:, None].expand_as(cand_i)
    ex = exact_logits_at(x64, rows.flatten(), w_rows, safe.flatten(), b).view(cand_i.shape)
    ex = torch.where(valid, ex, -torch.inf)
    order = torch.sort(torch.where(valid, cand_i, torch.iinfo(torch.int64).max), -1).indices
    ex, ids = ex.gather(-1, order), cand_i.gather(-1, order)
    ex, order = torch.sort(ex, dim=-1, descending=True, stable=True)
    ids = ids.gather(-1, order)
    top_v, top_i = ex[:, :k].clone(), ids[:, :k].clone()
    bad = (top_v[:, -1] <= floor.double() + delta) & torch.isfinite(floor)
    for r in bad.nonzero().flatten().tolist():  # rare: a near-tie at the candidate boundary
        ids = torch.arange(d_vocab, device=x64.device)
        full = exact_logits_at(x64, torch.full_like(ids, r), w_rows, ids, b)
        order = torch.sort(-full, stable=True).indices[:k]
        top_v[r], top_i[r] = full[order], order
    return top_v, top_i
