"""Activation patching across depth: when does the last position commit to its task's answer?

For a target prompt (e.g. an MMLU question, options `` A`` .. `` D``) and a source prompt (e.g. an
SST review, options `` positive`` / `` negative``), `patch_layers` replaces, for every residual
index ``l``, the target's residual at one position (default: its last) with the source's residual
at its last position, runs the rest of the model, and reads the output at the target's last
position. Early patches should keep the target's options; late ones give the source's.

Conventions:

* residual index ``l`` is patched at ``blocks.{l}.hook_resid_pre`` for ``l < n_layers`` and at
  ``blocks.{n_layers-1}.hook_resid_post`` for ``l == n_layers`` (the final residual, before the
  final norm), the same hooks `glt.capture_residuals` reads;
* the output "lands on the source" when the most probable source option is strictly more probable
  than the most probable target option (the top-1 among the union of both option sets); masses
  ``p_target`` / ``p_source`` sum the probabilities of each set over the full vocabulary;
* ``transition_first`` is the first patched layer where the output lands on the source,
  ``transition_stable`` the first from which it does at every later patched layer (-1: never);
* the lens side reads the **unpatched source prompt** at its last position: ``lens_options_*``
  apply the same union-top-1 rule to the lens distribution at each residual index, and
  ``lens_settle`` is the stable onset of the lens top-1 equal to the final top-1 (k = 1).
  `PatchingResult.disagreements` lists every pair whose patching transition and lens layer differ.
"""

from collections.abc import Sequence
from typing import Any, Literal

import torch
from jaxtyping import Bool, Float
from torch import Tensor
from tqdm.auto import tqdm

from glt.core._capture import _as_id_lists, capture_residuals, layer_labels
from glt.core._check import checked, layer_indices
from glt.core._errors import GltError
from glt.core._meter import forward_timer
from glt.core._models import model_name as _model_name
from glt.decoding._onsets import first_crossing, stable_onset
from glt.lenses._logit import LogitLens, Unembed
from glt.lenses._protocol import Lens, lens_set
from glt.studies.patching._result import PatchingResult

__all__ = ["patch_layers"]

class _Stop(Exception):
    """Raised by the final residual hook so the model skips its own norm and unembedding."""


def _prompts(model: Any, prompts: Any, name: str, prepend_bos: bool | None) -> tuple[list[list[int]], list[str]]:
    if isinstance(prompts, str):
        prompts = [prompts]
    elif isinstance(prompts, Tensor):
        prompts = (prompts[None] if prompts.ndim == 1 else prompts).tolist()
    elif isinstance(prompts, Sequence) and prompts and all(isinstance(t, int) for t in prompts):
        prompts = [list(prompts)]
    try:
        ids = _as_id_lists(model, prompts, prepend_bos, False)
    except GltError as e:
        raise GltError(f"{name}: {e}") from e
    if isinstance(prompts[0], str):
        texts = [str(t) for t in prompts]
    else:
        texts = [model.tokenizer.decode(i) if model.tokenizer is not None else str(i) for i in ids]
    return ids, texts


def _option_ids(model: Any, options: Any, name: str) -> tuple[tuple[int, ...], tuple[str, ...]]:
    if isinstance(options, (str, int)) or not isinstance(options, Sequence) or len(options) == 0:
        raise GltError(
            f"{name} must be a non-empty list of option strings or token ids, got {options!r:.60}: "
            "e.g. [' A', ' B', ' C', ' D']"
        )
    tok = model.tokenizer
    d_vocab = int(model.cfg.d_vocab)
    ids, labels = [], []
    for o in options:
        if isinstance(o, str):
            if tok is None:
                raise GltError(f"{name}: the model has no tokenizer, pass option token ids")
            enc = list(tok(o, add_special_tokens=False)["input_ids"])
            if len(enc) != 1:
                raise GltError(
                    f"{name}: option {o!r} is {len(enc)} tokens {enc}, expected exactly 1: pass the "
                    "token id to track (e.g. the first token of ' ' + option)"
                )
            ids.append(int(enc[0]))
            labels.append(o)
        elif isinstance(o, int) and not isinstance(o, bool) and 0 <= o < d_vocab:
            ids.append(int(o))
            labels.append(tok.decode([o]) if tok is not None else str(o))
        else:
            raise GltError(f"{name}: each option must be a string or a token id in [0, {d_vocab}), got {o!r}")
    if len(set(ids)) != len(ids):
        raise GltError(f"{name} holds the same token twice ({ids}): list each option token once")
    return tuple(ids), tuple(labels)


def _option_stats(
    logp: Float[Tensor, "n d_vocab"], t_ids: Tensor, s_ids: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    lt, ls = logp[:, t_ids], logp[:, s_ids]
    return lt.logsumexp(-1).exp(), ls.logsumexp(-1).exp(), ls.amax(-1) > lt.amax(-1)


def _patched_final(
    model: Any, ids: list[int], src: Float[Tensor, "layer d_model"], layers: list[int], t_pos: int
) -> Float[Tensor, "patch d_model"]:
    """One forward pass of ``len(layers)`` copies of ``ids``, row j patched at residual ``layers[j]``."""
    n_layers = int(model.cfg.n_layers)
    final_name = f"blocks.{n_layers - 1}.hook_resid_post"
    by_name: dict[str, list[tuple[int, int]]] = {}
    for j, layer in enumerate(layers):
        name = final_name if layer == n_layers else f"blocks.{layer}.hook_resid_pre"
        by_name.setdefault(name, []).append((j, layer))
    by_name.setdefault(final_name, [])
    store: dict[str, Tensor] = {}

    def make(name: str, todo: list[tuple[int, int]]) -> Any:
        def hook(act: Tensor, hook: Any) -> Tensor:
            if todo:
                act = act.clone()
                for j, layer in todo:
                    act[j, t_pos] = src[layer].to(act.dtype)
            if name == final_name:
                store["h"] = act[:, len(ids) - 1].detach().clone()
                raise _Stop
            return act

        return hook

    device = src.device
    tokens = torch.tensor([ids] * len(layers), dtype=torch.long, device=device)
    with torch.inference_mode(), forward_timer(tokens=len(ids) * len(layers)):
        try:
            model.run_with_hooks(tokens, attention_mask=torch.ones_like(tokens),
                                 fwd_hooks=[(n, make(n, t)) for n, t in by_name.items()])
        except _Stop:
            pass
    if "h" not in store:
        raise GltError(f"the hook {final_name} never ran: unsupported model")
    return store["h"]


def _onsets_of(hit: Bool[Tensor, " patch"], layers: Sequence[int]) -> tuple[Tensor, Tensor]:
    """First and stable layer (from ``layers``) where ``hit`` holds; -1 if never.

    Example:
        >>> f, s = _onsets_of(torch.tensor([False, True, False, True]), [0, 2, 4, 6])
        >>> int(f), int(s)
        (2, 6)
    """
    miss = (~hit).long()[:, None]
    lay = torch.tensor(list(layers) + [-1])  # index -1 (never) maps to -1
    return lay[first_crossing(miss, 1)[0]], lay[stable_onset(miss, 1)[0]]


def _pos(position: Any, lengths: tuple[int, int], p: int) -> tuple[int, int]:
    if position == "last":
        return lengths[0] - 1, lengths[1] - 1
    out = []
    for pos, n, side in zip(position, lengths, ("target", "source"), strict=True):
        q = pos + n if pos < 0 else pos
        if not 0 <= q < n:
            raise GltError(f"position {pos} is outside the {side} prompt of pair {p} ({n} tokens)")
        out.append(q)
    return out[0], out[1]


@checked
def patch_layers(
    model: Any,
    target_prompts: Any,
    source_prompts: Any,
    *,
    target_options: Sequence[str | int],
    source_options: Sequence[str | int],
    position: Literal["last"] | Sequence[int] = "last",
    layers: Sequence[int] | None = None,
    lens: Lens | Sequence[Lens] | None = None,
    batch_size: int = 8,
    prepend_bos: bool | None = None,
    progress: bool = True,
) -> PatchingResult | dict[str, PatchingResult]:
    """Patch the source's residual into the target at every layer and see whose options come out.

    Args:
        model: a TransformerBridge (or HookedTransformer) with ``run_with_hooks``.
        target_prompts, source_prompts: a text, a token id list, or equal-length lists of them
            (pairs; a single prompt on one side is reused for every pair). Texts are tokenised as
            `glt.tokenize` does (the model tokenizer's own BOS policy unless ``prepend_bos``).
        target_options, source_options: option strings (each exactly one token, e.g. ``" A"``) or
            token ids; the two sets must not overlap; shared by all pairs.
        position: ``"last"`` (target's last position <- source's last position) or a pair
            ``(target_pos, source_pos)`` of ints (negative counts from the end); the output is
            always read at the target's last position.
        layers: residual indices to patch (default every one, ``0 .. n_layers``).
        lens: the `glt.Lens` for the comparison (default `glt.LogitLens`; a tuned lens works too),
            or a list of lenses with distinct names: the patched runs are then done once and each
            lens reads the same source residuals; the result is ``{lens.name: PatchingResult}``.
        batch_size: patched layers run together in one forward pass.
        progress: show a progress bar over pairs.

    Returns:
        A frozen `PatchingResult`.

    Example:
        >>> # res = glt.patch_layers(model, mmlu_prompt, sst_prompt,
        >>> #     target_options=[" A", " B", " C", " D"], source_options=[" positive", " negative"])
        >>> # res.transition_stable, res.lens_options_stable, res.disagreements()
    """
    if not hasattr(model, "run_with_hooks") or not hasattr(model, "cfg"):
        raise GltError(f"model must be a TransformerLens model with run_with_hooks, got {type(model).__name__}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise GltError(f"batch_size must be a positive int, got {batch_size!r}")
    n_layers = int(model.cfg.n_layers)
    t_ids_all, t_texts = _prompts(model, target_prompts, "target_prompts", prepend_bos)
    s_ids_all, s_texts = _prompts(model, source_prompts, "source_prompts", prepend_bos)
    n_t, n_s = len(t_ids_all), len(s_ids_all)
    if n_t != n_s and 1 not in (n_t, n_s):
        raise GltError(
            f"target_prompts and source_prompts must pair up: got {n_t} and {n_s} prompts; pass "
            "equal-length lists, or a single prompt on one side"
        )
    n_pairs = max(n_t, n_s)
    t_ids_all, t_texts = (t_ids_all * n_pairs, t_texts * n_pairs) if n_t == 1 else (t_ids_all, t_texts)
    s_ids_all, s_texts = (s_ids_all * n_pairs, s_texts * n_pairs) if n_s == 1 else (s_ids_all, s_texts)
    t_opts, t_labels = _option_ids(model, target_options, "target_options")
    s_opts, s_labels = _option_ids(model, source_options, "source_options")
    if set(t_opts) & set(s_opts):
        raise GltError(
            f"target_options and source_options share tokens {sorted(set(t_opts) & set(s_opts))}: "
            "the two answer sets must be disjoint"
        )
    if position != "last":
        ok = (isinstance(position, Sequence) and not isinstance(position, str) and len(position) == 2
              and all(isinstance(q, int) and not isinstance(q, bool) for q in position))
        if not ok:
            raise GltError(f"position must be 'last' or a (target_pos, source_pos) pair of ints, got {position!r}")
    if layers is None:
        layer_list = list(range(n_layers + 1))
    else:
        layer_list = list(layer_indices(layers, name="layers", last=n_layers, increasing=True,
                                        fix=f"0 = embeddings, {n_layers} = final"))
    lenses, single = lens_set(LogitLens.from_model(model) if lens is None else lens)
    for one in lenses.values():
        one.check_compatible(n_layers + 1, int(model.cfg.d_model))
    unembed = Unembed.from_model(model)
    tok = model.tokenizer
    t_idx = torch.tensor(t_opts)
    s_idx = torch.tensor(s_opts)

    out: dict[str, list[Tensor]] = {}
    per_lens: dict[str, dict[str, list[Tensor]]] = {name: {} for name in lenses}
    top1_tokens = []
    for p in tqdm(range(n_pairs), desc="patching", disable=not progress):
        tgt_ids, src_ids = t_ids_all[p], s_ids_all[p]
        t_pos, s_pos = _pos(position, (len(tgt_ids), len(src_ids)), p)
        src = capture_residuals(model, [src_ids]).resid[:, 0]  # [layer, pos, d_model]
        tgt = capture_residuals(model, [tgt_ids]).resid[:, 0]
        finals = [
            _patched_final(model, tgt_ids, src[:, s_pos], layer_list[a : a + batch_size], t_pos)
            for a in range(0, len(layer_list), batch_size)
        ]
        with torch.inference_mode():
            logp = torch.log_softmax(unembed(torch.cat(finals)).float(), -1).cpu()
            clean = torch.log_softmax(unembed(torch.stack([tgt[-1, -1], src[-1, -1]])).float(), -1).cpu()
        pt, ps, on_src = _option_stats(logp, t_idx, s_idx)
        ct, cs, c_on = _option_stats(clean, t_idx, s_idx)
        top1 = logp.argmax(-1)
        top1_tokens.append(tuple(tok.decode([i]) if tok is not None else str(i) for i in top1.tolist()))
        t_first, t_stable = _onsets_of(on_src, layer_list)
        vals = {
            "p_target": pt, "p_source": ps, "lands_on_source": on_src, "top1": top1,
            "clean_target_p": torch.stack([ct[0], cs[0]]), "clean_source_p": torch.stack([ct[1], cs[1]]),
            "clean_target_on_source": c_on[0], "clean_source_on_source": c_on[1],
            "transition_first": t_first, "transition_stable": t_stable,
        }
        for k, v in vals.items():
            out.setdefault(k, []).append(v)
        for name, one in lenses.items():  # every lens reads the same source residuals
            for k, v in _lens_reading(one, src[:, s_pos], t_idx, s_idx, n_layers).items():
                per_lens[name].setdefault(k, []).append(v)
    stacked = {k: torch.stack(v) for k, v in out.items()}
    results = {name: _result(model, name, n_layers, layer_list, position, t_texts, s_texts, t_opts, s_opts,
                             t_labels, s_labels, top1_tokens,
                             {**stacked, **{k: torch.stack(v) for k, v in part.items()}})
               for name, part in per_lens.items()}
    return results[next(iter(lenses))] if single else results


def _lens_reading(lens: Lens, resid: Float[Tensor, "layer d_model"], t_idx: Tensor, s_idx: Tensor,
                  n_layers: int) -> dict[str, Tensor]:
    """The lens's view of the source residual at every layer: option probabilities, whether the
    source options win, its top-1 and the layers where it settles."""
    with torch.inference_mode():
        lens_logp = torch.log_softmax(lens.unembed(lens.transform_stack(resid[:, None]))[:, 0].float(), -1).cpu()
    lt, ls, l_on = _option_stats(lens_logp, t_idx, s_idx)
    lens_top1 = lens_logp.argmax(-1)
    o_first, o_stable = _onsets_of(l_on, range(n_layers + 1))
    return {
        "lens_p_target": lt, "lens_p_source": ls, "lens_on_source": l_on, "lens_top1": lens_top1,
        "lens_settle": _onsets_of(lens_top1 == lens_top1[-1], range(n_layers + 1))[1],
        "lens_options_first": o_first, "lens_options_stable": o_stable,
    }


def _result(model: Any, lens_name: str, n_layers: int, layer_list: list[int], position: Any, t_texts: list[str],
            s_texts: list[str], t_opts: Any, s_opts: Any, t_labels: Any, s_labels: Any, top1_tokens: list[tuple],
            stacked: dict[str, Tensor]) -> PatchingResult:
    return PatchingResult(
        model_name=_model_name(model),
        lens=lens_name,
        n_layers=n_layers,
        layer_labels=layer_labels(n_layers),
        layers=tuple(layer_list),
        position="last" if position == "last" else f"{position[0]},{position[1]}",
        target_texts=tuple(t_texts),
        source_texts=tuple(s_texts),
        target_options=t_opts,
        source_options=s_opts,
        target_option_labels=t_labels,
        source_option_labels=s_labels,
        top1_tokens=tuple(top1_tokens),
        **stacked,
    )
