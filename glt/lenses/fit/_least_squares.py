"""Least-squares tuned lens: every translator fitted in closed form to predict the final residual.

The default start of `glt.train_tuned_lens` (``init="least_squares"``) and a lens of its own:
only forward passes, no vocabulary-sized work. Each translator ``h_l + A_l h_l + b_l`` is a
weighted ridge regression of ``h_final`` on ``h_l`` over read positions (BOS skipped), rows
weighted by ``1 / mean(h_final^2)`` so they count in the final norm's scale-free units. It is
also the baseline a KL-trained lens must beat (the shipped lens's report compares the two).
With ``resid_mid=True`` each block's mid residual (after attention, before the MLP) gets a
translator of its own, fitted the same way on the same rows, so the lens reads the stacks that
`glt.sublayer_split` decodes.
"""

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from glt.core._capture import iter_residuals
from glt.core._check import checked
from glt.core._distributed import all_reduce_sum, rank_and_world
from glt.core._errors import GltError
from glt.lenses._tuned import TunedLens
from glt.lenses.fit._data import plan_sequences, read_rows
from glt.lenses.fit._loss import tiled_top1

__all__ = ["fit_least_squares"]


@checked
def fit_least_squares(
    model: Any,
    texts: Sequence[str] | Sequence[Sequence[int]],
    *,
    lens: TunedLens | None = None,
    max_tokens: int | None = None,
    ridge: float = 1e-4,
    seq_len: int = 256,
    batch_size: int = 8,
    row_weight: Callable[[Tensor], Tensor] | None = None,
    resid_mid: bool = False,
    progress: bool = True,
) -> TunedLens:
    """Fit every translator in closed form so that ``h_l + A_l h_l + b_l`` predicts ``h_final``.

    Weighted ridge regression per layer (rows weighted by ``1 / mean(h_final^2)``; ridge
    ``ridge * trace(X^T W X) / d_model`` on ``A`` only); BOS positions are skipped. The rows
    are the first ``max_tokens`` read positions in sequence order. Under ``torch.distributed``
    those same rows are dealt over the ranks (whole sequences, round-robin) and the statistics
    summed, so every world size fits the same rows and gives the same lens up to float64
    summation order.

    Args:
        model: the TransformerLens model.
        texts: texts or token-id sequences.
        lens: lens to fill (default: a new `TunedLens` for ``model``).
        max_tokens: use the first this many read positions (all when None).
        ridge: relative ridge strength.
        seq_len, batch_size: sequence cut and forward batch size.
        row_weight: ``f(top1) -> [row]`` multiplies each row's weight by a function of the final
            layer's top-1 token (the frequency-reweighted objective of `glt.train_tuned_lens`);
            None leaves the rows unweighted by token.
        resid_mid: also fit a translator for each block's mid residual (``hook_resid_mid``), on
            the same rows (`glt.TunedLens.set_mid_translators`); the block-boundary translators
            are the same either way.
        progress: show a tqdm bar.

    Example:
        >>> # ls = glt.fit_least_squares(model, texts, max_tokens=16_384)
    """
    from tqdm.auto import tqdm

    lens = lens if lens is not None else TunedLens.from_model(model)
    if texts and isinstance(texts[0], str):
        seqs, bos = plan_sequences(model, texts, seq_len=seq_len)
    else:
        seqs, bos = [list(map(int, s)) for s in texts], getattr(model.tokenizer, "bos_token_id", -1)
    bos = bos if bos is not None else -1
    rank, world = rank_and_world()
    seqs, caps = _rank_share(seqs, bos, max_tokens, rank, world)
    L, d = lens.n_layers, lens.d_model
    n_fits = 2 * L if resid_mid else L  # the block-boundary translators, then the mid ones
    xtx = torch.zeros(n_fits, d + 1, d + 1, dtype=torch.float64)
    xty = torch.zeros(n_fits, d + 1, d, dtype=torch.float64)
    seen = 0
    bar = tqdm(total=int(caps.sum()), desc="least squares", unit="tok", disable=not progress or rank != 0)
    # a rank may get no sequence
    stacks = iter_residuals(model, seqs, batch_size=batch_size, resid_mid=resid_mid) if seqs else []
    for i, stack in enumerate(stacks):
        b, p = read_rows(stack.tokens, stack.mask, bos)
        n = torch.bincount(b, minlength=stack.tokens.shape[0])
        ordinal = torch.arange(len(b)) - (n.cumsum(0) - n)[b]  # row number within its sequence
        keep = ordinal < caps[i * batch_size + b]
        b, p = b[keep], p[keep]
        if len(b) == 0:
            continue
        h = stack.resid[:, b, p].double()  # [layer, row, d]
        sites = stack.sites
        inputs = [j for j, s in enumerate(sites) if not s.mid][:-1] + [j for j, s in enumerate(sites) if s.mid]
        w = 1.0 / h[-1].pow(2).mean(-1)
        if row_weight is not None:
            top1 = tiled_top1(lens.unembed, lens.unembed.normalize(h[-1].float()))
            w = w * row_weight(top1).double()
        x = h[inputs]  # [fit, row, d]: residual indices 0 .. L-1, then mid residuals of blocks 0 .. L-1
        X = torch.cat([x, torch.ones(n_fits, len(b), 1, dtype=torch.float64)], -1)
        xtx += torch.einsum("lri,lrj->lij", X * w[None, :, None], X)
        xty += torch.einsum("lri,lrj->lij", X * w[None, :, None], h[-1:] - x)
        seen += len(b)
        bar.update(len(b))
    bar.close()
    all_reduce_sum(xtx)
    all_reduce_sum(xty)
    total = int(all_reduce_sum(torch.tensor([seen], dtype=torch.float64)).item())
    if total <= d:
        raise GltError(
            f"least squares saw {total} read positions but needs more than d_model={d}: pass more "
            "texts or a larger max_tokens"
        )
    lam = ridge * torch.diagonal(xtx[:, :d, :d], dim1=-2, dim2=-1).sum(-1) / d
    reg = xtx.clone()
    idx = torch.arange(d)
    reg[:, idx, idx] += lam[:, None]
    if not bool(torch.isfinite(reg).all() and torch.isfinite(xty).all()):
        raise GltError("least squares met non-finite residuals: check the model's outputs on these texts")
    # reg is symmetric positive definite (a ridge-regularised Gram matrix): Cholesky is stable
    # and avoids the batched LU path, which failed inside MKL for [18, 641, 641] float64 here
    chol, info = torch.linalg.cholesky_ex(reg)
    if bool((info == 0).all()):
        theta = torch.cholesky_solve(xty, chol)  # [layer, d+1, d]: rows = inputs (A^T), last = bias
    else:
        theta = torch.linalg.lstsq(reg, xty).solution
    with torch.no_grad():
        lens.weight.copy_(theta[:L, :d].transpose(-1, -2).float())
        lens.bias.copy_(theta[:L, d].float())
    if resid_mid:
        lens.set_mid_translators(theta[L:, :d].transpose(-1, -2).float(), theta[L:, d].float(),
                                 source="the least-squares fit")
    lens.config["least_squares"] = {"tokens": total, "ridge": ridge, "row_weight": "1/mean(h_final^2)"
                                    + ("" if row_weight is None else " * frequency weight of the final top-1"),
                                    **({"resid_mid": True} if resid_mid else {})}
    return lens


def _rank_share(
    seqs: list[list[int]], bos: int, max_tokens: int | None, rank: int, world: int
) -> tuple[list[list[int]], torch.Tensor]:
    """This rank's sequences and how many read rows of each it uses.

    One process would read the first ``max_tokens`` non-BOS positions in sequence order; those
    sequences (the last one possibly cut short) are dealt round-robin over the ranks.
    """
    caps: list[int] = []
    left = math.inf if max_tokens is None else max_tokens
    for s in seqs:
        if left <= 0:
            break
        caps.append(int(min(left, sum(1 for t in s if t != bos))))
        left -= caps[-1]
    mine = range(rank, len(caps), world)
    return [seqs[i] for i in mine], torch.tensor([caps[i] for i in mine], dtype=torch.long)
