"""Lenses: decode a residual at layer ``idx`` into vocabulary logits.

The contract follows tuned-lens so its users feel at home:

* ``lens.transform_hidden(h, idx)``: the residual as the final layer would see it (identity for
  the logit lens, ``h + A_idx h + b_idx`` for the tuned lens);
* ``lens(h, idx)``: logits ``unembed(transform_hidden(h, idx))``;
* ``lens.transform_stack(resid)``: the vectorised path over a whole ``[layer, ...]`` stack.

Inside a block: ``lens.transform_sites(resid, sites)`` reads a stack that also holds mid-block
residuals (``blocks.{i}.hook_resid_mid``, captured with ``resid_mid=True``). The logit lens reads
them like any residual (``reads_resid_mid`` is True), a least-squares lens through mid translators
fitted with it (`glt.fit_least_squares` with ``resid_mid=True``); a KL-trained tuned lens and the
Jacobian lens have translators for block-boundary residuals only, so they raise GltError there.

`Unembed` is the model's own read-out: its final-norm module recomputed on every input (never
the final layer's cached scale), then ``W_U``, ``b_U`` and the output soft-cap if the model has one.
"""

import copy
import hashlib
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor, nn

from glt.core._capture import ResidualSite
from glt.core._errors import GltError

__all__ = ["LogitLens", "Unembed", "no_resid_mid_message"]


def no_resid_mid_message(lens: Any, argument: str = "lens") -> str:
    """The GltError message for a lens asked to read a ``resid_mid`` residual it has no translator for."""
    return (
        f"{argument}: the {getattr(lens, 'name', '?')!r} lens ({type(lens).__name__}) has no translator for "
        "resid_mid residuals (blocks.i.hook_resid_mid, labelled 'resid_mid i': after a block's attention, "
        "before its MLP), only for block-boundary residuals: read a resid_mid stack with the logit lens "
        "(glt.LogitLens.from_model(model)) or a least-squares lens fitted with its mid translators "
        "(glt.least_squares_lens(model, resid_mid=True)), or capture without resid_mid=True to use this lens"
    )


def _softcap_of(model: Any) -> float | None:
    cap = getattr(model.cfg, "output_logits_soft_cap", None)
    if cap is not None and cap > 0:
        return float(cap)
    hf = getattr(model, "original_model", None)
    cap = getattr(getattr(hf, "config", None), "final_logit_softcapping", None)
    return float(cap) if cap else None


class Unembed(nn.Module):
    """The model's final norm, unembedding matrix, bias and soft-cap, held for the read-out.

    ``W`` is stored as ``[d_vocab, d_model]`` (TransformerLens's ``W_U`` transposed, which for
    tied models is the embedding matrix itself, so no copy is made) so that a vocabulary tile is
    a contiguous slice.
    """

    def __init__(
        self,
        norm: nn.Module,
        W_U: Float[Tensor, "d_model d_vocab"],
        b_U: Float[Tensor, " d_vocab"] | None,
        softcap: float | None = None,
    ) -> None:
        super().__init__()
        self.norm = norm
        self.W = W_U.detach().T
        self.b = None if b_U is None or not bool(b_U.any()) else b_U.detach()
        self.softcap = softcap

    @classmethod
    def from_model(cls, model: Any) -> "Unembed":
        """Take the final norm, ``W_U``, ``b_U`` and soft-cap from a TransformerLens model."""
        norm = model.ln_final
        if getattr(model.cfg, "dtype", torch.float32) != torch.float32:
            norm = copy.deepcopy(norm).float()
        W_U = model.W_U.detach()
        b_U = getattr(model, "b_U", None)
        return cls(norm, W_U, b_U, _softcap_of(model))

    @property
    def d_model(self) -> int:
        return int(self.W.shape[1])

    @property
    def d_vocab(self) -> int:
        return int(self.W.shape[0])

    def normalize(self, h: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
        """Apply the model's final norm (recomputed for ``h``), in float32."""
        return self.norm(h.float()).float()

    def logits_of_normed(
        self, x: Float[Tensor, "rows d_model"], start: int = 0, stop: int | None = None
    ) -> Float[Tensor, "rows vocab_tile"]:
        """Logits for already-normalised rows over vocabulary slice ``[start, stop)``."""
        W = self.W[start:stop]
        z = x @ (W if W.dtype == x.dtype else W.to(x.dtype)).T
        if self.b is not None:
            z = z + self.b[start:stop].to(z.dtype)
        if self.softcap is not None:
            z = torch.tanh(z / self.softcap) * self.softcap
        return z

    def forward(self, h: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_vocab"]:
        x = self.normalize(h)
        return self.logits_of_normed(x.reshape(-1, x.shape[-1])).reshape(*x.shape[:-1], -1)

    def fingerprint(self, *, legacy: bool = False) -> str:
        """A cheap hash of the unembedding (shape and a strided sample), to match lenses to models.

        The sample is rounded to bfloat16 first, so the same weights loaded in float32 or
        bfloat16 hash alike (float16 rounds differently: load such lenses with
        ``allow_mismatch=True``). ``legacy`` gives the hash of glt <= 0.1.0 lenses (sample
        rounded to 4 decimals), which `glt.load_lens` still accepts.
        """
        W = self.W
        flat = W.reshape(-1)
        step = max(1, flat.numel() // 4096)
        sample = flat[::step][:4096].detach().float().cpu()
        sample = torch.round(sample * 1e4) / 1e4 if legacy else sample.to(torch.bfloat16).float()
        h = hashlib.sha256(f"{tuple(W.shape)}".encode())
        h.update(sample.numpy().tobytes())
        return h.hexdigest()[:16]


class LogitLens(nn.Module):
    """The logit lens: every residual decoded by the model's own final norm and unembedding.

    Args:
        unembed: the model's read-out.
        n_layers: the model's block count; residual indices run ``0 .. n_layers`` (see
            `glt.ResidualStack` for the convention).

    It reads a block's mid residual (``resid_mid``, after attention and before the MLP) as it
    reads any residual: ``reads_resid_mid`` is True and `transform_sites` decodes stacks
    captured with ``resid_mid=True``. Subclasses whose translators exist only for block-boundary
    residuals set ``reads_resid_mid = False`` (`glt.JacobianLens`) or make it say whether mid
    translators were fitted (`glt.TunedLens`).

    Example:
        >>> # lens = glt.LogitLens.from_model(model)
        >>> # logits = lens(stack.resid[5], 5)  # [batch, pos, d_vocab]
    """

    name = "logit"
    #: whether `transform_mid` / `transform_sites` read mid-block (``resid_mid``) residuals
    reads_resid_mid: bool = True

    def __init__(self, unembed: Unembed, n_layers: int) -> None:
        super().__init__()
        self.unembed = unembed
        self.n_layers = int(n_layers)

    @classmethod
    def from_model(cls, model: Any) -> "LogitLens":
        return cls(Unembed.from_model(model), int(model.cfg.n_layers))

    @property
    def d_model(self) -> int:
        return self.unembed.d_model

    def _check_idx(self, idx: int) -> None:
        if not 0 <= idx <= self.n_layers:
            raise GltError(
                f"idx must be a residual index in [0, {self.n_layers}] (0 = embeddings, "
                f"{self.n_layers} = final), got {idx}"
            )

    def transform_hidden(self, h: Float[Tensor, "... d_model"], idx: int) -> Float[Tensor, "... d_model"]:
        """Identity: the logit lens reads every residual as if it were the final one."""
        self._check_idx(idx)
        return h

    def transform_stack(self, resid: Float[Tensor, "layer ... d_model"]) -> Float[Tensor, "layer ... d_model"]:
        """Vectorised `transform_hidden` over a stack whose layer ``i`` is residual index ``i``."""
        return resid

    def transform_mid(self, h: Float[Tensor, "... d_model"], block: int) -> Float[Tensor, "... d_model"]:
        """Block ``block``'s mid residual (``blocks.{block}.hook_resid_mid``) as the final layer
        would see it: the identity for the logit lens; GltError where ``reads_resid_mid`` is False."""
        if not self.reads_resid_mid:
            raise GltError(no_resid_mid_message(self))
        if not 0 <= block < self.n_layers:
            raise GltError(f"block must be a block index in [0, {self.n_layers}) for a resid_mid residual, "
                           f"got {block}")
        return h

    def transform_sites(
        self, resid: Float[Tensor, "layer ... d_model"], sites: tuple[ResidualSite, ...]
    ) -> Float[Tensor, "layer ... d_model"]:
        """`transform_stack` for a stack whose layers sit at ``sites`` (`glt.ResidualStack.sites`):
        block-boundary residuals through `transform_stack`, mid residuals through `transform_mid`."""
        if len(sites) != resid.shape[0]:
            raise GltError(f"sites must name the {resid.shape[0]} layers of resid, got {len(sites)}")
        mids = [i for i, s in enumerate(sites) if s.mid]
        if not mids:
            return self.transform_stack(resid)
        if not self.reads_resid_mid:
            raise GltError(no_resid_mid_message(self))
        keep = [i for i, s in enumerate(sites) if not s.mid]
        moved = self.transform_stack(resid[keep])
        out = torch.empty((resid.shape[0], *moved.shape[1:]), dtype=moved.dtype, device=moved.device)
        out[keep] = moved
        for i in mids:
            out[i] = self.transform_mid(resid[i], sites[i].index).to(moved.dtype)
        return out

    def forward(self, h: Float[Tensor, "... d_model"], idx: int) -> Float[Tensor, "... d_vocab"]:
        """Logits for residual ``h`` at index ``idx``."""
        return self.unembed(self.transform_hidden(h, idx))

    def check_compatible(self, n_residuals: int, d_model: int) -> None:
        """Raise GltError unless a stack of ``n_residuals`` x ``d_model`` fits this lens."""
        if d_model != self.d_model:
            raise GltError(
                f"lens was built for d_model={self.d_model} but the residuals have d_model="
                f"{d_model}: build or load a lens for this model"
            )
        if n_residuals != self.n_layers + 1:
            raise GltError(
                f"lens decodes {self.n_layers + 1} residual indices (n_layers={self.n_layers}) but "
                f"the stack has {n_residuals}: build or load a lens for this model"
            )
