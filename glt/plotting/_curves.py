"""Plots from read-outs and onset curves: rank over depth, onset vs k, token heatmap, side by side.

Every ``plot_*`` function draws into ``ax`` when given (and returns it), otherwise into a new
figure that it returns; none calls ``plt.show()``. Layers are glt's residual indices (0 =
embeddings, ``n_layers`` = final residual). Ranks are drawn 1-based (``rank + 1``, so 1 = top-1) on
a log axis, since glt's 0-based ranks include 0. Aggregates are medians with interquartile bands
(linear interpolation, as `glt.decoding._onsets` uses), and every legend entry carries its N.

Example:
    >>> import torch
    >>> fig = plot_rank_curves({"DET": torch.tensor([[40, 9], [3, 0], [0, 0]])})
    >>> fig.axes[0].lines[0].get_ydata().tolist()
    [25.5, 2.5, 1.0]
"""

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import numpy as np

from glt.core._check import checked
from glt.core._errors import GltError
from glt.decoding._readout import Readout
from glt.plotting._style import (
    as_numpy,
    category_colors,
    glt_style,
    new_axes,
    new_figure,
    safe_text,
    set_layer_axis,
    with_n,
)

__all__ = [
    "plot_onset_curves",
    "plot_rank_curves",
    "plot_side_by_side",
    "plot_token_heatmap",
    "default_plot",
    "rank_quantiles",
    "register_plot",
]

_DEFAULT_PLOTS: dict[type, Callable[..., Any]] = {}


def register_plot(result_type: type, fn: Callable[..., Any]) -> None:
    """Make ``fn`` the default plot (in `plot_side_by_side`) of results of class ``result_type``.

    Each study's plotting module registers its result class when the study's package is imported,
    which happens before any of its results exist.
    """
    if not isinstance(result_type, type) or not callable(fn):
        raise GltError(f"register_plot takes a class and a plot function, got {result_type!r} and {fn!r}")
    _DEFAULT_PLOTS[result_type] = fn


def default_plot(result: Any) -> Callable[..., Any] | None:
    """The plot registered for ``result``'s class (or a base class); onset-curve lists get
    `plot_onset_curves`; None when nothing is registered."""
    if isinstance(result, (list, tuple)) and result and hasattr(result[0], "ks"):
        return plot_onset_curves
    return next((_DEFAULT_PLOTS[c] for c in type(result).__mro__ if c in _DEFAULT_PLOTS), None)


def rank_quantiles(ranks: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Median, 25th and 75th percentile of 1-based ranks per layer, from ``ranks [layer, n]``.

    Example:
        >>> med, q25, q75 = rank_quantiles(np.array([[0, 10], [0, 0]]))
        >>> med.tolist(), q25.tolist(), q75.tolist()
        ([6.0, 1.0], [3.5, 1.0], [8.5, 1.0])
    """
    r = as_numpy(ranks).astype(np.float64)
    if r.ndim != 2 or r.shape[1] == 0:
        raise GltError(f"ranks must be [layer, n] with n >= 1 items, got shape {r.shape}")
    q = np.quantile(r + 1.0, [0.5, 0.25, 0.75], axis=1, method="linear")
    return q[0], q[1], q[2]


def _rank_groups(data: Any, labels: Sequence[str] | None, target: int) -> tuple[dict[str, np.ndarray], str | None]:
    """``{category: ranks [layer, n]}`` from a Readout plus labels, a mapping, or an array."""
    if hasattr(data, "ranks") and hasattr(data, "layer_labels"):  # a Readout
        ranks = as_numpy(data.ranks)[:, :, target]
        lens = getattr(data, "lens", None)
        if labels is None:
            return {"all": ranks}, lens
        if len(labels) != ranks.shape[1]:
            raise GltError(
                f"labels must name each of the readout's {ranks.shape[1]} rows, got {len(labels)}: "
                "pass one category label per read position"
            )
        lab = np.asarray([str(x) for x in labels])
        return {g: ranks[:, lab == g] for g in dict.fromkeys(lab.tolist())}, lens
    if isinstance(data, Mapping):
        return {str(k): as_numpy(v) for k, v in data.items()}, None
    arr = as_numpy(data)
    if arr.ndim == 2:
        return {"all": arr}, None
    raise GltError(
        "data must be a glt.Readout (with labels), a mapping {category: ranks [layer, n]} or a "
        f"ranks array [layer, n], got {type(data).__name__}"
    )


@checked
def plot_rank_curves(
    data: Any,
    labels: Sequence[str] | None = None,
    *,
    target: int = 0,
    ax: Any = None,
    band: bool = True,
    lens: str | None = None,
    title: str | None = None,
    ylabel: str = "rank of the tracked token",
    colors: Sequence[str] | None = None,
) -> Any:
    """Rank of the tracked token over depth per category: median line, interquartile band.

    Args:
        data: a `glt.Readout` (with ``labels``, one category per row), a mapping
            ``{category: ranks [layer, n]}`` of 0-based ranks, or one ranks array ``[layer, n]``.
        labels: category of each read-out row (Readout input only).
        target: which target slot of the read-out to plot.
        ax: axes to draw into; default a new figure.
        band: draw the 25-75% band.
        lens: lens name, shown as the legend title (default: the read-out's lens).
        title: axes title.
        ylabel: what the tracked token is (the axis adds the rank convention).
        colors: one colour per category (default: the Okabe-Ito cycle).

    Returns:
        The figure (new axes) or the given axes. Line y-data are the medians of ``rank + 1``.
    """
    groups, rlens = _rank_groups(data, labels, target)
    lens = lens or rlens
    with glt_style():
        fig, axes = new_axes(ax)
        colors = list(colors) if colors is not None else category_colors(len(groups))
        if len(colors) < len(groups):
            raise GltError(f"colors must give one colour per category ({len(groups)}), got {len(colors)}")
        n_layers = None
        for color, (name, r) in zip(colors[: len(groups)], groups.items(), strict=True):
            if r.ndim != 2 or r.shape[1] == 0:
                continue
            med, q25, q75 = rank_quantiles(r)
            x = np.arange(r.shape[0])
            n_layers = r.shape[0] - 1
            axes.plot(x, med, color=color, marker="o", ms=3, label=with_n(name, r.shape[1]))
            if band:
                axes.fill_between(x, q25, q75, color=color, alpha=0.15, lw=0)
        if n_layers is None:
            raise GltError("data holds no items: pass at least one category with ranks")
        axes.set_yscale("log")
        axes.set_ylabel(f"{ylabel}\n(1 = top-1; median, 25-75% band)")
        set_layer_axis(axes, n_layers, layer_labels=getattr(data, "layer_labels", None))
        axes.legend(title=f"{lens} lens" if lens else None)
        axes.set_title(title or "Rank over depth")
    return fig if ax is None else ax


def _curves_of(result: Any) -> list[Any]:
    for name in ("onset_curves", "curves", "onsets"):
        val = getattr(result, name, None)
        if isinstance(val, (list, tuple)) and (not val or hasattr(val[0], "ks")):
            return list(val)
    if isinstance(result, (list, tuple)):
        return list(result)
    raise GltError(
        f"result must be a list of glt OnsetCurve or hold one in .onset_curves, got "
        f"{type(result).__name__}"
    )


@checked
def plot_onset_curves(
    result: Any,
    *,
    kind: Literal["first", "stable", "both"] = "both",
    stat: Literal["mean", "median"] = "mean",
    groups: Sequence[str] | None = None,
    n_layers: int | None = None,
    ax: Any = None,
    band: bool = False,
    title: str | None = None,
) -> Any:
    """Earliest layer at which the tracked token enters the top-k, against k (log), per category.

    As in the paper: x = the onset layer (``stat`` over the items that reach the top-k), y = k
    on a log axis. First crossings are solid lines, stable onsets dashed.

    Args:
        result: a list of `glt.decoding._onsets.OnsetCurve` or a study result holding one
            (``.onset_curves``).
        kind: ``"first"``, ``"stable"`` or ``"both"``.
        stat: ``"mean"`` (the paper's) or ``"median"``.
        groups: which groups to draw, in order (default all, in the curves' order).
        n_layers: the model's block count, for the layer ticks (default: the result's
            ``n_layers`` or the largest onset).
        ax: axes to draw into; default a new figure.
        band: shade the interquartile range of the onsets.
        title: axes title.

    Returns:
        The figure (new axes) or the given axes. Line x-data are the curves' ``stat`` values and
        y-data their ``ks``.

    Example:
        >>> import torch
        >>> from glt.decoding._onsets import aggregate_onsets, compute_onsets
        >>> ranks = torch.tensor([[9, 0], [0, 0]])  # [layer, item]
        >>> curves = aggregate_onsets(compute_onsets(ranks, ks=(1, 10)), ["DET", "DET"])
        >>> line = plot_onset_curves(curves, kind="first").axes[0].lines[0]
        >>> line.get_xdata().tolist(), line.get_ydata().tolist(), line.get_label()
        ([0.5, 0.0], [1.0, 10.0], 'DET (N=2)')
    """
    curves = _curves_of(result)
    kinds = ("first", "stable") if kind == "both" else (kind,)
    names = list(groups) if groups is not None else list(dict.fromkeys(c.group for c in curves))
    unknown = set(names) - {c.group for c in curves}
    if unknown:
        raise GltError(
            f"groups {sorted(unknown)} are not in the result: choose from {sorted({c.group for c in curves})}"
        )
    n_layers = n_layers or getattr(result, "n_layers", None)
    with glt_style():
        fig, axes = new_axes(ax)
        colors = dict(zip(names, category_colors(len(names)), strict=True))
        top = 0.0
        for c in curves:
            if c.group not in colors or c.kind not in kinds:
                continue
            x = np.asarray(getattr(c, stat), dtype=float)
            y = np.asarray(c.ks, dtype=float)
            top = max(top, np.nanmax(np.append(x, 0)), np.nanmax(np.append(np.asarray(c.q75, float), 0)))
            label = with_n(c.group, c.n) if c.kind == kinds[0] else None
            axes.plot(x, y, color=colors[c.group], ls="-" if c.kind == "first" else "--",
                      marker="o" if c.kind == "first" else "s", ms=3, label=label)
            if band:
                axes.fill_betweenx(y, c.q25, c.q75, color=colors[c.group], alpha=0.12, lw=0)
        axes.set_yscale("log")
        axes.set_ylabel("k (tracked token inside the top-k)")
        set_layer_axis(axes, int(n_layers or np.ceil(top) or 1))
        axes.set_xlabel(f"{stat} onset layer (over items that reach the top-k)")
        leg = axes.legend(loc="upper right")
        if kind == "both":
            from matplotlib.lines import Line2D

            extra = [Line2D([], [], color="k", ls="-", marker="o", ms=3, label="first crossing"),
                     Line2D([], [], color="k", ls="--", marker="s", ms=3, label="stable onset")]
            axes.add_artist(leg)
            axes.legend(handles=extra, loc="lower left")
        axes.set_title(title or "Earliest layer reaching the top-k")
    return fig if ax is None else ax


def _decoder(tokenizer: Any) -> Callable[[int], str]:
    if tokenizer is None:
        return lambda i: str(int(i))
    if callable(getattr(tokenizer, "decode", None)):
        return lambda i: tokenizer.decode([int(i)])
    if callable(tokenizer):
        return lambda i: str(tokenizer(int(i)))
    raise GltError(f"tokenizer must have .decode or be callable id -> str, got {type(tokenizer).__name__}")


def _cell_text(s: str, max_chars: int) -> str:
    s = safe_text(s)
    s = s.replace(" ", "\u2423") if s.strip() == "" else s.replace(" ", "_", 1) if s.startswith(" ") else s
    return s if len(s) <= max_chars else s[: max_chars - 1] + "\u2026"


@checked
def plot_token_heatmap(
    readout: Any,
    *,
    tokenizer: Any = None,
    color: Literal["prob", "rank"] = "prob",
    batch: int = 0,
    ax: Any = None,
    max_chars: int = 7,
    title: str | None = None,
) -> Any:
    """Layer x position grid of one text with the top-1 token written in each cell.

    Args:
        readout: a `glt.Readout` read at every position (``positions=None``).
        tokenizer: decodes token ids (the model's ``tokenizer``, or a callable id -> str);
            without one the cells show ids.
        color: ``"prob"`` (top-1 probability, 0..1) or ``"rank"`` (1-based rank of the final
            top-1, log scale).
        batch: which text of the read-out to draw.
        ax: axes to draw into; default a new figure sized to the text.
        max_chars: longer token strings are cut with an ellipsis. A leading space shows as ``_``.
        title: axes title.

    Returns:
        The figure (new axes) or the given axes. The image array is ``[layer, position]``.

    Example:
        >>> # r = glt.readout(glt.capture_residuals(model, ["The capital of France is"]), lens)
        >>> # fig = plot_token_heatmap(r, tokenizer=model.tokenizer)
        >>> # fig.savefig("heatmap.png")
    """
    b = as_numpy(readout.batch_index)
    rows = np.nonzero(b == batch)[0]
    if rows.size == 0:
        raise GltError(f"batch {batch} is not in the read-out (batches {sorted(set(b.tolist()))})")
    pos = as_numpy(readout.pos_index)[rows]
    order = rows[np.argsort(pos, kind="stable")]
    top1 = as_numpy(readout.top1)[:, order]
    if color == "prob":
        vals = as_numpy(readout.max_prob)[:, order]
    else:
        vals = as_numpy(readout.ranks)[:, order, 0].astype(float) + 1.0
    decode = _decoder(tokenizer)
    n_layer, n_pos = top1.shape
    from matplotlib.colors import LogNorm, Normalize

    with glt_style():
        fig, axes = new_axes(ax, figsize=(max(4.0, 0.75 * n_pos + 1.8), max(3.0, 0.3 * n_layer + 1.2)))
        if color == "prob":
            norm, cmap, clabel = Normalize(0.0, 1.0), "cividis", "top-1 probability"
        else:
            norm, cmap = LogNorm(1.0, max(10.0, float(vals.max()))), "cividis_r"
            clabel = "rank of the final top-1 (1 = top)"
        im = axes.imshow(vals, origin="lower", aspect="auto", cmap=cmap, norm=norm,
                         interpolation="nearest")
        rgba = im.cmap(norm(vals))
        for li in range(n_layer):
            for pi in range(n_pos):
                lum = 0.299 * rgba[li, pi, 0] + 0.587 * rgba[li, pi, 1] + 0.114 * rgba[li, pi, 2]
                axes.text(pi, li, _cell_text(decode(top1[li, pi]), max_chars), ha="center",
                          va="center", fontsize=7, color="black" if lum > 0.5 else "white")
        ids = as_numpy(readout.input_ids)[order]
        axes.set_xticks(range(n_pos), [_cell_text(decode(t), max_chars + 3) for t in ids],
                        rotation=45, ha="right", fontsize=8)
        set_layer_axis(axes, n_layer - 1, axis="y", layer_labels=getattr(readout, "layer_labels", None))
        axes.set_xlabel("input token (prediction of the next token shown in the cells)")
        axes.grid(False)
        fig.colorbar(im, ax=axes, label=clabel, fraction=0.04, pad=0.02)
        axes.set_title(title or f"Top-1 token per layer ({getattr(readout, 'lens', '?')} lens)")
    return fig if ax is None else ax


@checked
def plot_side_by_side(
    left: Any,
    right: Any,
    *more: Any,
    plot: Callable[..., Any] | None = None,
    titles: Sequence[str] | None = None,
    sharey: bool = True,
    figsize: tuple[float, float] | None = None,
    **kwargs: Any,
) -> Any:
    """Two results of the same kind (say logit vs tuned lens) in two panels of one figure, or more
    (one panel each, left to right).

    Args:
        left, right: results of the same type (or read-outs, or lists of onset curves).
        *more: further results of that type (say the Jacobian lens's), one panel each.
        plot: the plot function to apply to each (default: the one registered for the type).
        titles: panel titles (default: each result's lens name).
        sharey: share the y axis so the panels compare directly.
        figsize: figure size (default 6 x 4.2 per panel).
        **kwargs: passed to ``plot`` for both panels.

    Returns:
        The figure, with one axes per result (plus any colour bars).

    Example:
        >>> # logit = glt.run_guess_then_refine(model, glt.LogitLens.from_model(model))
        >>> # tuned = glt.run_guess_then_refine(model, glt.load_lens("default", model))
        >>> # fig = plot_side_by_side(logit, tuned)  # two bucket-share panels
    """
    results = (left, right, *more)
    kinds = sorted({type(x).__name__ for x in results})
    if len(kinds) > 1:
        raise GltError(
            f"left, right (and more) must be results of the same kind, got {' and '.join(kinds)}: "
            "compare like with like"
        )
    if titles is not None and len(titles) != len(results):
        raise GltError(f"titles must give one title per panel ({len(results)}), got {len(titles)}: pass one each")
    if plot is None:
        plot = default_plot(left)
        if plot is None:
            raise GltError(
                f"no default plot for {type(left).__name__}: pass plot=<a glt plot_* function>"
            )
    with glt_style():
        fig = new_figure(figsize or (6.0 * len(results), 4.2))
        axes = fig.subplots(1, len(results), sharey=sharey)
        for a, res, i in zip(axes, results, range(len(results)), strict=True):
            plot(res, ax=a, **kwargs)
            name = titles[i] if titles else f"{getattr(res, 'lens', getattr(res, 'lens_name', ''))} lens"
            a.set_title(f"{name}: {a.get_title()}" if not titles else name)
    return fig


register_plot(Readout, plot_rank_curves)
