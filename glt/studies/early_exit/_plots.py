"""Plots of an early-exit result: the exit layer and saved depth per confidence threshold.

Same rules as `glt.plotting`: ``plot_*(result, *, ax=None, **kwargs)`` returns the new figure or the
given axes (multi-panel figures take ``axes``), never shows it, and puts the N in the legends.

Example:
    >>> # fig = plot_early_exit(glt.early_exit(model, lens, texts))
"""

from collections.abc import Sequence
from typing import Any, Literal

from glt.core._check import checked
from glt.core._errors import GltError
from glt.plotting._curves import register_plot
from glt.plotting._style import (
    OKABE_ITO,
    as_numpy,
    category_colors,
    glt_style,
    new_axes,
    with_n,
)
from glt.studies.early_exit._run import EarlyExitResult

__all__ = ["plot_early_exit"]


@checked
def plot_early_exit(
    result: Any,
    *,
    metric: Literal["agreement", "accuracy"] = "agreement",
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


register_plot(EarlyExitResult, plot_early_exit)
