"""Plots of the study results: multiple choice, early exit, patching (and, in `glt._plots_gtr`,
guess-then-refine).

Same rules as `glt._plots`: ``plot_*(result, *, ax=None, **kwargs)`` returns the new figure or the
given axes, never shows it, uses glt's style and puts the N behind every curve in its legend.

Example:
    >>> # fig = plot_mc_format(glt.run_multiple_choice(model, lens, n_items=40))
"""

from collections.abc import Sequence
from typing import Any

import numpy as np

from glt._errors import GltError
from glt._plots import register_plot
from glt._style import (
    OKABE_ITO,
    as_numpy,
    category_colors,
    glt_style,
    new_axes,
    new_figure,
    set_layer_axis,
    with_n,
)

__all__ = [
    "plot_early_exit",
    "plot_mc_decision",
    "plot_mc_format",
    "plot_multiple_choice",
    "plot_patching",
]

_MC_MEASURES = {
    "option_mass": ("probability mass on the option tokens", "median"),
    "format_inside": ("share of items with every option in the top-k", "mean"),
    "format_rank": ("worst option rank (1 = top; median)", "median"),
    "decision_agree": ("share of items whose choice = final choice", "mean"),
    "decision_rank": ("rank of the final choice among the options", "mean"),
    "choice_prob": ("probability of the final choice (median)", "median"),
    "gold_prob": ("probability of the gold option (median)", "median"),
}


def _mc_lines(result: Any, measure: str, groups: Sequence[str], control: bool, ax: Any,
              title: str) -> Any:
    if measure not in _MC_MEASURES:
        raise GltError(f"measure must be one of {sorted(_MC_MEASURES)}, got {measure!r}")
    label, stat = _MC_MEASURES[measure]
    df = result.curves()
    df = df[df["measure"] == measure]
    runs = ["main"] + (["control"] if control and result.control is not None else [])
    with glt_style():
        fig, axes = new_axes(ax)
        colors = dict(zip(groups, category_colors(len(groups)), strict=True))
        n_layers = len(result.layer_labels) - 1
        for run in runs:
            for g in groups if run == "main" else [g for g in groups if g == "all"] or groups[:1]:
                d = df[(df["run"] == run) & (df["group"] == g)].sort_values("layer")
                if d.empty or int(d["n"].iloc[0]) == 0:
                    continue
                y = d[stat].to_numpy(float)
                if measure == "format_rank":
                    y = y + 1.0
                name = g if run == "main" else f"{g}, control ({d['symbols_mode'].iloc[0]})"
                axes.plot(d["layer"].to_numpy(), y, color=colors[g], ls="-" if run == "main" else ":",
                          marker="o" if run == "main" else None, ms=3,
                          label=with_n(name, int(d["n"].iloc[0])))
                if stat == "median" and run == "main":
                    q25, q75 = d["q25"].to_numpy(float), d["q75"].to_numpy(float)
                    if measure == "format_rank":
                        q25, q75 = q25 + 1.0, q75 + 1.0
                    axes.fill_between(d["layer"].to_numpy(), q25, q75, color=colors[g], alpha=0.13, lw=0)
        if measure == "decision_agree":
            n_opt = result.option_ranks.shape[-1]
            axes.axhline(1.0 / n_opt, color=OKABE_ITO["grey"], lw=1, ls="--",
                         label=f"chance (1/{n_opt})")
        if measure == "format_rank":
            axes.set_yscale("log")
        elif measure != "decision_rank":
            axes.set_ylim(-0.02, 1.02)
        set_layer_axis(axes, n_layers)
        axes.set_ylabel(label if measure != "format_inside" else label.replace("top-k", f"top-{result.top_k_format}"))
        axes.legend(fontsize=7.5, loc="best")
        axes.set_title(title)
    return fig if ax is None else ax


def plot_mc_format(
    result: Any,
    *,
    measure: str = "option_mass",
    groups: Sequence[str] = ("all",),
    control: bool = True,
    ax: Any = None,
    title: str | None = None,
) -> Any:
    """Multiple choice, the response format over depth: do the option tokens lead?

    Args:
        result: a `glt.MultipleChoiceResult`.
        measure: ``"option_mass"`` (median probability on the option set, IQR band),
            ``"format_inside"`` (share of items with every option in the top-k) or
            ``"format_rank"`` (median worst option rank, 1-based, log axis).
        groups: any of ``"all"``, ``"correct"``, ``"incorrect"``.
        control: also draw the permutation control (dotted; group ``all`` only, or the first
            group) when the result holds one.
        ax: axes to draw into; default a new figure.
        title: axes title.

    Returns:
        The figure or the given axes; line y-data equal ``result.curves()`` (median or mean).
    """
    return _mc_lines(result, measure, groups, control, ax,
                     title or f"Answer format: {result.task}, {result.lens} lens")


def plot_mc_decision(
    result: Any,
    *,
    measure: str = "decision_agree",
    groups: Sequence[str] = ("all", "correct", "incorrect"),
    control: bool = True,
    ax: Any = None,
    title: str | None = None,
) -> Any:
    """Multiple choice, the decision over depth: does the layer already pick the final option?

    Args:
        result: a `glt.MultipleChoiceResult`.
        measure: ``"decision_agree"`` (share of items whose layer choice among the options is the
            final one; chance level drawn), ``"decision_rank"`` (mean rank of the final choice
            among the options), ``"choice_prob"`` or ``"gold_prob"`` (median probability).
        groups, control, ax, title: as in `plot_mc_format`.

    Returns:
        The figure or the given axes; line y-data equal ``result.curves()``.
    """
    return _mc_lines(result, measure, groups, control, ax,
                     title or f"Decision: {result.task}, {result.lens} lens")


def plot_multiple_choice(result: Any, *, figsize: tuple[float, float] = (11.5, 4.0)) -> Any:
    """Format (left) and decision (right) curves of one multiple-choice result in one figure."""
    with glt_style():
        fig = new_figure(figsize)
        a, b = fig.subplots(1, 2)
        plot_mc_format(result, ax=a)
        plot_mc_decision(result, ax=b)
    return fig


def plot_early_exit(
    result: Any,
    *,
    metric: str = "agreement",
    groups: Sequence[str] | None = None,
    fixed: bool = True,
    ax: Any = None,
    title: str | None = None,
) -> Any:
    """Early exit trade-off: compute saved (x) against agreement with the final top-1 (y).

    Each group's confidence policies (exit at the first layer whose lens top-1 probability
    reaches tau) form one line, tau increasing from right to left; exiting every token at one
    fixed layer is the dashed grey line (the ``all`` group); the oracle (exit at each token's
    stable onset, agreement 1) is a star per group.

    Args:
        result: a `glt.EarlyExitResult`.
        metric: ``"agreement"`` (top-1 equals the final top-1) or ``"accuracy"`` (top-1 equals
            the gold next token; the full model's accuracy is drawn as a dotted line).
        groups: which groups to draw (default all, ``"all"`` last).
        fixed: draw the fixed-exit-layer baseline.
        ax, title: axes to draw into (default a new figure) and its title.

    Returns:
        The figure or the given axes; line x-data are ``result.tau_saved[g]`` and y-data
        ``result.tau_agreement[g]`` (or ``tau_accuracy``).
    """
    if metric not in ("agreement", "accuracy"):
        raise GltError(f"metric must be 'agreement' or 'accuracy', got {metric!r}")
    names = list(groups) if groups is not None else list(result.groups)
    unknown = set(names) - set(result.groups)
    if unknown:
        raise GltError(f"groups {sorted(unknown)} are not in the result: choose from {list(result.groups)}")
    ys = as_numpy(getattr(result, f"tau_{metric}"))
    xs = as_numpy(result.tau_saved)
    with glt_style():
        fig, axes = new_axes(ax, figsize=(8.2, 4.2))
        cats = [g for g in names if g != "all"]
        colors = dict(zip(cats, category_colors(len(cats)), strict=True))
        colors["all"] = OKABE_ITO["black"]
        for g in names:
            gi, color = result.groups.index(g), colors[g]
            n = result.n_gold[gi] if metric == "accuracy" else result.n[gi]
            axes.plot(xs[gi], ys[gi], color=color, marker="o", ms=3.5, label=with_n(g, n),
                      lw=2.6 if g == "all" else 1.6, zorder=3 if g == "all" else 2)
            if metric == "agreement":
                axes.plot([float(result.onset_saved[gi])], [1.0], marker="*", ms=11, color=color,
                          ls="none", mec="white", mew=0.6)
            else:
                axes.axhline(float(result.final_accuracy[gi]), color=color, lw=0.9, ls=":",
                             label=f"full model, {g}")
        if fixed and "all" in result.groups:
            gi = result.groups.index("all")
            saved = [(result.n_layers - layer) / result.n_layers for layer in result.exit_layers]
            vals = as_numpy(getattr(result, f"fixed_{metric}"))[gi]
            axes.plot(saved, vals, color=OKABE_ITO["grey"], ls="--", lw=1.3, marker=".",
                      label="fixed exit layer (all)")
        if metric == "agreement":
            axes.plot([], [], marker="*", ms=9, color="k", ls="none", label="oracle: exit at stable onset")
        axes.set_xlim(-0.02, 1.02)
        axes.set_ylim(-0.02, 1.05)
        axes.set_xlabel("share of block compute saved")
        axes.set_ylabel("top-1 agreement with the final output" if metric == "agreement"
                        else "next-token accuracy (top-1 = gold next token)")
        axes.legend(fontsize=7.5, loc="upper left", bbox_to_anchor=(1.0, 1.0),
                    title="exit when the top-1 prob. >= tau\n(tau rising right to left)", title_fontsize=7.5)
        axes.set_title(title or f"Early exit by confidence ({result.lens} lens)")
    return fig if ax is None else ax


def plot_patching(result: Any, *, ax: Any = None, valid_only: bool = False, title: str | None = None) -> Any:
    """Patching transition: share of pairs whose output lands on the source's options, per layer.

    Also draws the mean probability mass on each option set, and vertical lines at the median
    patching transition (stable) and the median lens-derived layer (the lens reading the
    unpatched source settles on the source options), so a disagreement shows at a glance.

    Args:
        result: a `glt.PatchingResult`.
        ax: axes to draw into; default a new figure.
        valid_only: use only pairs whose unpatched prompts land on their own options.
        title: axes title.

    Returns:
        The figure or the given axes; the first line's y-data are the share landing on the source.
    """
    sel = as_numpy(result.valid) if valid_only else np.ones(result.n_pairs, dtype=bool)
    if not sel.any():
        raise GltError("no pairs to plot: every pair is invalid; pass valid_only=False")
    layers = np.asarray(result.layers)
    lands = as_numpy(result.lands_on_source)[sel].astype(float).mean(0)
    pt = as_numpy(result.p_target)[sel].mean(0)
    ps = as_numpy(result.p_source)[sel].mean(0)
    n = int(sel.sum())
    with glt_style():
        fig, axes = new_axes(ax)
        src = ", ".join(s.strip() for s in result.source_option_labels)
        tgt = ", ".join(s.strip() for s in result.target_option_labels)
        axes.plot(layers, lands, color=OKABE_ITO["blue"], marker="o", ms=4,
                  label=with_n("share of pairs landing on source options", n))
        axes.plot(layers, ps, color=OKABE_ITO["vermillion"], ls="--", label=f"mean mass on source options ({src})")
        axes.plot(layers, pt, color=OKABE_ITO["bluish_green"], ls="--", label=f"mean mass on target options ({tgt})")
        for vals, name, color, ls in (
            (as_numpy(result.transition_stable)[sel], "patching transition", OKABE_ITO["blue"], "-"),
            (as_numpy(result.lens_options_stable)[sel], f"{result.lens} lens settles", OKABE_ITO["reddish_purple"], ":"),
        ):
            ok = vals[vals >= 0]
            if ok.size:
                axes.axvline(float(np.median(ok)), color=color, ls=ls, lw=1.2,
                             label=f"median {name} (N={ok.size})")
        axes.set_ylim(-0.02, 1.02)
        set_layer_axis(axes, result.n_layers)
        axes.set_xlabel("patched layer (residual index; emb = embeddings)")
        axes.set_ylabel("share / probability mass")
        axes.legend(fontsize=7.5, loc="center left")
        axes.set_title(title or "Patching the source's last residual into the target")
    return fig if ax is None else ax


register_plot("MultipleChoiceResult", plot_mc_decision)
register_plot("EarlyExitResult", plot_early_exit)
register_plot("PatchingResult", plot_patching)
