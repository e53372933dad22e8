"""Plots of a multiple-choice result: format and decision curves over depth.

Same rules as `glt.plotting`: ``plot_*(result, *, ax=None, **kwargs)`` returns the new figure or the
given axes (multi-panel figures take ``axes``), never shows it, and puts the N in the legends.

Example:
    >>> # fig = plot_mc_format(glt.run_multiple_choice(model, lens, n_items=40))
"""

from collections.abc import Sequence
from typing import Any, Literal

from glt.core._check import checked
from glt.core._errors import GltError
from glt.plotting._curves import register_plot
from glt.plotting._style import (
    OKABE_ITO,
    category_colors,
    glt_style,
    new_axes,
    new_figure,
    set_layer_axis,
    with_n,
)
from glt.studies.multiple_choice._result import MultipleChoiceResult

__all__ = ["plot_mc_decision", "plot_mc_format", "plot_multiple_choice"]


_MC_MEASURES = {
    "option_mass": ("probability mass on the option tokens", "median"),
    "format_inside": ("share of items with every option in the top-k", "mean"),
    "format_rank": ("worst option rank (1 = top; median)", "median"),
    "decision_agree": ("share of items whose choice = final choice", "mean"),
    "decision_rank": ("rank of the final choice among the options", "mean"),
    "choice_prob": ("probability of the final choice (median)", "median"),
    "gold_prob": ("probability of the gold option (median)", "median"),
}
FormatMeasure = Literal["option_mass", "format_inside", "format_rank"]
DecisionMeasure = Literal["decision_agree", "decision_rank", "choice_prob", "gold_prob"]


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


@checked
def plot_mc_format(
    result: Any,
    *,
    measure: FormatMeasure = "option_mass",
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


@checked
def plot_mc_decision(
    result: Any,
    *,
    measure: DecisionMeasure = "decision_agree",
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


@checked
def plot_multiple_choice(result: Any, *, figsize: tuple[float, float] = (11.5, 4.0)) -> Any:
    """Format (left) and decision (right) curves of one multiple-choice result in one figure."""
    with glt_style():
        fig = new_figure(figsize)
        a, b = fig.subplots(1, 2)
        plot_mc_format(result, ax=a)
        plot_mc_decision(result, ax=b)
    return fig


register_plot(MultipleChoiceResult, plot_mc_decision)
