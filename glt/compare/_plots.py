"""Plots of a comparison: every series on one normalised depth axis.

`plot_comparison` draws the curves of one study and measure (each series one colour, each
group one line style) with the depth axis running from 0 (embeddings) to 1 (final residual);
legends carry each series' model, lens, layer count and N. `comparison_figures` builds the
report's figures from it. Same rules as `glt.plotting`: a new figure, or the given axes, is
returned and never shown.

Example:
    >>> # fig = plot_comparison(cmp, study="guess_refine", measure="bucket_share", groups=["Top 1-10"])
"""

from collections.abc import Sequence
from typing import Any

import numpy as np

from glt.compare._data import MEASURES, Comparison
from glt.core._check import checked
from glt.core._errors import GltError
from glt.plotting._style import category_colors, glt_style, new_axes, new_figure, safe_text

__all__ = ["DEPTH_LABEL", "comparison_figures", "plot_comparison"]

DEPTH_LABEL = "depth = residual index / n_layers (0 = embeddings, 1 = final residual)"
_STYLES = ("-", "--", ":", "-.")
_MARKERS = ("o", "s", "^", "D", "v", "P")


def _depth_axis(ax: Any, label: str) -> None:
    ax.set_xlim(-0.03, 1.03)
    ax.set_xticks([0, 0.25, 0.5, 0.75, 1.0], ["0 emb", "0.25", "0.5", "0.75", "1 final"])
    ax.set_xlabel(label)


@checked
def plot_comparison(
    comparison: Comparison,
    *,
    study: str,
    measure: str,
    groups: Sequence[str] | None = None,
    min_n: int = 1,
    ax: Any = None,
    legend: bool = True,
    title: str | None = None,
) -> Any:
    """Overlay every series' curves of ``study`` / ``measure`` on the normalised depth axis.

    Args:
        comparison: a `Comparison` (`compare_runs`).
        study, measure: which curves (see `glt.compare.MEASURES` for the measures).
        groups: the groups to draw, in order (default all, first-seen order).
        min_n: points resting on fewer items are not drawn (they stay in the data).
        ax: axes to draw into; default a new figure.
        legend: draw the legend (series label with its N, and the group).
        title: axes title (default the measure's description).

    Returns:
        The figure (new axes) or the given axes. Line ``i`` holds the x / y of the matching
        curves in series order, then group order; points below ``min_n`` are NaN.
    """
    if measure not in MEASURES:
        raise GltError(f"measure must be one of {sorted(MEASURES)}, got {measure!r}")
    curves = comparison.select(study, measure)
    names = list(groups) if groups is not None else list(dict.fromkeys(c.group for c in curves))
    curves = [c for c in curves if c.group in names]
    if not curves:
        have = sorted({(c.study, c.measure) for c in comparison.curves})
        raise GltError(f"no {study}/{measure} curves for groups {names}: the comparison has {have}")
    series = [s.label for s in comparison.series]
    colors = dict(zip(series, category_colors(len(series)), strict=True))
    xlabel, ylabel, yscale, what = MEASURES[measure]
    with glt_style():
        fig, axes = new_axes(ax, figsize=(7.6, 4.4))
        for c in sorted(curves, key=lambda c: (series.index(c.series), names.index(c.group))):
            gi = names.index(c.group)
            y = np.where(np.asarray(c.n) >= min_n, np.asarray(c.y, dtype=float), np.nan)
            label = safe_text(f"{c.series} (N={c.n_total:,})" + (f", {c.group}" if len(names) > 1 else ""))
            axes.plot(c.x, y, color=colors[c.series], ls=_STYLES[gi % 4], marker=_MARKERS[gi % 6],
                      ms=3 if len(c.x) < 40 else 0, label=label)
        axes.set_yscale(yscale)
        axes.set_ylabel(ylabel)
        if xlabel == "compute saved":
            axes.set_xlim(-0.03, 1.03)
            axes.set_xlabel("share of the block compute saved")
        else:
            _depth_axis(axes, f"mean onset {DEPTH_LABEL}" if xlabel == "onset depth" else DEPTH_LABEL)
        if yscale == "linear" and measure != "exit_tradeoff":
            axes.set_ylim(-0.02, 1.02)
        if legend:
            axes.legend(loc="best", fontsize=7.5)
        group_text = f" ({', '.join(names)})" if len(names) == 1 and names[0] != "all" else ""
        axes.set_title(safe_text(title or f"{what}{group_text}"))
    return fig if ax is None else ax


def _panels(cmp: Comparison, study: str, panels: list[tuple[str, list[str] | None, str]], suptitle: str,
            min_n: int = 1) -> Any:
    """One figure, one axes per ``(measure, groups, title)``, the legend on the first."""
    cols = min(len(panels), 2)
    rows = -(-len(panels) // cols)
    with glt_style():
        fig = new_figure((7.2 * cols, 4.4 * rows))
        grid = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
        for i, (measure, groups, title) in enumerate(panels):
            plot_comparison(cmp, study=study, measure=measure, groups=groups, ax=grid[i], legend=True,
                            title=title, min_n=min_n)
        for extra in grid[len(panels):]:
            extra.set_visible(False)
        fig.suptitle(suptitle)
    return fig


def _groups(cmp: Comparison, study: str, measure: str) -> list[str]:
    return list(dict.fromkeys(c.group for c in cmp.select(study, measure)))


def comparison_figures(cmp: Comparison) -> dict[str, Any]:
    """The report's figures, by file name, for every study the comparison has curves of."""
    out: dict[str, Any] = {}
    buckets = _groups(cmp, "guess_refine", "bucket_share")
    if buckets:
        out["guess_refine_bucket_share"] = _panels(
            cmp, "guess_refine", [("bucket_share", [b], f"{b}") for b in buckets],
            "Guess-then-refine: share of the top-1 tokens in each frequency bucket over depth")
        out["guess_refine_flip_rate"] = _panels(
            cmp, "guess_refine", [("flip_rate", [b], f"{b}") for b in buckets],
            "Guess-then-refine: flip rate per bucket over depth (points on fewer than 10 tokens not drawn)",
            min_n=10)
    for study, title in (("pos", "Part of speech: function vs content words"),
                         ("facts", "Fact recall: answer tokens by answer position")):
        if cmp.select(study, "onset_first"):
            out[f"{study}_onsets"] = _panels(
                cmp, study, [("onset_first", None, "first crossing"), ("onset_stable", None, "stable onset")],
                f"{title}: mean onset depth reaching the top-k")
    tasks = _groups(cmp, "mc", "option_mass")
    if tasks:
        out["mc_format_decision"] = _panels(
            cmp, "mc", [(m, [t], f"{t}: {'format' if m == 'option_mass' else 'decision'}")
                        for m in ("option_mass", "decision_agree") for t in tasks],
            "Multiple choice: format (option mass) and decision (agreement with the final choice) over depth")
    if cmp.select("early_exit", "settled_share"):
        out["early_exit"] = _panels(
            cmp, "early_exit", [("settled_share", None, "settled by depth (oracle exit)"),
                                ("exit_tradeoff", None, "confidence exit")],
            "Early exit: when the final top-1 settles, and what a confidence exit saves")
    return out
