"""The fused CUDA read-out: one Triton kernel computes a logit tile and reduces it in registers.

The tiled path (`glt.decoding._tiled`) writes every float32 logit tile to memory and reads it
back about ten times; on a GPU that traffic, not the matmul, sets the speed. Here each program
of ``_tile_kernel`` multiplies a ``[BM rows, K]`` block of normalised residuals by a ``[BN tokens,
K]`` block of the unembedding (float32 accumulation) and reduces the ``[BM, BN]`` logits before
they leave registers, writing per (row, token block):

* the two largest logits and their ids (top-k candidates; re-ranked exactly afterwards);
* ``sum exp(z - m)`` and ``sum exp(z - m) (z - m)`` with ``m`` the block max (log-sum-exp and
  entropy, folded over blocks in float64 like the eager kernel);
* ``sum p_final(v) (z - m)`` and, for each target, the count of logits above its upper float32
  threshold and the count, lowest and highest id of those inside the band (exact re-check).

``p_final`` comes from a first launch over the final layer's rows (``STORE_Z``), which writes
their logits once; they are turned into probabilities in place. Rows are ordered so that the
programs sharing a token block (one per layer) run back to back and read that block of
``p_final`` from L2. The band bookkeeping keeps ranks exact: see `glt.decoding._exact` for the bound and
`chunk_stats_fused` for how blocks with more than two band tokens are re-checked.

Used by `glt.readout` on CUDA for bfloat16 / float16 operands when Triton is importable (CUDA
builds of torch ship it) and the model has no logit soft-cap (see `available`); imported only
then. Measured on an H200 (see ``docs/performance.md``): ranks and top-k equal a float64
reference; the kernel alone ran at 31% (Gemma 3 270M shapes) and 48% (Llama 3 8B shapes) of
cuBLAS's bf16 GEMM, and the exact re-check of band tokens on the host dominated with random
targets (that run predates the sliced accumulation, see `k_chain`, which narrows the band).
"""

import os

import torch
from torch import Tensor

try:  # optional: CUDA installs of torch ship Triton
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised where Triton is absent
    triton = None
    tl = None

__all__ = ["available", "fused_block_stats", "k_chain"]

_SLICE = 512  # d_model slice accumulated separately (a multiple of the block's BK)


def _slice(K: int, bk: int) -> int:
    return max(bk, min(_SLICE, -(-K // bk) * bk) // bk * bk)


def k_chain(K: int, bk: int) -> int:
    """Longest chain of float32 roundings a product goes through in the kernel's accumulation.

    Each slice of ``_slice(K, bk)`` terms is summed into its own accumulator, then the slices are
    added: ``slice + n_slices`` (the ``n`` of the error bound in `glt.decoding._exact.error_bound`).
    """
    sl = _slice(K, bk)
    return min(K, sl) + -(-K // sl)

_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


def available(x: Tensor, softcap: float | None, matmul_dtype: torch.dtype) -> bool:
    """Whether the fused kernel runs: Triton importable, no soft-cap, CUDA, 16-bit operands.

    With float32 operands the kernel's IEEE ``tl.dot`` (CUDA cores) is slower than cuBLAS's
    float32 GEMM plus the eager passes, so float32 stays eager. ``GLT_FUSED=0`` turns the kernel
    off; ``GLT_FUSED=1`` forces it for any operand dtype, and with ``TRITON_INTERPRET=1`` runs it
    on CPU tensors in Triton's interpreter (slow; how the test suite checks it without a GPU).
    """
    mode = os.environ.get("GLT_FUSED", "auto")
    if triton is None or softcap is not None or mode == "0":
        return False
    if mode == "1":
        return x.is_cuda or _INTERPRET
    return x.is_cuda and matmul_dtype in (torch.bfloat16, torch.float16)


if triton is not None:

    @triton.jit
    def _tile_kernel(
        X, W, B, P, HI, LO,
        O_M1, O_M2, O_I1, O_I2, O_S, O_EZ, O_KD, O_PS, O_GT, O_NB, O_BMIN, O_BMAX,
        M, R, V, K, NBLK,
        HAS_BIAS: tl.constexpr, STORE_Z: tl.constexpr, HAS_P: tl.constexpr, NT: tl.constexpr,
        IEEE: tl.constexpr, UPCAST: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr,
        BK: tl.constexpr, SLICE: tl.constexpr,
    ):
        # program (pid_r, pid_n): rows are [layer, token]; pid_r walks token blocks slowest and
        # layers fastest, so the programs reading one block of p_final are adjacent
        pid_r = tl.program_id(0)
        pid_n = tl.program_id(1)
        layer = pid_r % (M // R)
        rblk = pid_r // (M // R)
        tok = rblk * BM + tl.arange(0, BM)
        row = layer * R + tok
        row_ok = tok < R
        col = pid_n * BN + tl.arange(0, BN)
        col_ok = col < V
        kk = tl.arange(0, BK)
        # d_model is accumulated in slices of SLICE, each into a fresh accumulator: a product
        # then passes through at most SLICE + K / SLICE roundings, not K (see `k_chain`)
        acc = tl.zeros((BM, BN), dtype=tl.float32)
        for s0 in range(0, K, SLICE):
            part = tl.zeros((BM, BN), dtype=tl.float32)
            for k1 in range(0, SLICE, BK):
                k0 = s0 + k1
                k_ok = (k0 + kk) < K
                x = tl.load(X + row[:, None] * K + (k0 + kk)[None, :],
                            mask=row_ok[:, None] & k_ok[None, :], other=0.0)
                w = tl.load(W + col[:, None] * K + (k0 + kk)[None, :],
                            mask=col_ok[:, None] & k_ok[None, :], other=0.0)
                if UPCAST:  # the interpreter multiplies 16-bit floats as raw bits: widen (exact)
                    x = x.to(tl.float32)
                    w = w.to(tl.float32)
                if IEEE or UPCAST:
                    part = tl.dot(x, tl.trans(w), part, input_precision="ieee")
                else:
                    part = tl.dot(x, tl.trans(w), part)
            acc += part
        if HAS_BIAS:
            acc += tl.load(B + col, mask=col_ok, other=0.0)[None, :]
        z = tl.where(col_ok[None, :], acc, -float("inf"))
        if STORE_Z:
            tl.store(P + tok[:, None] * V + col[None, :], z, mask=row_ok[:, None] & col_ok[None, :])
        out = pid_n * M + row  # outputs are [block, row]
        m1 = tl.max(z, 1)
        i1 = tl.min(tl.where(z == m1[:, None], col[None, :], V), 1)  # lowest id among ties
        z2 = tl.where(col[None, :] == i1[:, None], -float("inf"), z)
        m2 = tl.max(z2, 1)
        i2 = tl.min(tl.where(z2 == m2[:, None], col[None, :], V), 1)
        zs = tl.where(col_ok[None, :], z - m1[:, None], 0.0)
        e = tl.where(col_ok[None, :], tl.exp2(zs * 1.4426950408889634), 0.0)
        tl.store(O_M1 + out, m1, mask=row_ok)
        tl.store(O_M2 + out, m2, mask=row_ok)
        tl.store(O_I1 + out, i1, mask=row_ok)
        tl.store(O_I2 + out, i2, mask=row_ok)
        tl.store(O_S + out, tl.sum(e, 1), mask=row_ok)
        tl.store(O_EZ + out, tl.sum(e * zs, 1), mask=row_ok)
        if HAS_P:
            p = tl.load(P + tok[:, None] * V + col[None, :], mask=row_ok[:, None] & col_ok[None, :],
                        other=0.0)
            tl.store(O_KD + out, tl.sum(p * zs, 1), mask=row_ok)
            tl.store(O_PS + out, tl.sum(p, 1), mask=row_ok)
        for j in tl.static_range(NT):
            hi = tl.load(HI + row * NT + j, mask=row_ok, other=0.0)
            lo = tl.load(LO + row * NT + j, mask=row_ok, other=0.0)
            above = (z > hi[:, None]) & col_ok[None, :]
            band = (z >= lo[:, None]) & (z <= hi[:, None]) & col_ok[None, :]
            o = (j * NBLK + pid_n) * M + row
            tl.store(O_GT + o, tl.sum(above.to(tl.int32), 1), mask=row_ok)
            tl.store(O_NB + o, tl.sum(band.to(tl.int32), 1), mask=row_ok)
            tl.store(O_BMIN + o, tl.min(tl.where(band, col[None, :], V), 1), mask=row_ok)
            tl.store(O_BMAX + o, tl.max(tl.where(band, col[None, :], -1), 1), mask=row_ok)


def fused_block_stats(
    x_op: Tensor,
    W_op: Tensor,
    b: Tensor | None,
    n_rows: int,
    *,
    hi: Tensor | None = None,
    lo: Tensor | None = None,
    p_final: Tensor | None = None,
    store_z: Tensor | None = None,
    block: tuple[int, int, int] = (64, 128, 64),
    num_warps: int = 4,
    num_stages: int = 3,
) -> dict[str, Tensor]:
    """Per (token block, row) statistics of the logits ``x_op @ W_op.T (+ b)``, by one launch.

    ``x_op`` ``[layer * n_rows, K]`` (layer-major) and ``W_op`` ``[V, K]`` are the operands
    (float32, or both bfloat16 / float16); products accumulate in float32 (IEEE for float32).
    ``hi``/``lo`` ``[rows, target]`` are the float32 band edges around each target's exact logit;
    ``p_final`` ``[n_rows, V]`` the final layer's probabilities; ``store_z`` ``[n_rows, V]``
    receives the logits (only with one layer of rows). Returns ``[n_blocks, rows]`` tensors
    ``m1, m2, i1, i2, s, ez`` (and ``kd``, ``ps``: ``sum p_final (z - m)``, ``sum p_final``) and
    ``[target, n_blocks, rows]`` ``gt, nb, bmin, bmax``.
    """
    M, K = x_op.shape
    V = W_op.shape[0]
    BM, BN, BK = block
    n_blk = -(-V // BN)
    nt = 0 if hi is None else hi.shape[1]
    dev = x_op.device
    f32 = dict(dtype=torch.float32, device=dev)
    i32 = dict(dtype=torch.int32, device=dev)
    out = {k: torch.empty(n_blk, M, **f32) for k in ("m1", "m2", "s", "ez", "kd", "ps")}
    out.update({k: torch.empty(n_blk, M, **i32) for k in ("i1", "i2")})
    out.update({k: torch.empty(max(nt, 1), n_blk, M, **i32) for k in ("gt", "nb", "bmin", "bmax")})
    dummy = torch.empty(1, **f32)
    P = store_z if store_z is not None else p_final
    grid = ((M // n_rows) * -(-n_rows // BM), n_blk)
    _tile_kernel[grid](
        x_op.contiguous(), W_op.contiguous(), dummy if b is None else b.float().contiguous(),
        dummy if P is None else P,
        dummy if hi is None else hi.contiguous(), dummy if lo is None else lo.contiguous(),
        out["m1"], out["m2"], out["i1"], out["i2"], out["s"], out["ez"], out["kd"], out["ps"],
        out["gt"], out["nb"], out["bmin"], out["bmax"],
        M, n_rows, V, K, n_blk,
        HAS_BIAS=b is not None, STORE_Z=store_z is not None, HAS_P=p_final is not None, NT=nt,
        IEEE=x_op.dtype == torch.float32, UPCAST=_INTERPRET and x_op.dtype != torch.float32,
        BM=BM, BN=BN, BK=BK, SLICE=_slice(K, BK),
        num_warps=num_warps, num_stages=num_stages,
    )
    if p_final is None:
        del out["kd"], out["ps"]
    if nt == 0:
        for k in ("gt", "nb", "bmin", "bmax"):
            del out[k]
    return out


