"""Residual capture: the residual stream entering every block, from text, token ids or a cache.

Layer-index convention (used everywhere in glt, and the one tuned-lens uses):

* index ``0`` is the embedding output (``blocks.0.hook_resid_pre``, Hugging Face
  ``hidden_states[0]``);
* index ``i`` (``0 < i < n_layers``) is the residual entering block ``i`` (``blocks.i.hook_resid_pre``);
* index ``n_layers`` is the final residual (``blocks.{n_layers-1}.hook_resid_post``), *before* the
  final norm.

So a model with ``n_layers`` blocks gives ``n_layers + 1`` residuals. Batches are right-padded:
real tokens sit at positions ``0 .. length-1``, so under causal attention a text gives the same
residuals alone or inside a batch.

Inside a block (opt-in, ``resid_mid=True``): the residual after the block's attention and before
its MLP, ``blocks.{i}.hook_resid_mid`` (``resid_pre i + attention output``), labelled
``resid_mid i`` and placed between residual indices ``i`` and ``i + 1``, so a stack of a model
with ``n_layers`` blocks holds ``2 * n_layers + 1`` residuals::

    embed, resid_mid 0, resid_pre 1, resid_mid 1, ..., resid_pre {n-1}, resid_mid {n-1}, final

`ResidualStack.sites` says where each sits (`ResidualSite`). Models whose blocks run attention
and MLP in parallel (GPT-J, NeoX/Pythia, Phi, ...) or have no MLP have no such residual.
"""

import re
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from glt.core._check import checked
from glt.core._errors import GltError
from glt.core._meter import forward_timer

__all__ = [
    "ResidualSite",
    "ResidualStack",
    "capture_residuals",
    "iter_residuals",
    "label_sites",
    "layer_labels",
    "model_tokenizer",
    "tokenize",
]


def _n_layers(model: Any) -> int:
    return int(model.cfg.n_layers)


def _hook_names(n_layers: int, resid_mid: bool = False) -> list[str]:
    """Hook names in stack order (see `layer_labels`)."""
    names = []
    for i in range(n_layers):
        names.append(f"blocks.{i}.hook_resid_pre")
        if resid_mid:
            names.append(f"blocks.{i}.hook_resid_mid")
    return names + [f"blocks.{n_layers - 1}.hook_resid_post"]


def layer_labels(n_layers: int, *, resid_mid: bool = False) -> tuple[str, ...]:
    """Labels of a stack's residuals: ``embed``, ``resid_pre 1`` ... ``final``.

    With ``resid_mid=True`` each block's mid residual ``resid_mid i`` follows its input.

    Example:
        >>> layer_labels(2)
        ('embed', 'resid_pre 1', 'final')
        >>> layer_labels(2, resid_mid=True)
        ('embed', 'resid_mid 0', 'resid_pre 1', 'resid_mid 1', 'final')
    """
    out = []
    for i in range(n_layers):
        out.append("embed" if i == 0 else f"resid_pre {i}")
        if resid_mid:
            out.append(f"resid_mid {i}")
    return (*out, "final")


class ResidualSite(NamedTuple):
    """Where one residual of a stack sits in the model.

    Attributes:
        index: with ``mid`` False, the residual index (0 = embeddings, ``i`` = the residual
            entering block ``i``, ``n_layers`` = final); with ``mid`` True, the block whose
            mid residual it is (``blocks.{index}.hook_resid_mid``: after its attention, before
            its MLP).
        mid: whether the residual lies inside a block (between attention and MLP).
    """

    index: int
    mid: bool = False


_MID_LABEL = re.compile(r"resid_mid (\d+)")


def label_sites(labels: Sequence[str]) -> tuple[ResidualSite, ...]:
    """The `ResidualSite` of each label: ``resid_mid i`` is block ``i``'s mid residual, every
    other label a block-boundary residual, numbered in order (0, 1, ..., the last is final).

    A ``resid_mid i`` label must sit between residual indices ``i`` and ``i + 1``, once;
    otherwise GltError.

    Example:
        >>> [tuple(s) for s in label_sites(("embed", "resid_mid 0", "final"))]
        [(0, False), (0, True), (1, False)]
    """
    sites: list[ResidualSite] = []
    n_boundary, seen = 0, set()
    for label in labels:
        m = _MID_LABEL.fullmatch(str(label))
        if m is None:
            sites.append(ResidualSite(n_boundary))
            n_boundary += 1
            continue
        block = int(m.group(1))
        if block != n_boundary - 1 or block in seen:
            raise GltError(
                f"labels: {label!r} must sit once, between residual indices {block} and {block + 1} "
                f"(after the label of residual {block}), got labels {tuple(labels)}: label a block's "
                "mid residual by its block index, as layer_labels(n_layers, resid_mid=True) does"
            )
        seen.add(block)
        sites.append(ResidualSite(block, True))
    if seen and max(seen) >= n_boundary - 1:
        raise GltError(
            f"labels: 'resid_mid {max(seen)}' needs residual index {max(seen) + 1} after it, got labels "
            f"{tuple(labels)}: end the stack with the final residual"
        )
    return tuple(sites)


@dataclass(frozen=True, eq=False)
class ResidualStack:
    """The residual stream at every layer for a right-padded batch.

    Attributes:
        resid: ``[layer, batch, pos, d_model]``; layer 0 = embeddings, layer ``n_layers`` = the
            final residual before the final norm (see the module docstring).
        tokens: ``[batch, pos]`` token ids fed to the model (pad id where ``mask`` is False).
        mask: ``[batch, pos]`` True at real tokens; padding sits at the right.
        labels: one label per layer of ``resid``; ``resid_mid i`` marks block ``i``'s mid
            residual (captured with ``resid_mid=True``; see `sites`).
    """

    resid: Float[Tensor, "layer batch pos d_model"]
    tokens: Int[Tensor, "batch pos"]
    mask: Bool[Tensor, "batch pos"]
    labels: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.resid.ndim != 4:
            raise GltError(
                f"resid must be [layer, batch, pos, d_model], got shape {tuple(self.resid.shape)}"
            )
        n_layer, batch, pos, _ = self.resid.shape
        if tuple(self.tokens.shape) != (batch, pos) or tuple(self.mask.shape) != (batch, pos):
            raise GltError(
                f"tokens and mask must be [batch={batch}, pos={pos}], got tokens "
                f"{tuple(self.tokens.shape)} and mask {tuple(self.mask.shape)}"
            )
        if len(self.labels) != n_layer:
            raise GltError(f"labels must name {n_layer} layers, got {len(self.labels)}")
        label_sites(self.labels)

    @property
    def sites(self) -> tuple[ResidualSite, ...]:
        """Where each layer of ``resid`` sits: a residual index, or a block's mid residual."""
        return label_sites(self.labels)

    @property
    def has_resid_mid(self) -> bool:
        """Whether the stack holds mid-block residuals (``resid_mid i``) besides the boundaries."""
        return any(s.mid for s in self.sites)

    @property
    def n_layers(self) -> int:
        """The number of blocks (the stack holds ``n_layers + 1`` block-boundary residuals, and
        up to ``n_layers`` mid residuals more)."""
        return sum(not s.mid for s in self.sites) - 1

    @property
    def lengths(self) -> Int[Tensor, " batch"]:
        """Number of real tokens in each sequence."""
        return self.mask.sum(-1)

    @classmethod
    def from_cache(
        cls,
        model: Any,
        cache: Any,
        *,
        tokens: Int[Tensor, "batch pos"] | None = None,
        mask: Bool[Tensor, "batch pos"] | None = None,
        resid_mid: bool = False,
    ) -> "ResidualStack":
        """Build a stack from a ``run_with_cache`` cache (HookedTransformer or TransformerBridge).

        The cache must hold ``blocks.{i}.hook_resid_pre`` for every block and the last block's
        ``hook_resid_post`` (a full ``run_with_cache`` does); with ``resid_mid=True`` also every
        ``blocks.{i}.hook_resid_mid``, placed as `layer_labels` says.

        Example:
            >>> # logits, cache = model.run_with_cache(tokens)
            >>> # stack = ResidualStack.from_cache(model, cache, tokens=tokens)
        """
        n_layers = _n_layers(model)
        if resid_mid:
            _check_resid_mid(model)
        names = _hook_names(n_layers, resid_mid)
        missing = [n for n in names if n not in cache]
        if missing:
            raise GltError(
                f"cache lacks residual hooks {missing[:3]}{'...' if len(missing) > 3 else ''}: "
                "run model.run_with_cache(tokens) without a names_filter, or with one that keeps "
                "every 'hook_resid_pre', the last 'hook_resid_post'"
                + (" and every 'hook_resid_mid'" if resid_mid else "")
            )
        parts = [cache[n] for n in names]
        if parts[0].ndim == 2:  # remove_batch_dim=True
            parts = [p.unsqueeze(0) for p in parts]
        resid = torch.stack([p.detach() for p in parts])
        _, batch, pos, _ = resid.shape
        if tokens is None:
            tokens = torch.zeros(batch, pos, dtype=torch.long, device=resid.device)
        tokens = tokens.reshape(batch, pos) if tokens.numel() == batch * pos else tokens
        if mask is None:
            mask = torch.ones(batch, pos, dtype=torch.bool, device=resid.device)
        _check_finite(resid)
        return cls(resid, tokens.to(resid.device), mask.to(resid.device).bool(),
                   layer_labels(n_layers, resid_mid=resid_mid))


def has_resid_mid(model: Any) -> bool:
    """Whether ``model``'s blocks have a residual between attention and MLP (``resid_mid=True`` works)."""
    try:
        _check_resid_mid(model)
    except GltError:
        return False
    return True


def _check_resid_mid(model: Any) -> None:
    """GltError unless ``model``'s blocks have a residual between attention and MLP."""
    cfg = model.cfg
    why = None
    if getattr(cfg, "parallel_attn_mlp", False):
        why = "runs each block's attention and MLP in parallel on the same input (cfg.parallel_attn_mlp)"
    elif getattr(cfg, "attn_only", False):
        why = "is attention-only (cfg.attn_only: no MLP)"
    elif hasattr(model, "hook_dict") and "blocks.0.hook_resid_mid" not in model.hook_dict:
        why = "has no hook blocks.0.hook_resid_mid"
    if why:
        raise GltError(
            f"resid_mid=True: model {getattr(cfg, 'model_name', type(model).__name__)!r} {why}, so no residual "
            "sits between a block's attention and its MLP: capture with resid_mid=False (block-boundary "
            "residuals only)"
        )


def _check_finite(resid: Tensor) -> None:
    if not bool(torch.isfinite(resid).all()):
        bad = (~torch.isfinite(resid)).flatten(1).any(-1).nonzero().flatten().tolist()
        raise GltError(
            f"residual stream has NaN/inf values at layers {bad[:5]}: check the model's dtype "
            "(fp16 overflows; load with dtype=torch.float32 or bfloat16) and its inputs"
        )


def model_tokenizer(model: Any) -> Any:
    """The model's own Hugging Face tokenizer.

    For models from `glt.load_model` this is the tokenizer exactly as saved with the model;
    TransformerLens's ``model.tokenizer`` is re-initialised with ``add_bos_token=True``, which
    prepends a BOS some models (SmolLM2) never see in training. For other models glt falls back
    to ``model.tokenizer``: pass ``prepend_bos`` to `tokenize` to control BOS there.
    """
    return getattr(model, "_glt_tokenizer", None) or getattr(model, "tokenizer", None)


@checked
def tokenize(
    model: Any,
    texts: Any,
    *,
    prepend_bos: bool | None = None,
    truncate: bool = False,
) -> list[list[int]]:
    """Token ids for ``texts`` exactly as the model's own tokenizer produces them.

    BOS policy: with ``prepend_bos=None`` glt adds whatever the Hugging Face tokenizer adds with
    its special tokens (Gemma: ``<bos>``; SmolLM2 and GPT-2: nothing), never TransformerLens's own
    ``prepend_bos`` default. ``True`` / ``False`` force a BOS on / off.

    Texts longer than the model's context raise GltError unless ``truncate=True``, which keeps the
    first ``n_ctx`` tokens and warns.
    """
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, Sequence) or len(texts) == 0:
        raise GltError(f"texts must be a non-empty list of strings, got {texts!r:.80}")
    tok = model_tokenizer(model)
    if tok is None:
        raise GltError("the model has no tokenizer: pass token ids instead of strings")
    n_ctx = int(model.cfg.n_ctx)
    bos = tok.bos_token_id
    out = []
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise GltError(f"texts[{i}] must be a string, got {type(text).__name__}: {text!r:.60}")
        if not text.strip():
            raise GltError(f"texts[{i}] is empty or whitespace: pass text with at least one token")
        ids = list(tok(text, add_special_tokens=True)["input_ids"])
        if prepend_bos is True and bos is not None and (not ids or ids[0] != bos):
            ids = [bos] + ids
        elif prepend_bos is False and bos is not None and ids and ids[0] == bos:
            ids = ids[1:]
        out.append(_fit_context(ids, n_ctx, truncate, f"texts[{i}]"))
    return out


def _fit_context(ids: list[int], n_ctx: int, truncate: bool, what: str) -> list[int]:
    if len(ids) == 0:
        raise GltError(f"{what} tokenises to nothing: pass text with at least one token")
    if len(ids) > n_ctx:
        if not truncate:
            raise GltError(
                f"{what} has {len(ids)} tokens but the model's context is {n_ctx}: shorten it or "
                "pass truncate=True to keep the first n_ctx tokens"
            )
        warnings.warn(f"{what}: truncated from {len(ids)} to {n_ctx} tokens", stacklevel=3)
        ids = ids[:n_ctx]
    return ids


def pad_batch(
    seqs: Sequence[Sequence[int]], pad_id: int, device: Any = None
) -> tuple[Int[Tensor, "batch pos"], Bool[Tensor, "batch pos"]]:
    """Right-pad token id lists into ``(tokens, mask)``."""
    width = max(len(s) for s in seqs)
    tokens = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.bool)
    for i, s in enumerate(seqs):
        tokens[i, : len(s)] = torch.as_tensor(list(s), dtype=torch.long)
        mask[i, : len(s)] = True
    return tokens.to(device), mask.to(device)


class _Stop(Exception):
    """Raised by the last residual hook so the model skips the final norm and unembedding."""


def _forward_residuals(model: Any, tokens: Tensor, mask: Tensor, resid_mid: bool = False) -> Tensor:
    n_layers = _n_layers(model)
    names = _hook_names(n_layers, resid_mid)
    store: dict[int, Tensor] = {}

    def grab(idx: int, stop: bool):
        def hook(act: Tensor, hook: Any) -> None:
            store[idx] = act.detach()
            if stop:
                raise _Stop

        return hook

    last = len(names) - 1
    hooks = [(name, grab(i, i == last)) for i, name in enumerate(names)]
    with torch.inference_mode():
        try:
            model.run_with_hooks(tokens, attention_mask=mask.long(), fwd_hooks=hooks)
        except _Stop:
            pass
    if len(store) != len(names):
        missed = [n for i, n in enumerate(names) if i not in store]
        raise GltError(f"captured {len(store)} of {len(names)} residual hooks (none fired at {missed[:3]}): "
                       "unsupported model")
    return torch.stack([store[i] for i in range(len(names))])


def _device(model: Any) -> torch.device:
    return next(model.parameters()).device


def _as_id_lists(model: Any, inputs: Any, prepend_bos: bool | None, truncate: bool) -> list[list[int]]:
    if isinstance(inputs, Tensor):
        if inputs.ndim == 1:
            inputs = inputs.unsqueeze(0)
        if inputs.ndim != 2 or inputs.dtype.is_floating_point:
            raise GltError(
                f"token ids must be an integer [batch, pos] tensor, got {inputs.dtype} {tuple(inputs.shape)}"
            )
        inputs = inputs.tolist()
    if isinstance(inputs, str) or (isinstance(inputs, Sequence) and inputs and isinstance(inputs[0], str)):
        return tokenize(model, inputs, prepend_bos=prepend_bos, truncate=truncate)
    if not isinstance(inputs, Sequence) or len(inputs) == 0:
        raise GltError(
            f"inputs must be text or a non-empty list of texts or token id lists, got {inputs!r:.80}"
        )
    d_vocab = int(model.cfg.d_vocab)
    out = []
    for i, ids in enumerate(inputs):
        if isinstance(ids, str) or not isinstance(ids, Sequence):
            raise GltError(f"inputs[{i}] must be a list of token ids, got {type(ids).__name__}")
        ids = [int(t) for t in ids]
        if any(t < 0 or t >= d_vocab for t in ids):
            raise GltError(f"inputs[{i}] has token ids outside [0, {d_vocab}): pass valid ids")
        out.append(_fit_context(ids, int(model.cfg.n_ctx), truncate, f"inputs[{i}]"))
    return out


@checked
def iter_residuals(
    model: Any,
    inputs: Any,
    *,
    batch_size: int = 8,
    prepend_bos: bool | None = None,
    truncate: bool = False,
    resid_mid: bool = False,
) -> Iterator[ResidualStack]:
    """Yield one `ResidualStack` per batch of ``batch_size`` inputs (texts or token id lists).

    Only the residual hooks are cached, and the forward pass stops after the last block.
    ``resid_mid=True`` adds each block's mid residual (see `capture_residuals`).
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise GltError(f"batch_size must be a positive int, got {batch_size!r}")
    if resid_mid:
        _check_resid_mid(model)
    seqs = _as_id_lists(model, inputs, prepend_bos, truncate)
    tok = model_tokenizer(model)
    pad_id = getattr(tok, "pad_token_id", None)
    pad_id = int(pad_id) if pad_id is not None else 0
    device = _device(model)
    labels = layer_labels(_n_layers(model), resid_mid=resid_mid)
    for start in range(0, len(seqs), batch_size):
        tokens, mask = pad_batch(seqs[start : start + batch_size], pad_id, device)
        with forward_timer(tokens=int(mask.sum())):
            resid = _forward_residuals(model, tokens, mask, resid_mid)
        _check_finite(resid)
        yield ResidualStack(resid, tokens, mask, labels)


@checked
def capture_residuals(
    model: Any,
    inputs: Any,
    *,
    batch_size: int = 8,
    prepend_bos: bool | None = None,
    truncate: bool = False,
    resid_mid: bool = False,
) -> ResidualStack:
    """Run ``inputs`` through ``model`` and return the residual stream entering every block.

    Args:
        model: a TransformerBridge or HookedTransformer.
        inputs: a string, a list of strings, a list of token id lists, or a ``[batch, pos]``
            integer tensor.
        batch_size: forward-pass batch size (results do not depend on it).
        prepend_bos: BOS policy, see `tokenize`.
        truncate: keep the first ``n_ctx`` tokens of over-long inputs (warns) instead of raising.
        resid_mid: also capture each block's residual after its attention and before its MLP
            (``blocks.{i}.hook_resid_mid``, labelled ``resid_mid i``), interleaved after the
            block's input. Only the logit lens reads these (see `glt.LogitLens`); models with
            parallel attention and MLP, or no MLP, raise GltError.

    Returns:
        A right-padded `ResidualStack` of shape ``[n_layers + 1, batch, pos, d_model]``
        (``[2 * n_layers + 1, ...]`` with ``resid_mid``).

    Example:
        >>> # stack = glt.capture_residuals(model, ["The capital of France is"])
        >>> # stack.resid.shape  -> (19, 1, 6, 640) for the default model
        >>> # glt.capture_residuals(model, "The capital", resid_mid=True).labels[:3]
        >>> # -> ('embed', 'resid_mid 0', 'resid_pre 1')
    """
    parts = list(
        iter_residuals(
            model, inputs, batch_size=batch_size, prepend_bos=prepend_bos, truncate=truncate,
            resid_mid=resid_mid,
        )
    )
    if len(parts) == 1:
        return parts[0]
    width = max(p.tokens.shape[1] for p in parts)

    def pad(t: Tensor, dim: int, value: Any) -> Tensor:
        extra = width - t.shape[dim]
        if extra == 0:
            return t
        shape = list(t.shape)
        shape[dim] = extra
        return torch.cat([t, torch.full(shape, value, dtype=t.dtype, device=t.device)], dim)

    pad_id = int(parts[0].tokens[~parts[0].mask].flatten()[:1].tolist()[0]) if (~parts[0].mask).any() else 0
    return ResidualStack(
        torch.cat([pad(p.resid, 2, 0.0) for p in parts], 1),
        torch.cat([pad(p.tokens, 1, pad_id) for p in parts], 0),
        torch.cat([pad(p.mask, 1, False) for p in parts], 0),
        parts[0].labels,
    )
