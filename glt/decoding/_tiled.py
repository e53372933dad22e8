"""The tiled read-out (CPU, and CUDA without Triton): one streamed pass over vocabulary tiles, exact ranks, online
softmax.

For a chunk of rows (read positions) at every layer, `chunk_stats` computes the logits tile by
tile (``[layer * rows, vocab_tile]``, a few MB) and reduces each tile at once, writing every
intermediate into preallocated buffers (fresh temporaries cost page faults). Per tile:

* ranks: two comparisons per target against float32 thresholds bracketing the target's exact
  logit (float 0/1 masks summed as floats: several times faster than boolean masks); tokens
  inside the bracket are re-evaluated exactly (see `glt.decoding._exact`, which also documents the bound);
* top-k: ``topk`` only on the rows whose tile max beats their running k-th value; the float32
  candidates are re-ranked exactly at the end;
* log-sum-exp pieces relative to the tile's own max: ``exp2`` (torch's ``exp`` is ~3x slower and
  takes a slow path costing as much as the matmul wherever its result underflows), its sum and
  its dot with the shifted logits (entropy);
* KL(final || layer): the dot of each layer's shifted logits with the final layer's ``exp`` from
  the same tile.

The per-tile sums are stored by tile index and folded in tile order in float64 at the end (exact
log-sum-exp algebra), so nothing depends on which worker took which tile. With a soft-cap
(Gemma 2) ranks and top-k use the pre-cap logits, whose order the strictly increasing cap
preserves; probabilities use the capped logits. When the targets default to the final top-1, a
prepass computes the final layer's logits once, keeps them for the main pass (one row chunk of
``d_vocab`` floats) and picks the exact top-1.

CPU parallelism: worker threads draw tiles from one queue, each running single-threaded torch
ops (torch's intra-op threads synchronise at every op, which on a busy machine costs several
times the work). CUDA uses one stream.
"""

import itertools
import math
import threading
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from glt.core._errors import GltError
from glt.decoding._exact import error_bound, exact_logits_at, exact_topk, target_band, weight_stats
from glt.decoding._stats import EXTRA_CANDIDATES, LOWP, assemble_stats

__all__ = ["chunk_stats"]

_LOG2E = 1.0 / math.log(2.0)
_K_SLICE = 512  # d_model slice per CPU matmul call (see `k_blocks`)
_LOCK = threading.Lock()
BAND_MEMBERS = [0, 0]  # diagnostics: tokens re-checked exactly, (layer, row, target) triples


@dataclass
class _Plan:
    """Constants shared by the workers for one chunk of rows."""

    W: Tensor  # [d_vocab, d_model] as stored
    b: Tensor | None  # [d_vocab] or None
    cap: float | None
    mm_dtype: torch.dtype
    tile: int
    n_keep: int  # float32 candidates kept per row
    n_layer: int  # layers in the tile (rows are layer-major: index = layer * rows + row)
    rows: int
    x_mm: Tensor  # [R, d_model] operand rows fed to the matmul (final rows last)
    n_gemm: int  # the first n_gemm rows come from the matmul, the rest from `final_store`
    x64: Tensor  # [R, d_model] exact operand rows
    delta: Tensor  # [R] float64 error bound of a tile logit
    t64: Tensor | None  # [R, target] exact target logits (pre-cap)
    hi: Tensor | None  # [R, target] float32, rounded up from t64 + delta
    lo: Tensor | None  # [R, target] float32, rounded down from t64 - delta
    final_store: Tensor | None  # [n_tiles, rows, tile] final-layer logits (prepass output)
    stats: bool  # False in the prepass (only candidates and stored logits)
    tile_sums: Tensor | None  # [n_tiles, 4, R] per tile: shift c (tile max), sum e, sum e(z-c), KL dot
    tile_count: Tensor | None  # [n_tiles, target, R] tokens surely above each target, per tile
    gate: bool  # CPU: topk only on rows whose tile max beats the running candidates
    k_blocks: int  # d_model slices accumulated by separate matmul calls

    def w_rows(self, v: Tensor) -> Tensor:
        """Unembedding rows ``v`` as the exact re-check sees them (rounded operands)."""
        w = self.W[v]
        return w.to(self.mm_dtype) if self.mm_dtype in LOWP else w


class _State:
    """One worker's candidates and band tokens (its tiles' sums go straight into the plan)."""

    def __init__(self, p: _Plan) -> None:
        R, dev = p.x_mm.shape[0], p.x_mm.device
        self.cand_v = torch.full((R, p.n_keep), -torch.inf, device=dev)
        self.cand_i = torch.full((R, p.n_keep), -1, dtype=torch.int64, device=dev)
        self.floor = self.cand_v[:, -1].clone()
        self.band = 0
        self.pending: list[tuple[Tensor, Tensor]] = []  # band tokens: (row * n_t + target, id)
        n_t = 0 if p.t64 is None else p.t64.shape[1]
        self.above = torch.zeros(R * n_t, dtype=torch.int64, device=dev)  # from the band


def k_blocks(d_model: int, cuda: bool) -> int:
    """Slices of d_model the CPU matmul accumulates separately (tightens the error bound).

    Summing ``K`` products in any order errs by at most ``gamma_K`` times the sum of their
    magnitudes; accumulating ``nb`` slices of ``K / nb`` products with one ``addmm`` each bounds
    every product's path by ``K / nb + nb`` roundings instead, so the band of tokens that need an
    exact re-check narrows ~8x for ``d_model = 4096`` at the cost of re-reading the tile per slice.
    """
    return 1 if cuda else -(-d_model // _K_SLICE)


def _matmul(p: _Plan, a: int, b: int, y: Tensor) -> None:
    W = p.W[a:b]
    x = p.x_mm[: p.n_gemm]
    if p.mm_dtype == torch.float32:
        W = W if W.dtype == torch.float32 else W.float()
    elif x.is_cuda:
        Wl = W.to(p.mm_dtype)
        try:  # 16-bit operands, float32 accumulation and output (torch >= 2.9)
            y.copy_(torch.mm(x, Wl.T, out_dtype=torch.float32))
        except (TypeError, RuntimeError, NotImplementedError):  # older torch: widen (exact products)
            torch.mm(x.float(), Wl.float().T, out=y)
        return
    else:  # emulate: products of 16-bit operands are exact in float32, accumulate in float32
        W = W.to(p.mm_dtype).float()
    K = x.shape[1]
    step = -(-K // p.k_blocks)
    torch.mm(x[:, :step], W[:, :step].T, out=y)
    for k0 in range(step, K, step):
        y.addmm_(x[:, k0 : k0 + step], W[:, k0 : k0 + step].T)


def _count_ranks(
    p: _Plan, st: _State, y: Tensor, gt: Tensor, ge: Tensor, a: int, j_tile: int, gbuf: Tensor
) -> None:
    """Count tile ``y``'s tokens (pre-cap) surely above each target; note those in the band.

    Comparisons write float 0/1 masks and sum them as floats (exact below 2**24 per row): several
    times faster on CPU than boolean masks and integer sums.
    """
    n_t = p.t64.shape[1]
    for j in range(n_t):
        n_gt = torch.sum(torch.gt(y, p.hi[:, j : j + 1], out=gt), -1, out=p.tile_count[j_tile, j])
        n_ge = torch.ge(y, p.lo[:, j : j + 1], out=ge).sum(-1)
        n_band = n_ge.sub_(n_gt)
        rr = n_band.nonzero().flatten()
        if rr.numel() == 0:
            continue
        w = y.shape[1]
        rows = torch.index_select(ge, 0, rr, out=gbuf[: rr.numel() * w].view(-1, w))
        rows.sub_(gt[rr])  # 1.0 inside the band [lo, hi]
        nb = n_band[rr]
        one = nb == 1
        if bool(one.all()):  # the usual case: one token per row, found by argmax
            r, col = rr, rows.argmax(-1)
        else:
            val, colk = rows[~one].topk(int(nb.max()), -1)
            i, kk = (val > 0).nonzero(as_tuple=True)
            r = torch.cat([rr[one], rr[~one][i]])
            col = torch.cat([rows[one].argmax(-1), colk[i, kk]])
        st.pending.append((r * n_t + j, col + a))


def _resolve_band(p: _Plan, st: _State) -> None:
    """Compare the band's tokens with their targets in exact arithmetic."""
    if not st.pending:
        return
    rj = torch.cat([q[0] for q in st.pending])
    v = torch.cat([q[1] for q in st.pending])
    st.pending = []
    n_t = p.t64.shape[1]
    ex = exact_logits_at(p.x64, rj // n_t, p.w_rows, v, p.b)
    up = (ex > p.t64.flatten()[rj]).long()
    st.above.index_add_(0, rj, up)
    st.band += int(rj.numel())


def _candidates(p: _Plan, st: _State, y: Tensor, tmax: Tensor, a: int, gbuf: Tensor) -> None:
    """Keep the ``n_keep`` best float32 logits (pre-cap) of each row seen so far."""
    k = min(p.n_keep, y.shape[1])
    if p.gate:
        rr = torch.gt(tmax, st.floor).nonzero().flatten()
        if rr.numel() == 0:
            return
        sub = torch.index_select(y, 0, rr, out=gbuf[: rr.numel() * y.shape[1]].view(-1, y.shape[1]))
        tv, ti = sub.topk(k, -1)
        cv, ci = torch.cat([st.cand_v[rr], tv], -1), torch.cat([st.cand_i[rr], ti + a], -1)
        cv, sel = cv.topk(p.n_keep, -1)
        st.cand_v[rr], st.cand_i[rr] = cv, ci.gather(-1, sel)
        st.floor[rr] = cv[:, -1]
    else:
        tv, ti = y.topk(k, -1)
        cv, ci = torch.cat([st.cand_v, tv], -1), torch.cat([st.cand_i, ti + a], -1)
        st.cand_v, sel = cv.topk(p.n_keep, -1)
        st.cand_i = ci.gather(-1, sel)
        st.floor = st.cand_v[:, -1]


def _scan(p: _Plan, queue: Any) -> _State:
    """Reduce the vocabulary tiles drawn from ``queue`` (shared by the workers) into a state.

    Each tile's sums are taken relative to the tile's own max and stored under the tile's index,
    so the result does not depend on which worker drew which tile (bitwise reproducible).
    """
    st = _State(p)
    R, dev = p.x_mm.shape[0], p.x_mm.device
    d_vocab = p.W.shape[0]
    n_tiles = -(-d_vocab // p.tile)
    ybuf = torch.empty(R * p.tile, device=dev)
    ebuf = torch.empty(R * p.tile, device=dev) if p.stats else None
    mbuf = torch.empty(R * p.tile, device=dev) if p.stats else None
    gbuf = torch.empty(R * p.tile, device=dev)  # gathered rows
    counting = p.t64 is not None and p.t64.shape[1] > 0
    while (j := next(queue)) < n_tiles:
        a = j * p.tile
        b = min(a + p.tile, d_vocab)
        w = b - a
        y = ybuf[: R * w].view(R, w)
        if p.n_gemm:
            _matmul(p, a, b, y[: p.n_gemm])
        if p.n_gemm < R:
            y[p.n_gemm :] = p.final_store[j, :, :w]
        if p.b is not None and p.n_gemm:
            y[: p.n_gemm] += p.b[a:b].float()
        if not p.stats:  # prepass: store the final layer's logits, track candidates
            p.final_store[j, :, :w] = y
            _candidates(p, st, y, y.amax(-1), a, gbuf)
            continue
        if counting:
            _count_ranks(p, st, y, ebuf[: R * w].view(R, w), mbuf[: R * w].view(R, w), a, j, gbuf)
        sums = p.tile_sums[j]
        tmax = torch.amax(y, -1, out=sums[0])
        _candidates(p, st, y, tmax, a, gbuf)
        if p.cap is not None:
            y.div_(p.cap).tanh_().mul_(p.cap)
            torch.amax(y, -1, out=sums[0])
        y.sub_(sums[0][:, None])
        # exp(y) as exp2(y / ln 2): torch's exp2 is ~3x faster than its exp, and its exp takes
        # a slow path (as costly as the matmul) wherever the result underflows; exp2 does not
        e = torch.mul(y, _LOG2E, out=ebuf[: R * w].view(R, w)).exp2_()
        torch.sum(e, -1, out=sums[1])
        tmp = mbuf[: R * w].view(R, w)  # products go to a kept buffer: fresh ones fault pages in
        torch.sum(torch.mul(e, y, out=tmp), -1, out=sums[2])
        ef = e[-p.rows :].view(1, p.rows, w)
        torch.mul(y.view(p.n_layer, p.rows, w), ef, out=tmp.view(p.n_layer, p.rows, w))
        torch.sum(tmp, -1, out=sums[3])
        if len(st.pending) >= 64:
            _resolve_band(p, st)
    _resolve_band(p, st)
    return st


def _combine(p: _Plan) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Fold the per-tile sums, in tile order and float64, into ``(c, s, e, x)`` per row.

    With ``c`` the row max: ``s = sum exp(z - c)``, ``e = sum exp(z - c) (z - c)`` and
    ``x = sum exp(z_final - c_final) (z - c)`` (exact log-sum-exp algebra).
    """
    t = p.tile_sums.double()
    c_t, s_t, e_t, x_t = t[:, 0], t[:, 1], t[:, 2], t[:, 3]
    c = c_t.amax(0)
    dc = c_t - c
    f = torch.exp(dc)
    s = (f * s_t).sum(0)
    e = (f * (e_t + dc * s_t)).sum(0)
    fin = slice(-p.rows, None)
    f_fin = f[:, fin].repeat(1, p.n_layer)
    s_fin = s_t[:, fin].repeat(1, p.n_layer)
    x = (f_fin * (x_t + dc * s_fin)).sum(0)
    return c, s, e, x


def _run(p: _Plan, workers: int) -> _State:
    """Scan every tile with ``workers`` threads pulling tiles from one queue; merge the states."""
    n_tiles = -(-p.W.shape[0] // p.tile)
    queue = itertools.count()
    if p.x_mm.is_cuda or workers == 0:  # one stream; CPU: torch's own intra-op threads
        parts = [_scan(p, queue)]
    else:
        workers = max(1, min(workers, n_tiles))
        results: list[Any] = [None] * workers
        n_threads = torch.get_num_threads()

        def work(i: int) -> None:
            try:
                torch.set_num_threads(1)
                with torch.no_grad():
                    results[i] = _scan(p, queue)
            except BaseException as err:  # re-raised in the caller's thread
                results[i] = err

        threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(workers)]
        try:
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        finally:
            torch.set_num_threads(n_threads)
        for r in results:
            if isinstance(r, BaseException):
                raise r
        parts = results
    out = parts[0]
    out.cand_v = torch.cat([s.cand_v for s in parts], -1)
    out.cand_i = torch.cat([s.cand_i for s in parts], -1)
    out.floor = torch.stack([s.floor for s in parts]).amax(0)
    out.band = sum(s.band for s in parts)
    out.above = sum(s.above for s in parts)
    return out


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
    """Every statistic for ``x`` ``[layer, rows, d_model]`` (normalised, float32).

    ``targets`` ``[rows, target]`` or None (the final layer's exact top-1, lowest id on ties).
    Returns ranks, target_logprobs, topk_ids, topk_logprobs, entropy, kl_to_final and targets.
    """
    n_layer, rows, d_model = x.shape
    W, b, cap = unembed.W, unembed.b, unembed.softcap
    d_vocab = W.shape[0]
    if not bool(torch.isfinite(x).all()):
        raise GltError("normalised residuals contain NaN/inf: check the residual stack's values")
    if matmul_dtype == torch.float16 and float(x.abs().max()) >= 65504:
        raise GltError("residuals overflow float16 after the final norm: use matmul_dtype=torch.bfloat16")
    lowp = matmul_dtype in LOWP
    wmax, bmax = weight_stats(W, b, matmul_dtype if lowp else W.dtype)
    if lowp and matmul_dtype == torch.float16 and not math.isfinite(wmax):
        raise GltError("the unembedding overflows float16: use matmul_dtype=torch.bfloat16")
    flat = x.reshape(n_layer * rows, d_model)
    x_op = flat.to(matmul_dtype) if lowp else flat
    x64 = x_op.double()
    if lowp and not x.is_cuda:
        x_mm = x_op.float()
    else:
        x_mm = x_op.contiguous()
    k = min(top_k, d_vocab)
    n_keep = min(k + EXTRA_CANDIDATES, d_vocab)
    nb = k_blocks(d_model, x.is_cuda)
    delta = error_bound(x_op, wmax, bmax, lowp and x.is_cuda, n_terms=-(-d_model // nb) + nb)
    n_tiles = -(-d_vocab // tile)
    common = dict(W=W, b=b, cap=cap, mm_dtype=matmul_dtype, tile=tile, n_keep=n_keep,
                  rows=rows, gate=not x.is_cuda, k_blocks=nb)
    store = None
    if targets is None:  # prepass: final-layer logits (kept) and their exact top-1
        store = torch.empty(n_tiles, rows, tile, device=x.device)
        pre = _Plan(**common, n_layer=1, x_mm=x_mm[-rows:], n_gemm=rows, x64=x64[-rows:],
                    delta=delta[-rows:], t64=None, hi=None, lo=None, final_store=store,
                    stats=False, tile_sums=None, tile_count=None)
        st = _run(pre, workers)
        _, top1 = exact_topk(st.cand_v, st.cand_i, st.floor, pre.delta, 1, x64[-rows:],
                             pre.w_rows, b, d_vocab)
        targets = top1
    n_t = targets.shape[1]
    t64, hi, lo = target_band(x64, targets, lambda v: W[v].to(matmul_dtype) if lowp else W[v], b,
                              delta)
    plan = _Plan(**common, n_layer=n_layer, x_mm=x_mm,
                 n_gemm=n_layer * rows if store is None else (n_layer - 1) * rows,
                 x64=x64, delta=delta, t64=t64, hi=hi, lo=lo, final_store=store, stats=True,
                 tile_sums=torch.empty(n_tiles, 4, n_layer * rows, device=x.device),
                 tile_count=torch.empty(n_tiles, n_t, n_layer * rows, device=x.device))
    st = _run(plan, workers)
    c, s, e, xs = _combine(plan)
    above = plan.tile_count.double().sum(0).T.long() + st.above.view(-1, n_t)
    with _LOCK:
        BAND_MEMBERS[0] += st.band
        BAND_MEMBERS[1] += n_layer * rows * n_t
    top_v, top_i = exact_topk(st.cand_v, st.cand_i, st.floor, delta, k, x64, plan.w_rows, b,
                              d_vocab)
    cross = xs / s[-rows:].repeat(n_layer)  # sum_v p_final(v) (z_layer(v) - c_layer)
    return assemble_stats(targets, above, t64, top_v, top_i, c, s, e, cross, n_layer, cap)
