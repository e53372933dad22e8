"""``glt study`` stages built on guess-then-refine (and early exit, which reuses its read-out),
plus fact recall.

Early exit needs per-position top-1 tokens and probabilities at every layer: the
guess-then-refine result keeps exactly those, so the early-exit stage converts it back into a
`glt.Readout` instead of reading the model again. If the guess-then-refine stage did not run (or
failed), the early-exit stage runs it itself with the same arguments, so the result is the same.
"""

import warnings
from collections.abc import Sequence
from typing import Any

import torch

from glt.core._capture import tokenize
from glt.data._frequency import DEFAULT_EDGES, EXCLUDED, bucket_labels
from glt.data._wikipedia import WIKI_SOURCE
from glt.decoding._readout import Readout
from glt.lenses._logit import LogitLens
from glt.pipeline._context import StudyContext, reads_resid_mid
from glt.pipeline._stages import Stage, StudySpec, each_stage, fmt, pct
from glt.plotting._curves import plot_side_by_side
from glt.studies.early_exit import EarlyExitResult, plot_early_exit
from glt.studies.early_exit._run import early_exit
from glt.studies.guess_then_refine import GuessRefineResult
from glt.studies.guess_then_refine._plots import (
    plot_bucket_share,
    plot_flip_rate,
    plot_flip_split,
    plot_rank_by_bucket,
)
from glt.studies.guess_then_refine._run import run_guess_then_refine
from glt.studies.guess_then_refine._sublayers import SublayerSplit, plot_sublayer_split, sublayer_split

__all__ = ["early_exit_spec", "gtr_readout", "guess_then_refine_spec", "sublayer_spec"]


def _fmt(x: Any, digits: int = 1) -> str:
    return fmt(x, digits)


def _gtr(ctx: StudyContext, lens_names: Sequence[str]) -> dict[str, Any]:
    """``{lens name: GuessRefineResult}``, every lens decoding the same forward passes."""
    cfg = ctx.config
    ids = [x[: cfg.gtr_max_tokens] for x in _tokens(ctx, cfg.gtr_texts)]
    lenses = [ctx.lens(n) for n in lens_names]
    res = run_guess_then_refine(
        ctx.model, lenses, ids, frequency=ctx.frequency(), max_positions=None,
        batch_size=cfg.batch_size, seed=cfg.seed, progress=ctx.progress,
        source=f"{WIKI_SOURCE}; {cfg.text_split} split, first {cfg.gtr_max_tokens} tokens of "
        f"{cfg.gtr_texts} paragraphs, every position a prefix")
    return {n: res[lens.name] for n, lens in zip(lens_names, lenses, strict=True)}


def _tokens(ctx: StudyContext, n: int) -> list[list[int]]:
    with warnings.catch_warnings():  # the caller keeps only the first tokens anyway
        warnings.filterwarnings("ignore", message=".*truncated from")
        return tokenize(ctx.model, ctx.wiki_texts(n), truncate=True)


def _run_gtr(ctx: StudyContext, stages: Sequence[Stage]) -> dict[str, Any]:
    res = _gtr(ctx, [s.lens for s in stages])
    return {s.name: res[s.lens] for s in stages}


def _gtr_figs(results: dict[Stage, Any]) -> dict[str, Any]:
    out = {}
    for s, res in results.items():
        out[f"bucket_share_{s.lens}"] = plot_bucket_share(res)
        out[f"flip_rate_{s.lens}"] = plot_flip_rate(res)
        out[f"flip_split_{s.lens}"] = plot_flip_split(res)
        out[f"rank_by_bucket_{s.lens}"] = plot_rank_by_bucket(res)
    if len(results) >= 2:  # the bucket share over depth, one panel per lens (logit first)
        ordered = [res for _, res in sorted(results.items(), key=lambda kv: kv[0].lens != "logit")]
        name = "bucket_share_" + "_vs_".join(res.lens for res in ordered)
        out[name] = plot_side_by_side(*ordered, plot=plot_bucket_share)
    return out


def _gtr_head(res: Any) -> list[tuple[str, str]]:
    h = res.headline()
    layers = h["early_layers"]
    span = f"layers {layers[0]}-{layers[-1]}" if len(layers) > 1 else f"layer {layers[0]}"
    c = res.counts
    return [
        (f"{h['top_bucket']} share of the top-1, early ({span}; N={h['n_early']:,})", pct(h["top_share_early"])),
        (f"{h['top_bucket']} share of the final top-1 (N={h['n_final']:,})", pct(h["top_share_final"])),
        (f"flip rate of early {h['top_bucket']} guesses (N={h['n_top_early']:,})", pct(h["top_flip_rate_early"])),
        (f"final next-token accuracy (N={h['n_gold']:,})", pct(h["final_accuracy"])),
        ("positions read (texts)", f"{res.n_positions:,} ({c.get('n_texts_used', '?')})"),
        (
            "skipped or unread",
            ", ".join(f"{k}={v}" for k, v in c.items() if k.startswith(("skipped", "n_no")) and v) or "none",
        ),
    ]


def gtr_readout(res: Any) -> Any:
    """A `glt.Readout` (top-1 only) rebuilt from a `glt.GuessRefineResult`, for `glt.early_exit`."""

    n_layer, n = res.top1.shape
    return Readout(
        layer_labels=tuple(res.layer_labels), batch_index=res.text_index.clone(),
        pos_index=res.pos_index.clone(), input_ids=torch.full((n,), -1, dtype=torch.long),
        targets=res.top1[-1][:, None].clone(), ranks=res.rank_final[..., None].clone(),
        target_logprobs=torch.full((n_layer, n, 1), float("nan")), topk_ids=res.top1[..., None].clone(),
        topk_logprobs=res.max_prob.double().log().float()[..., None], entropy=torch.full((n_layer, n), float("nan")),
        kl_to_final=torch.full((n_layer, n), float("nan")), lens=res.lens)


def _run_exit(ctx: StudyContext, stage: Stage) -> Any:
    res = ctx.results.get(f"guess_refine_{stage.lens}")
    if res is None:
        res = _gtr(ctx, [stage.lens])[stage.lens]
    cats = [res.bucket_labels[b] for b in res.bucket[-1].tolist()]
    return early_exit(gtr_readout(res), gold=res.gold, categories=cats, model_name=res.model,
                      data_source=f"{res.data_source}; categories: frequency bucket of the final top-1")


def _exit_figs(results: dict[Stage, Any]) -> dict[str, Any]:
    order = list(bucket_labels(DEFAULT_EDGES)) + [EXCLUDED]
    out = {}
    for s, res in results.items():
        cats = [g for g in res.groups if g != "all"]
        cats.sort(key=lambda g: order.index(g) if g in order else len(order))
        out[f"early_exit_{s.lens}"] = plot_early_exit(res, groups=cats + ["all"])
        out[f"early_exit_accuracy_{s.lens}"] = plot_early_exit(res, metric="accuracy", groups=["all"])
    return out


def _exit_head(res: Any) -> list[tuple[str, str]]:
    gi = res.groups.index("all")
    rows = [("tokens (with gold)", f"{res.n[gi]:,} ({res.n_gold[gi]:,})"),
            ("median stable onset of the final top-1 (k=1)", _fmt(res.onset_median[gi])),
            ("compute saved by an oracle exit at the stable onset", pct(res.onset_saved[gi]))]
    for tau in (0.5, 0.9):
        if tau in res.taus:
            ti = res.taus.index(tau)
            rows.append((f"exit at top-1 probability >= {tau}: compute saved / agreement / accuracy",
                         f"{pct(res.tau_saved[gi, ti])} / {pct(res.tau_agreement[gi, ti])} / "
                         f"{pct(res.tau_accuracy[gi, ti])}"))
    for g, gi in ((g, i) for i, g in enumerate(res.groups) if g != "all"):
        rows.append((f"median stable onset, final top-1 in {g} (N={res.n[gi]:,})", _fmt(res.onset_median[gi])))
    return rows


def guess_then_refine_spec() -> StudySpec:
    """The guess-then-refine stage."""
    return StudySpec(
        "guess_refine", "Guess-then-refine", _run_gtr, GuessRefineResult.load,
        lambda r: {"": r.to_dataframe()}, _gtr_figs, _gtr_head, needs_frequency=True, key_rows=(0, 1, 2),
        description="Every position of held-out Wikipedia paragraphs is a prefix. Bucket = the "
        "frequency bucket of a layer's top-1 token (ranks in the Wikipedia sample under the model's "
        "tokenizer); flip = the layer's top-1 differs from the final top-1.")


def early_exit_spec() -> StudySpec:
    """The early-exit stage (from the guess-then-refine read-out)."""
    return StudySpec(
        "early_exit", "Early exit", each_stage(_run_exit), EarlyExitResult.load,
        lambda r: {"": r.to_dataframe("policies"), "_onsets": r.to_dataframe("onsets")},
        _exit_figs, _exit_head, needs_frequency=True, key_rows=(2, 4),
        description="Computed from the guess-then-refine read-out (no extra forward pass). A token "
        "settles at the first layer from which the lens top-1 equals the final top-1 at every "
        "later layer; compute saved = share of the blocks skipped.")


# ---------------------------------------------------------------- inside a block: attention vs MLP
def _sublayer_lenses(config: Any) -> list[str | None]:
    """The sublayer stage's variants: the logit lens (stage ``sublayers``), and each lens of the run
    with ``resid_mid`` translators (`reads_resid_mid`): the least-squares lens
    (``sublayers_least_squares``, its mid translators fitted with it), a tuned lens folder saved with
    them (``sublayers_tuned``)."""
    return [None] + [name for name in config.lenses if name != "logit" and reads_resid_mid(config, name)]


def _run_sublayers(ctx: StudyContext, stage: Stage) -> Any:
    cfg = ctx.config
    ids = [x[: cfg.gtr_max_tokens] for x in _tokens(ctx, cfg.gtr_texts)]
    lens = LogitLens.from_model(ctx.model) if stage.variant is None else ctx.lens(stage.variant)
    return sublayer_split(
        ctx.model, lens, ids, frequency=ctx.frequency(),
        max_positions=cfg.sublayer_positions, batch_size=cfg.batch_size, progress=ctx.progress,
        source=f"{WIKI_SOURCE}; {cfg.text_split} split, the guess-then-refine texts (first "
        f"{cfg.gtr_max_tokens} tokens of {cfg.gtr_texts} paragraphs), at most {cfg.sublayer_positions} positions")


def _sublayer_head(res: Any) -> list[tuple[str, str]]:
    rows = []
    n = res.n_layers
    for what, blocks in (("early blocks", list(res.early_layers)), ("later blocks", list(range(n // 2, n)))):
        h = res.headline(blocks)
        span = f"{blocks[0]}-{blocks[-1]}" if len(blocks) > 1 else str(blocks[0])
        rows.append((f"{what} {span}: frequent-token guesses overturned by attention / by the MLP / kept "
                     f"(N={h['n_guesses']:,})",
                     f"{pct(h['share_attention'])} / {pct(h['share_mlp'])} / {pct(h['share_kept'])}"))
        rows.append((f"{what} {span}: top-1 changed by attention / by the MLP, every position "
                     f"(N={h['n_positions']:,})",
                     f"{pct(h['all_top1_changed_attention'])} / {pct(h['all_top1_changed_mlp'])}"))
    rows.append(("positions read", f"{res.n_positions:,}"))
    return rows


def sublayer_spec() -> StudySpec:
    """The sublayer split (attention vs MLP) of the early guesses, with the logit lens (and each lens
    of the run with ``resid_mid`` translators)."""
    return StudySpec(
        "sublayers", "Inside a block: attention vs MLP", each_stage(_run_sublayers), SublayerSplit.load,
        lambda r: {"": r.to_dataframe()}, lambda results: {s.name: plot_sublayer_split(res)
                                                           for s, res in results.items()},
        _sublayer_head, per_lens=False, variants=_sublayer_lenses, needs_frequency=True, key_rows=(0, 2),
        description="Each block read at its input, after attention (resid_mid) and at its output, with the logit "
        "lens, and with each lens of the run that has resid_mid translators: the least-squares lens (fitted with "
        "it) or a tuned lens folder saved with them (the shipped KL-trained lenses and the Jacobian lens have "
        "none). A guess = a top-1 in the top frequency bucket that differs from the final top-1; its fate: removed "
        "by attention, by the MLP, restored by the MLP, or kept.")
