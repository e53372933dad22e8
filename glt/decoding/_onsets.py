"""Onsets: the earliest layer at which a tracked token enters the top-k, and how they aggregate.

Conventions:

* ranks are glt's 0-based ranks (the number of strictly greater logits), so "inside the top-k"
  means ``rank < k`` (the paper's 1-based ``rank <= k``);
* layers are residual indices (0 = embeddings, ``n_layers`` = final residual);
* ``first`` is the paper's first crossing: the first layer with ``rank < k``, with no check that it
  stays; ``stable`` is the first layer from which ``rank < k`` holds at every later layer;
* a token that never qualifies gets onset ``-1``; aggregates use only the tokens that qualify and
  report how many did (``n_crossed``) out of ``n``.
"""

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from glt.core._check import checked
from glt.core._errors import GltError

__all__ = [
    "K_GRID",
    "OnsetCurve",
    "Onsets",
    "aggregate_onsets",
    "compute_onsets",
    "first_crossing",
    "stable_onset",
    "topk_churn",
]

K_GRID: tuple[int, ...] = (1, 2, 3, 5, 10, 20, 30, 50, 100, 200, 300, 500, 1000, 2000, 5000, 10000)
"""The paper's log grid of thresholds k, from 1 to 10^4 (the default ``ks`` of `compute_onsets`)."""


def _inside(ranks: Int[Tensor, "layer n"], k: int) -> Bool[Tensor, "layer n"]:
    if ranks.ndim != 2 or ranks.shape[0] == 0:
        raise GltError(
            f"ranks must be [layer, n] with at least one layer, got shape {tuple(ranks.shape)}"
        )
    if k < 1:
        raise GltError(f"k must be >= 1, got {k}")
    return ranks < k


@checked
def first_crossing(ranks: Int[Tensor, "layer n"], k: int) -> Int[Tensor, " n"]:
    """First layer with ``rank < k`` (the paper's onset), or -1 if none.

    Example:
        >>> first_crossing(torch.tensor([[9], [0], [4], [0]]), 1).tolist()
        [1]
    """
    inside = _inside(ranks, k)
    n_layer = inside.shape[0]
    idx = torch.arange(n_layer, device=ranks.device)[:, None].expand_as(inside)
    big = torch.where(inside, idx, torch.full_like(idx, n_layer))
    first = big.min(0).values
    return torch.where(first == n_layer, torch.full_like(first, -1), first)


@checked
def stable_onset(ranks: Int[Tensor, "layer n"], k: int) -> Int[Tensor, " n"]:
    """First layer from which ``rank < k`` holds at every later layer, or -1 if not at the last.

    Example:
        >>> stable_onset(torch.tensor([[9], [0], [4], [0]]), 1).tolist()
        [3]
    """
    inside = _inside(ranks, k)
    n_layer = inside.shape[0]
    # suffix-all: flip, cumulative product, flip back
    suffix = torch.flip(torch.cumprod(torch.flip(inside.long(), [0]), 0), [0]).bool()
    idx = torch.arange(n_layer, device=ranks.device)[:, None].expand_as(inside)
    big = torch.where(suffix, idx, torch.full_like(idx, n_layer))
    first = big.min(0).values
    return torch.where(first == n_layer, torch.full_like(first, -1), first)


@checked
def topk_churn(ranks: Int[Tensor, "layer n"], k: int) -> tuple[Int[Tensor, " n"], Int[Tensor, " n"]]:
    """How often each token enters and leaves the top-k going up the layers.

    Returns ``(entries, exits)``; a token inside at layer 0 counts no entry for it.

    Example:
        >>> e, x = topk_churn(torch.tensor([[9], [0], [4], [0]]), 1)
        >>> e.tolist(), x.tolist()
        ([2], [1])
    """
    inside = _inside(ranks, k).long()
    step = inside[1:] - inside[:-1]
    return (step == 1).sum(0), (step == -1).sum(0)


@dataclass(frozen=True, eq=False)
class Onsets:
    """Per-item onsets on a grid of k: ``first[k_index, n]`` and ``stable[k_index, n]`` (-1 = never).

    Attributes:
        ks: the k grid.
        first: ``[k, n]`` first residual index whose rank is below k, -1 if never.
        stable: ``[k, n]`` first residual index from which the rank stays below k, -1 if never.
        n_layers: the model's block count: residual indices run 0 (embeddings) .. ``n_layers``.
    """

    ks: tuple[int, ...]
    first: Int[Tensor, "k n"]
    stable: Int[Tensor, "k n"]
    n_layers: int


@checked
def compute_onsets(ranks: Int[Tensor, "layer n"], ks: Any = K_GRID) -> Onsets:
    """First-crossing and stable onsets for every k in ``ks``.

    Example:
        >>> o = compute_onsets(torch.tensor([[9, 0], [0, 0], [4, 0], [0, 0]]), ks=(1, 5))
        >>> o.first.tolist(), o.stable.tolist()
        ([[1, 0], [1, 0]], [[3, 0], [1, 0]])
    """
    if isinstance(ks, (str, bytes)) or not hasattr(ks, "__iter__"):
        raise GltError(f"ks must be a sequence of integer thresholds >= 1, got {ks!r:.60}")
    ks = tuple(ks)
    bad = [k for k in ks if isinstance(k, bool) or not isinstance(k, int) or k < 1]
    if bad or not ks:
        raise GltError(
            f"ks must hold integer thresholds k >= 1, got {list(ks)!r:.80}: e.g. ks=glt.K_GRID"
        )
    first = torch.stack([first_crossing(ranks, k) for k in ks])
    stable = torch.stack([stable_onset(ranks, k) for k in ks])
    return Onsets(ks, first, stable, int(ranks.shape[0]) - 1)


#: Which onset: ``"first"`` crossing into the top-k, or ``"stable"`` (inside from there on).
OnsetKind = Literal["first", "stable"]


@dataclass(frozen=True)
class OnsetCurve:
    """Aggregated onsets of one group on the k grid (one list entry per k).

    ``n`` items in the group; ``n_crossed[i]`` reached the top-``ks[i]`` (and only those enter the
    statistics, which are NaN when none did).

    Attributes:
        group: the group's label (a frequency bucket, POS tag, answer position, ...).
        kind: ``"first"`` (first crossing) or ``"stable"`` (stays inside from there on).
        ks: the k grid.
        n: items in the group.
        n_crossed: per k, how many items ever reached the top-k.
        mean, median, q25, q75: per k, statistics of the onset layer over those items.
    """

    group: str
    kind: str  # "first" or "stable"
    ks: tuple[int, ...]
    n: int
    n_crossed: tuple[int, ...]
    mean: tuple[float, ...]
    median: tuple[float, ...]
    q25: tuple[float, ...]
    q75: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "OnsetCurve":
        """Inverse of `to_dict`; JSON nulls (NaN written by glt.core._io.write_json) become NaN."""

        def conv(v: Any) -> Any:
            if isinstance(v, list):
                return tuple(float("nan") if x is None else x for x in v)
            return v

        return cls(**{k: conv(v) for k, v in d.items()})


def _curve(group: str, kind: str, ks: tuple[int, ...], onset: Int[Tensor, "k n"]) -> OnsetCurve:
    n = int(onset.shape[1])
    crossed, mean, med, q25, q75 = [], [], [], [], []
    for row in onset:
        vals = row[row >= 0].double()
        crossed.append(int(vals.numel()))
        if vals.numel() == 0:
            mean.append(float("nan"))
            med.append(float("nan"))
            q25.append(float("nan"))
            q75.append(float("nan"))
            continue
        q = torch.quantile(vals, torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64))
        mean.append(float(vals.mean()))
        q25.append(float(q[0]))
        med.append(float(q[1]))
        q75.append(float(q[2]))
    return OnsetCurve(group, kind, ks, n, tuple(crossed), tuple(mean), tuple(med), tuple(q25), tuple(q75))


@checked
def aggregate_onsets(onsets: Onsets, groups: Sequence[str]) -> list[OnsetCurve]:
    """Aggregate onsets per group label (mean, median, quartiles, counts), first and stable.

    Quartiles use linear interpolation (``torch.quantile``); only items that reach the top-k at
    some layer enter the statistics for that k.

    Example:
        >>> o = compute_onsets(torch.tensor([[9, 0], [0, 0], [4, 0], [0, 0]]), ks=(1,))
        >>> for c in aggregate_onsets(o, ["a", "a"]):
        ...     print(c.group, c.kind, c.mean, c.n_crossed)
        a first (0.5,) (2,)
        a stable (1.5,) (2,)
    """
    if len(groups) != onsets.first.shape[1]:
        raise GltError(f"groups must label each of the {onsets.first.shape[1]} items, got {len(groups)}")
    out = []
    labels = list(groups)
    for g in dict.fromkeys(labels):
        sel = torch.tensor([lab == g for lab in labels])
        out.append(_curve(g, "first", onsets.ks, onsets.first[:, sel]))
        out.append(_curve(g, "stable", onsets.ks, onsets.stable[:, sel]))
    return out
