"""Plots of a part-of-speech result: onset curves and rank curves per tag.

Same rules as `glt.plotting`: ``plot_*(result, *, ax=None, **kwargs)`` returns the new figure or the
given axes (multi-panel figures take ``axes``), never shows it, and puts the N in the legends.

Example:
    >>> # fig = plot_pos_onsets(glt.run_pos_study(model, lens))
"""

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from glt.core._check import checked
from glt.core._errors import GltError
from glt.plotting._curves import plot_onset_curves, plot_rank_curves, register_plot
from glt.plotting._style import (
    as_numpy,
)
from glt.studies.part_of_speech._run import PosResult

__all__ = ["plot_pos_onsets", "plot_pos_ranks"]


def _pos_subset(result: Any, subset: str | None) -> str:
    if subset is not None:
        return subset
    return "correct" if any(c.group.startswith("correct/") for c in result.curves) else "all"


@checked
def plot_pos_onsets(
    result: Any,
    *,
    labels: Sequence[str] | None = None,
    subset: Literal["correct", "incorrect", "all"] | None = None,
    kind: Literal["first", "stable", "both"] = "both",
    ax: Any = None,
    title: str | None = None,
) -> Any:
    """Onset-vs-k curves per POS tag (the paper's Fig. 4a) from a `glt.PosResult`.

    Args:
        result: a `glt.PosResult`.
        labels: tags or groups to draw (default the result's tags).
        subset: ``"correct"`` (the paper's), ``"incorrect"`` or ``"all"`` (default correct when
            present).
        kind, ax, title: as in `glt.plot_onset_curves`.
    """
    subset = _pos_subset(result, subset)
    labels = list(labels) if labels is not None else list(result.tags)
    have = {c.group for c in result.curves}
    groups = [f"{subset}/{lab}" for lab in labels if f"{subset}/{lab}" in have]
    if not groups:
        raise GltError(f"no curves for {labels} in subset {subset!r}: available {sorted(have)}")
    curves = [type(c)(**{**c.to_dict(), "group": c.group.split("/", 1)[1]})
              for c in result.curves if c.group in groups]
    return plot_onset_curves(curves, kind=kind, n_layers=len(result.layer_labels) - 1, ax=ax,
                             title=title or f"Part of speech: earliest layer in the top-k "
                             f"({subset} items, {result.lens} lens)")


@checked
def plot_pos_ranks(result: Any, *, labels: Sequence[str] | None = None,
                   subset: Literal["correct", "incorrect", "all"] | None = None,
                   ax: Any = None, title: str | None = None) -> Any:
    """Rank of the gold word's first token over depth per POS tag (median, IQR band)."""
    subset = _pos_subset(result, subset)
    ranks = as_numpy(result.ranks)
    tags = np.asarray([it.tag for it in result.items])
    correct = as_numpy(result.correct).astype(bool)
    sel = {"correct": correct, "incorrect": ~correct, "all": np.ones_like(correct)}[subset]
    labels = list(labels) if labels is not None else list(result.tags)
    groups = {t: ranks[:, (tags == t) & sel] for t in labels if ((tags == t) & sel).any()}
    if not groups:
        raise GltError(f"no {subset} items for tags {labels}")
    return plot_rank_curves(groups, ax=ax, lens=result.lens, ylabel="rank of the next word's first token",
                            title=title or f"Part of speech: rank of the next word over depth ({subset} items)")


register_plot(PosResult, plot_pos_onsets)
