"""Plots of a patching result: the effect of patching each layer.

Same rules as `glt.plotting`: ``plot_*(result, *, ax=None, **kwargs)`` returns the new figure or the
given axes (multi-panel figures take ``axes``), never shows it, and puts the N in the legends.

Example:
    >>> # fig = plot_patching(glt.patch_layers(model, clean, corrupt))
"""

from typing import Any

import numpy as np

from glt.core._check import checked
from glt.core._errors import GltError
from glt.plotting._curves import register_plot
from glt.plotting._style import (
    OKABE_ITO,
    as_numpy,
    glt_style,
    new_axes,
    set_layer_axis,
    with_n,
)
from glt.studies.patching._result import PatchingResult

__all__ = ["plot_patching"]


@checked
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
            (
                as_numpy(result.lens_options_stable)[sel],
                f"{result.lens} lens settles",
                OKABE_ITO["reddish_purple"],
                ":",
            ),
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


register_plot(PatchingResult, plot_patching)
