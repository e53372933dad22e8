"""Plots of a guess-then-refine result: bucket share, flip rate, rank by bucket.

Same rules as `glt.plotting`: ``plot_*(result, *, ax=None, **kwargs)`` returns the new figure or the
given axes (multi-panel figures take ``axes``), never shows it, and puts the N in the legends.

Example:
    >>> # fig = plot_bucket_share(glt.run_guess_then_refine(model, lens, max_positions=500))
"""

from collections.abc import Sequence
from typing import Any

import numpy as np

from glt.core._check import checked
from glt.core._errors import GltError
from glt.plotting._curves import plot_rank_curves, register_plot
from glt.plotting._style import (
    FLIP_COLORS,
    OKABE_ITO,
    as_numpy,
    bucket_colors,
    glt_style,
    new_axes,
    new_figure,
    set_layer_axis,
    with_n,
)
from glt.studies.guess_then_refine._result import GOLD_CLASSES, GuessRefineResult

__all__ = ["plot_bucket_share", "plot_flip_rate", "plot_flip_split", "plot_rank_by_bucket"]




@checked
def plot_bucket_share(result: Any, *, ax: Any = None, title: str | None = None) -> Any:
    """Frequency bucket of each layer's top-1, as 100% stacked bars per layer (the paper's Fig. 2).

    Args:
        result: a `glt.GuessRefineResult`.
        ax: axes to draw into; default a new figure.
        title: axes title.

    Returns:
        The figure or the given axes; bar heights of bucket ``b`` equal
        ``result.bucket_share[:, b]`` (one container per bucket, most frequent first).
    """
    share = as_numpy(result.bucket_share)
    n_layer, n_b = share.shape
    x = np.arange(n_layer)
    with glt_style():
        fig, axes = new_axes(ax, figsize=(7.2, 4.0))
        bottom = np.zeros(n_layer)
        for b, (label, color) in enumerate(zip(result.bucket_labels, bucket_colors(n_b), strict=True)):
            axes.bar(x, share[:, b], bottom=bottom, color=color, width=0.82, label=label,
                     edgecolor="white", linewidth=0.4)
            bottom += share[:, b]
        axes.set_ylim(0, 1)
        axes.set_ylabel(f"share of top-1 tokens (N={result.n_positions:,} positions)")
        set_layer_axis(axes, n_layer - 1)
        axes.grid(axis="x", visible=False)
        axes.legend(title="frequency bucket", loc="upper left", bbox_to_anchor=(1.0, 1.0))
        axes.set_title(title or f"Frequency bucket of the top-1 per layer ({result.lens} lens)")
    return fig if ax is None else ax


@checked
def plot_flip_rate(result: Any, *, ax: Any = None, min_n: int = 10, title: str | None = None) -> Any:
    """Flip rate per bucket and layer: grouped bars, share of top-1s that differ from the final.

    Args:
        result: a `glt.GuessRefineResult`.
        ax: axes to draw into; default a new figure.
        min_n: omit bars resting on fewer top-1 tokens than this (stated on the figure).
        title: axes title.

    Returns:
        The figure or the given axes; bar heights of bucket ``b`` equal
        ``result.flip_rate[:, b]`` where ``result.bucket_counts[:, b] >= min_n`` (else 0 height,
        no bar drawn).
    """
    rate = as_numpy(result.flip_rate)
    counts = as_numpy(result.bucket_counts)
    n_layer, n_b = rate.shape
    width = 0.84 / n_b
    with glt_style():
        fig, axes = new_axes(ax, figsize=(10.0, 4.0))
        for b, (label, color) in enumerate(zip(result.bucket_labels, bucket_colors(n_b), strict=True)):
            ok = counts[:, b] >= min_n
            h = np.where(ok, np.nan_to_num(rate[:, b]), 0.0)
            x = np.arange(n_layer) - 0.42 + width * (b + 0.5)
            axes.bar(x, h, width=width, color=color, label=with_n(label, int(counts[:, b].sum())))
        axes.set_ylim(0, 1.02)
        axes.set_ylabel("flip rate (top-1 differs from the final top-1)")
        set_layer_axis(axes, n_layer - 1)
        axes.grid(axis="x", visible=False)
        axes.legend(title="bucket of the layer's top-1\n(N = top-1s over all layers)", fontsize=8,
                    title_fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        axes.text(1.0, 1.0, f"bars on < {min_n} tokens omitted", transform=axes.transAxes,
                  ha="right", va="bottom", fontsize=7.5, color=OKABE_ITO["grey"])
        axes.set_title(title or f"Flip rate per bucket ({result.lens} lens)", loc="left")
    return fig if ax is None else ax


@checked
def plot_flip_split(result: Any, *, axes: Sequence[Any] | None = None, min_n: int = 10) -> Any:
    """Gold-aware split per bucket: one panel per bucket, x = layer, stacked shares of the four
    classes ``right->right``, ``wrong->right``, ``right->wrong``, ``wrong->wrong`` (the layer's
    top-1 vs the gold next token, then the final top-1 vs gold), over positions with a gold token.

    Args:
        result: a `glt.GuessRefineResult`.
        axes: one axes per bucket to draw into; default a new figure.
        min_n: layers where the bucket holds fewer gold positions than this are left empty.

    Returns:
        The figure (new) or the given axes; in each panel the container of class ``c`` has heights
        ``gold_split[:, b, c] / gold_split[:, b].sum(-1)``.
    """

    split = as_numpy(result.gold_split).astype(float)  # [layer, bucket, cls]
    n_layer, n_b, _ = split.shape
    order = ("right->right", "wrong->right", "right->wrong", "wrong->wrong")
    with glt_style():
        if axes is None:
            fig = new_figure((3.1 * n_b + 1.5, 3.6))
            axes = fig.subplots(1, n_b, sharey=True)
            axes = np.atleast_1d(axes)
        else:
            fig = None
            if len(axes) != n_b:
                raise GltError(f"axes must hold one axes per bucket ({n_b}), got {len(axes)}")
        for b, a in enumerate(axes):
            tot = split[:, b].sum(-1)
            ok = tot >= min_n
            bottom = np.zeros(n_layer)
            for c in order:
                k = GOLD_CLASSES.index(c)
                h = np.where(ok, split[:, b, k] / np.maximum(tot, 1), 0.0)
                a.bar(np.arange(n_layer), h, bottom=bottom, width=0.85, color=FLIP_COLORS[c],
                      label=c if b == 0 else None, edgecolor="white", linewidth=0.3)
                bottom += h
            a.set_ylim(0, 1)
            set_layer_axis(a, n_layer - 1, label=False)
            a.grid(axis="x", visible=False)
            a.set_title(with_n(result.bucket_labels[b], int(tot.sum())), fontsize=9.5)
            a.set_xlabel("layer")
        axes[0].set_ylabel("share of the bucket's top-1s with a gold token")
        if fig is None:
            axes[0].legend(fontsize=7)
        else:
            fig.legend(*axes[0].get_legend_handles_labels(), loc="outside right center",
                       title="layer -> final vs gold")
            fig.suptitle(f"Refinement against the gold token, per bucket of the layer's top-1 "
                         f"({result.lens} lens; N = top-1s with a gold token over all layers; "
                         f"layers with < {min_n} left empty)", fontsize=10)
    return fig if fig is not None else axes


@checked
def plot_rank_by_bucket(result: Any, *, ax: Any = None, title: str | None = None) -> Any:
    """Rank of the final top-1 over depth, grouped by the final top-1's frequency bucket."""
    ranks = as_numpy(result.rank_final)
    final_b = as_numpy(result.bucket)[-1]
    present = [b for b in range(len(result.bucket_labels)) if (final_b == b).any()]
    groups = {result.bucket_labels[b]: ranks[:, final_b == b] for b in present}
    palette = bucket_colors(len(result.bucket_labels))
    return plot_rank_curves(groups, ax=ax, lens=result.lens, ylabel="rank of the final top-1",
                            colors=[palette[b] for b in present],
                            title=title or f"Rank of the final top-1 by its frequency bucket ({result.lens} lens)")


register_plot(GuessRefineResult, plot_bucket_share)
