"""Fitting a Jacobian lens: the average Jacobian of the final residual with respect to each residual.

The estimator is the reference implementation's (Gurnee et al. 2026; TransformerLens 4.3's
``JacobianLens.fit``). Each text is cut to its first ``max_seq_len`` tokens; its valid positions
are ``V = skip_first_positions .. seq_len - 2`` (the first positions are attention sinks with
atypical statistics, the last has no next token). For residual index ``i``::

    J_i = mean over texts of  1/|V| * sum_{t in V} sum_{t' in V} d h_final[t'] / d h_i[t]

the effect of source position ``t`` summed over every target position ``t'`` (causal attention
makes the terms with ``t' < t`` zero) and averaged over sources and texts: ``[d_model, d_model]``,
``[out, in]``. It is deterministic given the texts.

Two implementations, equal to float rounding and both tested against
``torch.autograd.functional.jacobian`` and finite differences on tiny random models:

* ``"transformer_lens"``: TransformerLens's own ``JacobianLens.fit``. It needs TransformerLens
  >= 4.3 and a raw ``TransformerBridge`` (what `glt.load_model` returns there), tokenises with
  ``model.to_tokens``, and fits block outputs only (glt residuals ``1 .. n_layers - 1``).
* ``"glt"``: the same computation on glt's hook names (``blocks.{i}.hook_resid_pre``, the last
  ``hook_resid_post``), so it runs on a ``HookedTransformer`` (TransformerLens 2.x) as on a
  bridge, tokenises with `glt.tokenize` (the tokens glt's read-out sees) and fits residual 0 in
  the same sweep. Per text: one forward pass of the text replicated ``dim_batch`` times, the
  earliest source residual made a leaf that requires grad (parameters frozen, so the graph holds
  only activations), then ``ceil(d_model / dim_batch)`` vector-Jacobian products, each with
  one-hot cotangents on ``dim_batch`` output dimensions at every valid target position, giving
  those rows of every ``J_i`` at once. (Batching the products with ``torch.autograd.grad(...,
  is_grads_batched=True)`` instead, a vmap over one forward pass, was 1.6x slower on CPU.)

``estimator="auto"`` takes TransformerLens's where it applies and gives the same lens, i.e. a raw
bridge with ``residual_0="identity"``; with ``residual_0="fit"`` (the default) it takes glt's,
since TransformerLens's cannot fit the embeddings and fitting them beside it would take a second
sweep of backward passes (twice the cost).

Cost per text: one forward and ``d_model / dim_batch`` backward passes over ``dim_batch x
seq_len`` tokens, i.e. about ``d_model`` times a single-sequence backward pass: at fixed shape
ratios it grows like ``d_model^3 * n_layers * seq_len``. ``benchmarks/jacobian_lens_cost.py``
measures it; `merge_jacobian_lenses` combines lenses fitted on disjoint slices of texts.
"""

import math
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import torch
from torch import Tensor
from tqdm.auto import tqdm

from glt.core._capture import tokenize
from glt.core._check import checked
from glt.core._errors import GltError
from glt.core._models import model_name, tl_major_version
from glt.lenses._jacobian import JacobianLens
from glt.lenses._logit import Unembed

__all__ = ["fit_jacobian_lens", "merge_jacobian_lenses", "prompt_jacobian"]


def _hook_names(n_layers: int) -> list[str]:
    """glt's residual hooks: index ``i < n_layers`` is ``blocks.i.hook_resid_pre``, ``n_layers`` the last
    block's ``hook_resid_post`` (`glt.ResidualStack`)."""
    return [f"blocks.{i}.hook_resid_pre" for i in range(n_layers)] + [f"blocks.{n_layers - 1}.hook_resid_post"]


@contextmanager
def _frozen(model: Any) -> Iterator[None]:
    """Parameters frozen (flags restored after), so the graph is rooted at the residual stream."""
    saved = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in saved:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in saved:
            p.requires_grad_(flag)


def prompt_jacobian(
    model: Any, ids: Sequence[int], sources: Sequence[int], *, dim_batch: int = 8, skip_first_positions: int = 16,
    rows: Sequence[int] | None = None,
) -> Tensor:
    """glt's estimator for one token sequence: ``[len(sources), d_model, d_model]`` float32.

    Row ``o`` of entry ``j`` is ``1/|V| sum_{t in V} sum_{t' in V} d h_final[t', o] / d h_{sources[j]}[t]``
    (see the module docstring). ``sources`` are residual indices in ``0 .. n_layers - 1``;
    ``rows`` the output dimensions computed (default all; the others stay 0), one backward pass
    per ``dim_batch`` of them, so the cost is linear in ``len(rows)`` (the benchmark times a few
    and extrapolates). Freezing the parameters first (as `fit_jacobian_lens` does) keeps weight
    gradients out of the graph.
    """
    n, d = int(model.cfg.n_layers), int(model.cfg.d_model)
    names = _hook_names(n)
    device = model.W_U.device
    tokens = torch.tensor([list(ids)], dtype=torch.long, device=device)
    valid = torch.arange(skip_first_positions, len(ids) - 1, device=device)
    root = min(sources)
    captured: dict[int, Tensor] = {}

    def grab(i: int) -> Any:
        def hook(act: Tensor, hook: Any) -> Tensor:
            if i == root:  # a leaf here: the backward passes stop at the earliest source
                act = act.detach().requires_grad_(True)
            captured[i] = act
            return act
        return hook

    hooks = [(names[i], grab(i)) for i in sorted(set(sources) | {n})]
    with torch.enable_grad(), model.hooks(fwd_hooks=hooks):
        model(tokens.expand(dim_batch, -1), return_type=None)
    target, srcs = captured[n], [captured[i] for i in sources]
    out = torch.zeros(len(sources), d, d, dtype=torch.float32, device=target.device)
    cot = torch.zeros_like(target)
    lane = torch.arange(dim_batch, device=target.device)
    todo = torch.tensor(list(range(d)) if rows is None else list(rows), dtype=torch.long, device=target.device)
    passes = math.ceil(len(todo) / dim_batch)
    for p in range(passes):
        dims = todo[p * dim_batch : (p + 1) * dim_batch]
        k = len(dims)
        cot.zero_()
        cot[lane[:k, None], valid[None, :], dims[:, None]] = 1.0  # lane j: output dim dims[j]
        grads = torch.autograd.grad(target, srcs, cot, retain_graph=p < passes - 1)
        for j, g in enumerate(grads):
            out[j, dims.to(out.device)] = g[:k, valid.to(g.device)].float().mean(1).to(out.device)
    return out


def _transformer_lens_refusal(model: Any) -> str | None:
    """Why TransformerLens's estimator does not apply to ``model`` (None: it applies)."""
    if tl_major_version() < 4:
        return "TransformerLens < 4.3 has no JacobianLens"
    try:  # deferred: imports transformers (heavy), and TransformerLens < 4.3 lacks the module
        from transformer_lens.model_bridge import TransformerBridge
        from transformer_lens.tools.analysis import JacobianLens as _TLJacobianLens  # noqa: F401
    except ImportError as e:
        return f"this TransformerLens has no JacobianLens ({e})"
    if not isinstance(model, TransformerBridge):
        return f"it fits a TransformerBridge only, got {type(model).__name__}"
    if getattr(model, "compatibility_mode", False) or getattr(model, "_weights_processed", False):
        return "it needs raw Hugging Face weights (this bridge's weights are processed)"
    return None


def _fit_transformer_lens(model: Any, texts: list[str], opts: dict[str, int], progress: bool) -> tuple[Tensor, int]:
    from transformer_lens.tools.analysis import JacobianLens as TLJacobianLens  # deferred: see above

    need = opts["skip_first_positions"] + 1
    long_enough = [t for t in texts if min(model.to_tokens(t).shape[1], opts["max_seq_len"]) > need]
    if not long_enough:
        raise GltError(f"texts: none has more than skip_first_positions + 1 = {need} tokens, so nothing "
                       "can be fitted: pass longer texts or a smaller skip_first_positions")
    try:
        tl = TLJacobianLens.fit(model, long_enough, corpus="glt.fit_jacobian_lens", show_progress=progress, **opts)
    except (TypeError, ValueError) as e:
        raise GltError(f"TransformerLens's JacobianLens.fit refused the model ({e}): pass estimator='glt'") from e
    d = int(model.cfg.d_model)
    J = torch.stack([torch.eye(d)] + [tl.jacobians[layer].float() for layer in range(int(model.cfg.n_layers) - 1)])
    return J, int(tl.n_prompts)


def _fit_glt(model: Any, seqs: list[list[int]], sources: list[int], opts: dict[str, int],
             progress: bool) -> tuple[Tensor, int]:
    d, n = int(model.cfg.d_model), int(model.cfg.n_layers)
    total = torch.zeros(len(sources), d, d, dtype=torch.float32)
    with _frozen(model):
        for ids in tqdm(seqs, desc="fit Jacobian lens", unit="text", disable=not progress):
            total += prompt_jacobian(model, ids, sources, dim_batch=opts["dim_batch"],
                                     skip_first_positions=opts["skip_first_positions"]).cpu()
    J = torch.eye(d).repeat(n, 1, 1)
    J[sources] = total / len(seqs)
    return J, len(seqs)


def _positive(name: str, value: Any, low: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise GltError(f"{name} must be an int >= {low}, got {value!r}")
    return value


@checked
def fit_jacobian_lens(
    model: Any,
    texts: Sequence[str],
    *,
    estimator: Literal["auto", "glt", "transformer_lens"] = "auto",
    residual_0: Literal["fit", "identity"] = "fit",
    dim_batch: int = 8,
    max_seq_len: int | None = None,
    skip_first_positions: int = 16,
    progress: bool = True,
) -> JacobianLens:
    """Fit a `glt.JacobianLens` for ``model`` on ``texts`` (the estimator: see the module docstring).

    Args:
        model: a TransformerLens model in eval mode (`glt.load_model`). Its parameters are
            frozen during the fit and restored after.
        texts: the corpus; each text is cut to its first ``max_seq_len`` tokens, and texts of at
            most ``skip_first_positions + 1`` tokens are skipped (counted in the config).
        estimator: ``"auto"``, ``"glt"`` or ``"transformer_lens"`` (module docstring).
        residual_0: ``"fit"`` fits ``J_0`` for the embeddings too (glt's estimator); ``"identity"``
            leaves it the identity, as the reference format does.
        dim_batch: output dimensions per backward pass (the text is replicated this many times;
            memory grows with it, the backward FLOPs do not).
        max_seq_len: tokens kept per text (default: 128 as in the reference implementation, or
            the model's context ``n_ctx`` if shorter).
        skip_first_positions: leading positions left out of V (default 16, as the reference).
        progress: show a progress bar over texts.

    Returns:
        The lens; ``lens.config`` records the estimator, texts, tokens, options and seconds.

    Example:
        >>> # lens = glt.fit_jacobian_lens(model, glt.wikipedia_paragraphs("train")[:200])
        >>> # lens.save("my-jacobian-lens"); glt.load_lens("my-jacobian-lens", model)
    """
    dim_batch = _positive("dim_batch", dim_batch, 1)
    skip = _positive("skip_first_positions", skip_first_positions, 0)
    n_ctx = int(model.cfg.n_ctx)
    max_seq_len = _positive("max_seq_len", min(128, n_ctx) if max_seq_len is None else max_seq_len, skip + 2)
    if max_seq_len > n_ctx:
        raise GltError(f"max_seq_len must be at most the model's context n_ctx={n_ctx}, got {max_seq_len}")
    if getattr(model, "training", False):
        raise GltError("model is in training mode (dropout would make the Jacobian random): call model.eval()")
    n_layers = int(model.cfg.n_layers)
    sources = list(range(0 if residual_0 == "fit" else 1, n_layers))
    if not sources:
        raise GltError(f"a model with n_layers={n_layers} and residual_0='identity' leaves nothing to fit: "
                       "pass residual_0='fit'")
    refusal = _transformer_lens_refusal(model)
    if estimator == "transformer_lens" and (refusal or residual_0 == "fit"):
        raise GltError(
            "estimator='transformer_lens' does not apply: "
            + (refusal or "it cannot fit residual 0 (the embeddings); pass residual_0='identity'")
            + "; or pass estimator='glt' (the same estimator on glt's hooks)")
    used = "transformer_lens" if estimator == "transformer_lens" or (
        estimator == "auto" and refusal is None and residual_0 == "identity") else "glt"
    with warnings.catch_warnings():  # texts past n_ctx are cut to max_seq_len <= n_ctx below anyway
        warnings.filterwarnings("ignore", message=r".*truncated from \d+ to \d+ tokens")
        seqs = [ids[:max_seq_len] for ids in tokenize(model, list(texts), truncate=True)]
    usable = [s for s in seqs if len(s) > skip + 1]
    if not usable:
        raise GltError(f"texts: none has more than skip_first_positions + 1 = {skip + 1} tokens, so nothing "
                       "can be fitted: pass longer texts or a smaller skip_first_positions")
    opts = {"dim_batch": dim_batch, "max_seq_len": max_seq_len, "skip_first_positions": skip}
    t0 = time.perf_counter()
    if used == "transformer_lens":
        J, n_prompts = _fit_transformer_lens(model, list(texts), opts, progress)
    else:
        J, n_prompts = _fit_glt(model, usable, sources, opts, progress)
    seconds = time.perf_counter() - t0
    config = {
        "model_name": model_name(model),
        "n_prompts": n_prompts,
        "fit": {"estimator": used, **opts, "texts": len(seqs), "texts_too_short": len(seqs) - len(usable),
                "tokens": sum(len(s) for s in usable), "seconds": round(seconds, 3),
                "seconds_per_text": round(seconds / max(n_prompts, 1), 3),
                "dtype": str(model.W_U.dtype).removeprefix("torch.")},
    }
    lens = JacobianLens(Unembed.from_model(model), n_layers, config)
    return lens.set_jacobian(J, residual_0="fitted" if residual_0 == "fit" else "identity")


@checked
def merge_jacobian_lenses(lenses: Sequence[JacobianLens]) -> JacobianLens:
    """One lens from lenses fitted on disjoint slices of texts: matrices averaged, weighted by
    ``config["n_prompts"]`` (so a fit split into shards and merged equals the fit in one go).
    The fit records are summed; a part's ``config["shard"]`` (its texts) is kept, one entry per
    part, under ``config["shards"]``, never as the merged lens's own.

    Raises GltError when the lenses differ in model, size or ``residual_0``, or one has no prompts.
    """
    if not lenses:
        raise GltError("lenses is empty: pass the shards to merge")
    first = lenses[0]
    counts = [int(x.config.get("n_prompts") or 0) for x in lenses]
    for i, (x, c) in enumerate(zip(lenses, counts, strict=True)):
        if c < 1:
            raise GltError(f"lenses[{i}] records n_prompts={c}: merge only fitted lenses")
        if (x.n_layers, x.d_model, x.residual_0, x.unembed.fingerprint()) != (
                first.n_layers, first.d_model, first.residual_0, first.unembed.fingerprint()):
            raise GltError(f"lenses[{i}] (n_layers={x.n_layers}, d_model={x.d_model}, residual_0={x.residual_0}) "
                           f"does not match lenses[0] (n_layers={first.n_layers}, d_model={first.d_model}, "
                           f"residual_0={first.residual_0}) or its model: merge shards of one fit")
    total = sum(counts)
    J = sum(x.jacobian.detach().cpu().double() * c for x, c in zip(lenses, counts, strict=True)) / total
    fits = [x.config.get("fit", {}) for x in lenses]
    config = {**first.config, "n_prompts": total,
              "fit": {**fits[0], "merged_shards": len(lenses),
                      **{k: sum(f.get(k, 0) for f in fits) for k in ("texts", "texts_too_short", "tokens", "seconds")}}}
    config["fit"]["seconds_per_text"] = round(config["fit"]["seconds"] / total, 3)
    shards = [x.config["shard"] for x in lenses if "shard" in x.config]  # each part's own provenance
    config.pop("shard", None)
    if shards:
        config["shards"] = shards
    return JacobianLens(first.unembed, first.n_layers, config).set_jacobian(J.float(), residual_0=first.residual_0)
