"""The streamed read-out: every per-layer statistic from one tiled pass over the vocabulary.

For each read position ("row") and each residual index ("layer") glt needs the rank and
log-probability of one or more target tokens, the top-k tokens, the entropy and
KL(final || layer). Materialising ``[layer, rows, d_vocab]`` logits costs gigabytes; instead the
read-out walks the vocabulary in tiles and keeps running reductions (an online log-sum-exp), so
peak extra memory is one ``[layer, rows_chunk, vocab_tile]`` tile.

Conventions:

* rank is **0-based** and counts the tokens with a **strictly greater** logit (so the top-1 has
  rank 0 and tied tokens share the best rank); no sort is ever done;
* the default target is the final layer's top-1, the lowest token id among the maximal logits;
* logits are accumulated in float32 whatever the residual dtype;
* KL(final || layer) is 0 at the final layer by definition.

Ranks are exact with respect to the tile's float32 logits: each target's logit is first
estimated by a small matmul, tokens clearly above it are counted per tile, and the few tokens in
a narrow band around it are compared with the target's own tile logit at the end.
"""

from dataclasses import dataclass, fields
from typing import Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from glt._capture import ResidualStack
from glt._errors import GltError

__all__ = ["Readout", "readout", "select_rows"]

_EPS32 = float(torch.finfo(torch.float32).eps)


@dataclass(frozen=True, eq=False)
class Readout:
    """Per-layer statistics at each read position ("row"), from `readout`.

    Attributes:
        layer_labels: one label per residual index (``embed`` ... ``final``).
        batch_index, pos_index: ``[row]`` where each row was read in the stack.
        input_ids: ``[row]`` the token at the read position.
        targets: ``[row, target]`` the tracked token ids.
        ranks: ``[layer, row, target]`` 0-based count of strictly greater logits.
        target_logprobs: ``[layer, row, target]`` log-probability of each target.
        topk_ids, topk_logprobs: ``[layer, row, k]`` best tokens, best first.
        entropy: ``[layer, row]`` entropy of the layer's distribution, in nats.
        kl_to_final: ``[layer, row]`` KL(final || layer), in nats.
        lens: the lens's name (``logit`` or ``tuned``).
    """

    layer_labels: tuple[str, ...]
    batch_index: Int[Tensor, " row"]
    pos_index: Int[Tensor, " row"]
    input_ids: Int[Tensor, " row"]
    targets: Int[Tensor, "row target"]
    ranks: Int[Tensor, "layer row target"]
    target_logprobs: Float[Tensor, "layer row target"]
    topk_ids: Int[Tensor, "layer row k"]
    topk_logprobs: Float[Tensor, "layer row k"]
    entropy: Float[Tensor, "layer row"]
    kl_to_final: Float[Tensor, "layer row"]
    lens: str

    @property
    def n_rows(self) -> int:
        return int(self.targets.shape[0])

    @property
    def top1(self) -> Int[Tensor, "layer row"]:
        """The top-1 token id at every layer and row."""
        return self.topk_ids[..., 0]

    @property
    def max_prob(self) -> Float[Tensor, "layer row"]:
        """The top-1 probability at every layer and row."""
        return self.topk_logprobs[..., 0].exp()

    @staticmethod
    def concat(parts: "list[Readout]", *, batch_offsets: list[int] | None = None) -> "Readout":
        """Join read-outs over rows (``batch_offsets`` shifts each part's batch index)."""
        if not parts:
            raise GltError("concat needs at least one Readout")
        offsets = batch_offsets or [0] * len(parts)
        out: dict[str, Any] = {}
        for f in fields(Readout):
            vals = [getattr(p, f.name) for p in parts]
            if f.name in ("layer_labels", "lens"):
                out[f.name] = vals[0]
            elif f.name == "batch_index":
                out[f.name] = torch.cat([v + o for v, o in zip(vals, offsets)])
            else:
                dim = 1 if vals[0].ndim >= 2 and f.name not in ("targets",) else 0
                out[f.name] = torch.cat(vals, dim)
        return Readout(**out)

    def to_dataframe(self) -> Any:
        """Long table: one row per (layer, row, target) with rank, logprob, entropy and KL."""
        import pandas as pd

        n_layer, n_row, n_t = self.ranks.shape
        layer = torch.arange(n_layer).view(-1, 1, 1).expand(n_layer, n_row, n_t)
        row = torch.arange(n_row).view(1, -1, 1).expand(n_layer, n_row, n_t)
        tgt = torch.arange(n_t).view(1, 1, -1).expand(n_layer, n_row, n_t)

        def per_row(v: Tensor) -> Any:
            return v.cpu().unsqueeze(-1).expand(n_layer, n_row, n_t).reshape(-1).numpy()

        return pd.DataFrame(
            {
                "layer": layer.reshape(-1).numpy(),
                "layer_label": [self.layer_labels[i] for i in layer.reshape(-1).tolist()],
                "row": row.reshape(-1).numpy(),
                "batch": self.batch_index[row.reshape(-1)].cpu().numpy(),
                "pos": self.pos_index[row.reshape(-1)].cpu().numpy(),
                "target_slot": tgt.reshape(-1).numpy(),
                "target": self.targets.cpu()[row.reshape(-1), tgt.reshape(-1)].numpy(),
                "rank": self.ranks.reshape(-1).cpu().numpy(),
                "logprob": self.target_logprobs.reshape(-1).cpu().numpy(),
                "top1": per_row(self.top1),
                "entropy": per_row(self.entropy),
                "kl_to_final": per_row(self.kl_to_final),
            }
        )


def select_rows(
    stack: ResidualStack, positions: Any = None
) -> tuple[Int[Tensor, " row"], Int[Tensor, " row"]]:
    """Resolve ``positions`` into ``(batch_index, pos_index)`` rows, in row-major order.

    ``positions`` is None (every real token), ``"last"`` (each sequence's last real token), an
    integer tensor ``[batch]`` (one position per sequence; negative counts from the sequence end)
    or a boolean tensor ``[batch, pos]`` (True where to read; must lie on real tokens).
    """
    mask = stack.mask
    if positions is None:
        b, p = mask.nonzero(as_tuple=True)
        return b, p
    if isinstance(positions, str):
        if positions != "last":
            raise GltError(f"positions must be None, 'last' or a tensor, got {positions!r}")
        b = torch.arange(mask.shape[0], device=mask.device)
        return b, stack.lengths - 1
    if not isinstance(positions, Tensor):
        positions = torch.as_tensor(positions)
    positions = positions.to(mask.device)
    if positions.dtype == torch.bool:
        if tuple(positions.shape) != tuple(mask.shape):
            raise GltError(
                f"a boolean positions mask must be [batch, pos]={tuple(mask.shape)}, got "
                f"{tuple(positions.shape)}"
            )
        if bool((positions & ~mask).any()):
            raise GltError("positions selects padding: select only positions where stack.mask is True")
        b, p = positions.nonzero(as_tuple=True)
        return b, p
    if positions.ndim != 1 or positions.shape[0] != mask.shape[0]:
        raise GltError(
            f"integer positions must be [batch]={mask.shape[0]} (one per sequence), got "
            f"{tuple(positions.shape)}"
        )
    lengths = stack.lengths
    pos = torch.where(positions < 0, positions + lengths, positions)
    if bool(((pos < 0) | (pos >= lengths)).any()):
        raise GltError(f"positions {positions.tolist()} fall outside the sequence lengths {lengths.tolist()}")
    return torch.arange(mask.shape[0], device=mask.device), pos.long()


def _final_pass(
    unembed: Any, xf: Float[Tensor, "row d_model"], tile: int
) -> tuple[Tensor, Tensor]:
    """Log-sum-exp and top-1 (lowest id among ties) of the final layer."""
    rows = xf.shape[0]
    m = torch.full((rows,), -torch.inf, device=xf.device)
    s = torch.zeros(rows, device=xf.device)
    best = torch.full((rows,), -torch.inf, device=xf.device)
    arg = torch.zeros(rows, dtype=torch.long, device=xf.device)
    for a in range(0, unembed.d_vocab, tile):
        z = unembed.logits_of_normed(xf, a, a + tile)
        tmax, targ = z.max(-1)
        better = tmax > best
        arg = torch.where(better, targ + a, arg)
        best = torch.where(better, tmax, best)
        m_new = torch.maximum(m, tmax)
        s = s * torch.exp(m - m_new) + torch.exp(z - m_new[:, None]).sum(-1)
        m = m_new
    return m + torch.log(s), arg


def _chunk_stats(
    unembed: Any,
    x: Float[Tensor, "layer row d_model"],
    targets: Int[Tensor, "row target"],
    top_k: int,
    tile: int,
) -> dict[str, Tensor]:
    n_layer, rows, d_model = x.shape
    n_t = targets.shape[1]
    dev = x.device
    lse_f, _ = _final_pass(unembed, x[-1], tile)
    flat = x.reshape(n_layer * rows, d_model)

    # estimated target logits and a rigorous-in-practice error band for the rank count
    w_t = unembed.W[targets].float()  # [row, target, d_model]
    t_est = torch.einsum("lrd,rtd->lrt", x, w_t)
    scale = torch.einsum("lrd,rtd->lrt", x.abs(), w_t.abs())
    if unembed.b is not None:
        t_est = t_est + unembed.b[targets].float()
    if unembed.softcap is not None:
        t_est = torch.tanh(t_est / unembed.softcap) * unembed.softcap
    tol = 64 * _EPS32 * (scale + t_est.abs()) + 1e-30
    hi, lo = t_est + tol, t_est - tol

    m = torch.full((n_layer, rows), -torch.inf, device=dev)
    s = torch.zeros(n_layer, rows, device=dev)
    e = torch.zeros(n_layer, rows, device=dev)
    cross = torch.zeros(n_layer, rows, device=dev)
    count = torch.zeros(n_layer, rows, n_t, dtype=torch.long, device=dev)
    t_exact = torch.full((n_layer, rows, n_t), torch.nan, device=dev)
    band_idx: list[Tensor] = []
    band_val: list[Tensor] = []
    k = min(top_k, unembed.d_vocab)
    top_v = torch.full((n_layer * rows, k), -torch.inf, device=dev)
    top_i = torch.zeros((n_layer * rows, k), dtype=torch.long, device=dev)

    for a in range(0, unembed.d_vocab, tile):
        z2 = unembed.logits_of_normed(flat, a, a + tile)  # [(layer row), T]
        width = z2.shape[1]
        z = z2.view(n_layer, rows, width)
        # online log-sum-exp and entropy (e = sum exp(z - m) (z - m))
        m_new = torch.maximum(m, z.amax(-1))
        shift = torch.where(torch.isinf(m), torch.zeros_like(m), m - m_new)
        ez = torch.exp(z - m_new[..., None])
        zc = z - m_new[..., None]
        e = torch.exp(shift) * (e + shift * s) + (ez * zc).sum(-1)
        s = s * torch.exp(shift) + ez.sum(-1)
        m = m_new
        # KL cross term: sum_v p_final(v) * (z_final(v) - z_layer(v))
        zf = z[-1]
        pf = torch.exp(zf - lse_f[:, None])
        cross += ((zf[None] - z) * pf[None]).sum(-1)
        # ranks
        for j in range(n_t):
            count[..., j] += (z > hi[..., j, None]).sum(-1)
            band = (z >= lo[..., j, None]) & (z <= hi[..., j, None])
            if bool(band.any()):
                li, ri, vi = band.nonzero(as_tuple=True)
                band_idx.append(torch.stack([li, ri, torch.full_like(li, j)]))
                band_val.append(z[li, ri, vi])
        inside = (targets >= a) & (targets < a + width)
        if bool(inside.any()):
            ri, tj = inside.nonzero(as_tuple=True)
            t_exact[:, ri, tj] = z[:, ri, targets[ri, tj] - a]
        # top-k
        tv, ti = z2.topk(min(k, width), -1)
        cat_v = torch.cat([top_v, tv], -1)
        cat_i = torch.cat([top_i, ti + a], -1)
        top_v, sel = cat_v.topk(k, -1)
        top_i = cat_i.gather(-1, sel)

    if band_idx:
        idx = torch.cat(band_idx, 1)
        vals = torch.cat(band_val)
        above = vals > t_exact[idx[0], idx[1], idx[2]]
        count.index_put_((idx[0], idx[1], idx[2]), above.long(), accumulate=True)
    outside = (t_exact - t_est).abs() > tol
    if bool(outside.any()):  # the band missed the exact value: count those exactly
        for li, ri, tj in outside.nonzero().tolist():
            full = unembed.logits_of_normed(x[li, ri][None])[0]
            count[li, ri, tj] = (full > full[targets[ri, tj]]).sum()
            t_exact[li, ri, tj] = full[targets[ri, tj]]

    lse = m + torch.log(s)
    kl = (cross - lse_f[None] + lse).clamp_min(0.0)
    kl[-1] = 0.0
    return {
        "ranks": count,
        "target_logprobs": t_exact - lse[..., None],
        "topk_ids": top_i.view(n_layer, rows, k),
        "topk_logprobs": top_v.view(n_layer, rows, k) - lse[..., None],
        "entropy": torch.log(s) - e / s,
        "kl_to_final": kl,
    }


def _validate_targets(targets: Any, n_rows: int, d_vocab: int, device: Any) -> Tensor | None:
    if targets is None:
        return None
    t = torch.as_tensor(targets, device=device)
    if t.dtype.is_floating_point or t.dtype == torch.bool:
        raise GltError(f"targets must be integer token ids, got dtype {t.dtype}")
    if t.ndim == 1:
        t = t[:, None]
    if t.ndim != 2 or t.shape[0] != n_rows:
        raise GltError(
            f"targets must be [row] or [row, target] with row={n_rows} (one per read position), "
            f"got shape {tuple(t.shape)}"
        )
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= d_vocab):
        raise GltError(
            f"targets must be token ids in [0, {d_vocab}), got values in [{int(t.min())}, "
            f"{int(t.max())}]: check the tokenizer matches the model"
        )
    return t.long()


def readout(
    stack: ResidualStack,
    lens: Any,
    *,
    targets: Int[Tensor, "row ..."] | None = None,
    top_k: int = 5,
    positions: Any = None,
    row_chunk: int | None = None,
    vocab_tile: int | None = None,
) -> Readout:
    """Decode every layer of ``stack`` with ``lens`` and reduce to per-layer statistics.

    Args:
        stack: residuals from `glt.capture_residuals` or `glt.ResidualStack.from_cache`.
        lens: a `glt.LogitLens` or `glt.TunedLens` for the same model.
        targets: token ids to rank, ``[row]`` or ``[row, target]`` (several per row, such as the
            options of a multiple-choice question); default: the final layer's top-1.
        top_k: how many best tokens to keep per layer and row.
        positions: which positions to read (see `select_rows`); default every real token.
        row_chunk, vocab_tile: tile sizes (memory is one ``[layer, row_chunk, vocab_tile]``
            float32 tile plus a few of its size); defaults suit a CPU.

    Returns:
        A frozen `Readout`.

    Example:
        >>> # r = glt.readout(stack, glt.LogitLens.from_model(model), positions="last")
        >>> # r.ranks.shape -> (n_layers + 1, batch, 1)
    """
    if not isinstance(stack, ResidualStack):
        raise GltError(f"stack must be a glt.ResidualStack, got {type(stack).__name__}")
    if not isinstance(top_k, int) or top_k < 1:
        raise GltError(f"top_k must be an int >= 1, got {top_k!r}")
    lens.check_compatible(stack.resid.shape[0], stack.resid.shape[-1])
    unembed = lens.unembed
    b_idx, p_idx = select_rows(stack, positions)
    n_rows = int(b_idx.shape[0])
    tgt = _validate_targets(targets, n_rows, unembed.d_vocab, stack.resid.device)
    n_layer = stack.resid.shape[0]
    tile = vocab_tile or 8192
    chunk = row_chunk or max(1, min(64, 2048 // n_layer))
    parts: dict[str, list[Tensor]] = {}
    all_targets = []
    with torch.no_grad():
        for r0 in range(0, n_rows, chunk):
            bi, pi = b_idx[r0 : r0 + chunk], p_idx[r0 : r0 + chunk]
            h = stack.resid[:, bi, pi].float()
            x = unembed.normalize(lens.transform_stack(h))
            if tgt is None:
                _, top1 = _final_pass(unembed, x[-1], tile)
                t = top1[:, None]
            else:
                t = tgt[r0 : r0 + chunk]
            all_targets.append(t)
            for key, val in _chunk_stats(unembed, x, t, top_k, tile).items():
                parts.setdefault(key, []).append(val)
    k = min(top_k, unembed.d_vocab)
    empty_t = tgt.shape[1] if tgt is not None else 1
    def cat(key: str, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
        if parts.get(key):
            return torch.cat(parts[key], 1)
        return torch.zeros(shape, dtype=dtype)
    return Readout(
        layer_labels=stack.labels,
        batch_index=b_idx,
        pos_index=p_idx,
        input_ids=stack.tokens[b_idx, p_idx],
        targets=torch.cat(all_targets, 0) if all_targets else torch.zeros(0, empty_t, dtype=torch.long),
        ranks=cat("ranks", (n_layer, 0, empty_t), torch.long),
        target_logprobs=cat("target_logprobs", (n_layer, 0, empty_t), torch.float32),
        topk_ids=cat("topk_ids", (n_layer, 0, k), torch.long),
        topk_logprobs=cat("topk_logprobs", (n_layer, 0, k), torch.float32),
        entropy=cat("entropy", (n_layer, 0), torch.float32),
        kl_to_final=cat("kl_to_final", (n_layer, 0), torch.float32),
        lens=getattr(lens, "name", type(lens).__name__),
    )
