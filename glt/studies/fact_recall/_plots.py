"""Plots of a fact-recall result: onsets by answer-token position, and rank curves.

Same rules as `glt.plotting`: ``plot_*(result, *, ax=None, **kwargs)`` returns the new figure or the
given axes (multi-panel figures take ``axes``), never shows it, and puts the N in the legends.

Example:
    >>> # fig = plot_fact_onsets(glt.run_fact_recall(model, lens))
"""

from typing import Any, Literal

from glt.core._check import checked
from glt.core._errors import GltError
from glt.plotting._curves import plot_onset_curves, plot_rank_curves, register_plot
from glt.plotting._style import (
    as_numpy,
)
from glt.studies.fact_recall._result import FactRecallResult

__all__ = ["plot_fact_onsets", "plot_fact_ranks"]


def _fact_groups(result: Any, outcome: str) -> list[tuple[int, int]]:
    lengths, positions = as_numpy(result.row_length), as_numpy(result.row_position)
    pairs = sorted({(int(n), int(j)) for n, j in zip(lengths, positions, strict=True)})
    return pairs


@checked
def plot_fact_onsets(result: Any, *, kind: Literal["first", "stable", "both"] = "first",
                     outcome: Literal["correct", "incorrect"] = "correct", ax: Any = None,
                     title: str | None = None) -> Any:
    """Onset-vs-k curves per (answer length n, answer token j) from a `glt.FactRecallResult`.

    Args:
        result: a `glt.FactRecallResult`.
        kind: ``"first"`` (the paper's first crossing), ``"stable"`` or ``"both"``.
        outcome: ``"correct"`` (final top-1 = gold; the paper's) or ``"incorrect"`` tokens.
        ax, title: axes to draw into (default a new figure) and its title.

    Returns:
        The figure or the given axes; each line is one curve of ``result.curves`` (x = mean onset,
        y = k), labelled ``n=<length> token <j+1>``.
    """
    curves = []
    for n, j in _fact_groups(result, outcome):
        for c in result.curves:
            if c.group == f"len{n}/pos{j}/{outcome}":
                curves.append(type(c)(**{**c.to_dict(), "group": f"n={n} token {j + 1}"}))
    if not curves:
        raise GltError(f"no {outcome} answer tokens in the result: try outcome='incorrect'")
    return plot_onset_curves(curves, kind=kind, n_layers=result.n_layers, ax=ax,
                             title=title or f"Fact recall: earliest layer in the top-k ({outcome} "
                             f"tokens, {'first crossing' if kind == 'first' else kind}, {result.lens} lens)")


@checked
def plot_fact_ranks(result: Any, *, outcome: Literal["correct", "incorrect"] = "correct", ax: Any = None,
                    title: str | None = None) -> Any:
    """Rank of each answer token over depth per (answer length n, token j): median, IQR band."""
    ranks = as_numpy(result.ranks)
    ok = as_numpy(result.correct).astype(bool)
    ok = ok if outcome == "correct" else ~ok
    ln, pos = as_numpy(result.row_length), as_numpy(result.row_position)
    groups = {f"n={n} token {j + 1}": ranks[:, (ln == n) & (pos == j) & ok]
              for n, j in _fact_groups(result, outcome) if ((ln == n) & (pos == j) & ok).any()}
    if not groups:
        raise GltError(f"no {outcome} answer tokens in the result: try outcome='incorrect'")
    return plot_rank_curves(groups, ax=ax, lens=result.lens, ylabel="rank of the answer token",
                            title=title or f"Fact recall: rank of the answer token ({outcome} tokens)")


register_plot(FactRecallResult, plot_fact_onsets)
