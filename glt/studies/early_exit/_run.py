"""Early exit from a read-out: when each token's prediction settles and what exiting would save.

Everything here is computed from a `glt.Readout` (no extra forward passes), for whichever lens
made it (the result records ``readout.lens``), per token category chosen by the caller
(frequency bucket, POS tag, answer-token position, multiple-choice option, ...).

Conventions:

* the tracked token of a row is the **final top-1**, ``readout.top1[-1]``; the lens "agrees" at
  layer ``l`` when ``readout.top1[l] == readout.top1[-1]``. This compares the top-1 *token ids*
  (``topk_ids[..., 0]``), not ranks: a token tied with the top-1 has rank 0 but does not count as
  agreeing unless the read-out listed it first;
* layers are residual indices (0 = embeddings, ``n_layers`` = final residual). Exiting at residual
  index ``l`` skips blocks ``l .. n_layers-1`` and saves ``(n_layers - l) / n_layers`` of the
  block compute. The unembedding (paid once at whatever layer one exits) is **not** counted; the
  probe cost of a confidence policy (one lens evaluation per layer visited) is reported
  separately as ``lens_evals``;
* the **stable onset** (at k = 1) is the first layer from which the lens agrees at every later
  layer (`glt.decoding._onsets.stable_onset`); it always exists because the final layer agrees with itself;
* a **confidence policy** with threshold ``tau`` exits at the first layer at or after
  ``min_exit_layer`` whose lens top-1 probability (``readout.max_prob``) is ``>= tau``, and at the
  final layer if none is. It costs ``exit - min_exit_layer + 1`` lens evaluations. The logit lens
  at the embeddings (layer 0) of models with tied embeddings mostly decodes the *input* token with
  probability near 1 (Gemma 3 270M: every token), so with ``min_exit_layer=0`` the policy exits
  there at once; raise ``min_exit_layer`` (or use a tuned lens) for a useful curve;
* accuracy compares the exit layer's top-1 with ``gold`` (the true next token); rows with
  ``gold == -1`` have no gold and are left out of accuracies only (``n_gold`` counts the rest).
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from glt.core._check import checked, layer_indices
from glt.core._codec import Format, Saved
from glt.core._errors import GltError
from glt.decoding._onsets import stable_onset
from glt.decoding._readout import Readout

__all__ = ["DEFAULT_TAUS", "EarlyExitResult", "early_exit", "saved_fraction"]

#: Confidence thresholds of the default trade-off curve.
DEFAULT_TAUS: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(1, 20)) + (0.99,)
_ALL = "all"
_POLICY_COLUMNS = ("policy", "param", "exit_layer", "compute_saved", "agreement", "accuracy",
                   "early_share", "lens_evals")


def saved_fraction(exit_layer: Any, n_layers: int) -> Any:
    """Share of the block compute saved by exiting at residual index ``exit_layer``.

    Example:
        >>> saved_fraction(0, 4), saved_fraction(3, 4), saved_fraction(4, 4)
        (1.0, 0.25, 0.0)
    """
    return (n_layers - exit_layer) / n_layers


@dataclass(frozen=True, eq=False)
class EarlyExitResult(Saved):
    """Early-exit statistics per category; ``group`` axes follow ``groups`` (last one ``"all"``).

    Attributes:
        lens, model_name, data_source: provenance (``lens`` comes from the read-out).
        n_layers, layer_labels: the model's block count and the residual labels.
        groups: category labels in first-seen order, then ``"all"``.
        n, n_gold: rows per group, and how many of them have a gold token.
        row_group, row_onset: each row's category and stable onset.
        onset_hist: ``[group, layer]`` how many rows settle at each residual index.
        onset_mean, onset_median, onset_q25, onset_q75: stable-onset statistics per group
            (quantiles interpolate linearly).
        onset_saved: mean compute share saved by exiting exactly at each row's onset (an oracle:
            it needs the final answer; agreement 1 by construction).
        final_accuracy: accuracy of the full model per group (NaN without gold).
        exit_layers, fixed_agreement, fixed_accuracy: ``[group, exit]`` top-1 agreement with the
            final output and accuracy when every row exits at a fixed residual index.
        taus, tau_*: ``[group, tau]`` mean exit layer, compute saved, agreement, accuracy, share
            of rows exiting before the final layer, and mean lens evaluations of the policy
            (which checks layers ``min_exit_layer .. n_layers`` only).
    """

    _format: ClassVar[Format] = Format(
        "glt.EarlyExitResult", "early-exit result", "delete it and rebuild it with early_exit(...).save(path)",
        sizes={"group": "groups", "layer": "layer_labels", "row": "row_group", "exit": "exit_layers", "tau": "taus"})

    lens: str
    model_name: str
    data_source: str
    n_layers: int
    layer_labels: tuple[str, ...]
    groups: tuple[str, ...]
    n: tuple[int, ...]
    n_gold: tuple[int, ...]
    row_group: tuple[str, ...]
    row_onset: Int[Tensor, " row"]
    onset_hist: Int[Tensor, "group layer"]
    onset_mean: Float[Tensor, " group"]
    onset_median: Float[Tensor, " group"]
    onset_q25: Float[Tensor, " group"]
    onset_q75: Float[Tensor, " group"]
    onset_saved: Float[Tensor, " group"]
    final_accuracy: Float[Tensor, " group"]
    exit_layers: tuple[int, ...]
    fixed_agreement: Float[Tensor, "group exit"]
    fixed_accuracy: Float[Tensor, "group exit"]
    taus: tuple[float, ...]
    min_exit_layer: int
    tau_exit_mean: Float[Tensor, "group tau"]
    tau_saved: Float[Tensor, "group tau"]
    tau_agreement: Float[Tensor, "group tau"]
    tau_accuracy: Float[Tensor, "group tau"]
    tau_early_share: Float[Tensor, "group tau"]
    tau_lens_evals: Float[Tensor, "group tau"]

    @checked
    def to_dataframe(self, table: Literal["policies", "onsets", "rows"] = "policies") -> Any:
        """A tidy table: ``"policies"`` (default), ``"onsets"`` or ``"rows"``.

        ``policies`` has one row per (group, policy): ``final`` (no exit), ``oracle_onset`` (exit
        at each row's stable onset), ``fixed`` (``param`` = exit layer) and ``confidence``
        (``param`` = tau), with mean exit layer, compute saved, agreement, accuracy, share exiting
        early and lens evaluations. ``onsets`` has one row per (group, layer) with the count and
        share of rows whose stable onset is that layer, plus the group's summary statistics.
        ``rows`` has one row per read-out row with its group and onset.
        """
        import pandas as pd

        if table == "rows":
            return pd.DataFrame(
                {
                    "row": range(len(self.row_group)),
                    "group": list(self.row_group),
                    "onset": self.row_onset.tolist(),
                    "onset_label": [self.layer_labels[i] for i in self.row_onset.tolist()],
                    "onset_saved": [saved_fraction(i, self.n_layers) for i in self.row_onset.tolist()],
                }
            )
        common = {"lens": self.lens, "model": self.model_name, "data_source": self.data_source}
        recs: list[dict[str, Any]] = []
        nan, n = math.nan, self.n_layers
        for gi, g in enumerate(self.groups):
            base = {**common, "group": g, "n": self.n[gi], "n_gold": self.n_gold[gi]}
            if table == "onsets":
                summary = {"onset_mean": float(self.onset_mean[gi]), "onset_median": float(self.onset_median[gi]),
                           "onset_q25": float(self.onset_q25[gi]), "onset_q75": float(self.onset_q75[gi])}
                for li, count in enumerate(self.onset_hist[gi].tolist()):
                    recs.append({**base, "layer": li, "layer_label": self.layer_labels[li], "count": count,
                                 "share": count / self.n[gi], **summary})
                continue
            acc = float(self.final_accuracy[gi])
            early_oracle = 1.0 - float(self.onset_hist[gi, -1]) / self.n[gi]
            rows = [("final", nan, n, 0.0, 1.0, acc, 0.0, 1.0),
                    ("oracle_onset", nan, float(self.onset_mean[gi]), float(self.onset_saved[gi]), 1.0, acc,
                     early_oracle, nan)]
            rows += [("fixed", layer, layer, saved_fraction(layer, n), float(self.fixed_agreement[gi, ei]),
                      float(self.fixed_accuracy[gi, ei]), float(layer < n), 1.0)
                     for ei, layer in enumerate(self.exit_layers)]
            rows += [("confidence", tau, *(float(t[gi, ti]) for t in (
                self.tau_exit_mean, self.tau_saved, self.tau_agreement, self.tau_accuracy,
                self.tau_early_share, self.tau_lens_evals))) for ti, tau in enumerate(self.taus)]
            for row in rows:
                rec = dict(zip(_POLICY_COLUMNS, row, strict=True))
                rec["min_exit_layer"] = self.min_exit_layer if row[0] == "confidence" else nan
                recs.append({**base, **rec})
        return pd.DataFrame(recs)


def _labels(categories: Any, n_rows: int) -> list[str]:
    if categories is None:
        return [_ALL] * n_rows
    if isinstance(categories, (str, bytes)) or not isinstance(categories, (Sequence, Tensor)):
        raise GltError(
            f"categories must be a sequence of one label per row (length {n_rows}), got "
            f"{type(categories).__name__}: pass e.g. a list of frequency buckets or POS tags"
        )
    labels = [str(c) for c in (categories.tolist() if isinstance(categories, Tensor) else categories)]
    if len(labels) != n_rows:
        raise GltError(
            f"categories must label each of the readout's {n_rows} rows, got {len(labels)} labels: "
            "pass one label per row, in row order"
        )
    if _ALL in labels:
        raise GltError(
            f"categories may not use the label {_ALL!r} (it names the overall group): rename it"
        )
    return labels


def _gold(gold: Any, n_rows: int) -> Int[Tensor, " row"]:
    if gold is None:
        return torch.full((n_rows,), -1, dtype=torch.long)
    g = torch.as_tensor(gold)
    if g.dtype.is_floating_point or g.dtype == torch.bool or g.dtype.is_complex:
        raise GltError(f"gold must be integer token ids [row], got dtype {g.dtype}")
    if g.ndim != 1 or g.shape[0] != n_rows:
        raise GltError(
            f"gold must be [row]={n_rows} token ids (one per readout row, -1 = unknown), got "
            f"shape {tuple(g.shape)}"
        )
    if g.numel() and int(g.min()) < -1:
        raise GltError(f"gold holds {int(g.min())}: token ids must be >= 0, or -1 for no gold")
    return g.long().cpu()


def _taus(taus: Any) -> tuple[float, ...]:
    try:
        out = tuple(float(t) for t in taus)
    except (TypeError, ValueError) as e:
        raise GltError(f"taus must be a sequence of numbers in (0, 1], got {taus!r:.60}") from e
    if not out or any(not (0.0 < t <= 1.0) for t in out):
        raise GltError(f"taus must be a non-empty sequence of thresholds in (0, 1], got {out!r:.80}")
    return out


def _exit_layers(exit_layers: Any, n_layers: int) -> tuple[int, ...]:
    if exit_layers is None:
        return tuple(range(n_layers + 1))
    return layer_indices(exit_layers, name="exit_layers", last=n_layers,
                         fix=f"0 = embeddings, {n_layers} = final")


def _mean(x: Tensor, sel: Bool[Tensor, " row"]) -> float:
    return float(x[sel].double().mean()) if bool(sel.any()) else math.nan


def _first_true(reach: Bool[Tensor, "layer row"]) -> Int[Tensor, " row"]:
    n_layer = reach.shape[0]
    idx = torch.arange(n_layer)[:, None].expand_as(reach)
    return torch.where(reach, idx, torch.full_like(idx, n_layer)).min(0).values


@checked
def early_exit(
    readout: Readout,
    *,
    gold: Tensor | Sequence[int] | None = None,
    categories: Sequence[Any] | Tensor | None = None,
    taus: Sequence[float] = DEFAULT_TAUS,
    exit_layers: Sequence[int] | None = None,
    min_exit_layer: int = 0,
    model_name: str = "",
    data_source: str = "",
) -> EarlyExitResult:
    """Early-exit onsets, fixed-layer exits and confidence-exit trade-offs from a read-out.

    Args:
        readout: a `glt.Readout` from either lens (any targets; only ``topk_ids`` and
            ``topk_logprobs`` are used).
        gold: ``[row]`` true next-token ids for accuracy; ``-1`` where unknown; None = no accuracy.
        categories: one label per row (frequency bucket, POS tag, answer position, option, ...);
            labels are turned into strings; None puts every row in the group ``"all"``, which is
            always added as the last group.
        taus: confidence thresholds in (0, 1] for the max-probability exit policy.
        exit_layers: residual indices for the fixed-exit table (default: every layer).
        min_exit_layer: the first residual index the confidence policy may exit at.
        model_name, data_source: provenance recorded in the result.

    Returns:
        A frozen `EarlyExitResult` (see the module docstring for the conventions).

    Example:
        >>> import glt
        >>> ids = torch.tensor([[[5], [7]], [[5], [8]], [[9], [8]]])  # [layer=3, row=2, k=1]
        >>> lp = torch.log(torch.tensor([[[0.9], [0.2]], [[0.5], [0.6]], [[0.8], [0.7]]]))
        >>> r = glt.Readout(("embed", "resid_pre 1", "final"), torch.zeros(2, dtype=torch.long),
        ...     torch.arange(2), torch.zeros(2, dtype=torch.long), ids[-1], torch.zeros(3, 2, 1,
        ...     dtype=torch.long), lp, ids, lp, torch.zeros(3, 2), torch.zeros(3, 2), "logit")
        >>> res = early_exit(r, gold=[9, 7], taus=(0.5,))
        >>> res.row_onset.tolist(), res.onset_saved.tolist()
        ([2, 1], [0.25])
        >>> res.tau_exit_mean.tolist(), res.tau_agreement.tolist(), res.tau_accuracy.tolist()
        ([[0.5]], [[0.5]], [[0.0]])
    """
    if not isinstance(readout, Readout):
        raise GltError(f"readout must be a glt.Readout (from glt.readout), got {type(readout).__name__}")
    top1 = readout.top1.cpu()
    n_layer, n_rows = top1.shape
    if n_rows == 0:
        raise GltError("readout has no rows: read at least one position before early_exit")
    if n_layer < 2:
        raise GltError(f"readout must hold at least 2 residual indices, got {n_layer}")
    n_layers = n_layer - 1
    labels = _labels(categories, n_rows)
    g = _gold(gold, n_rows)
    tau_t = _taus(taus)
    exits = _exit_layers(exit_layers, n_layers)
    if not isinstance(min_exit_layer, int) or not 0 <= min_exit_layer <= n_layers:
        raise GltError(
            f"min_exit_layer must be a residual index in [0, {n_layers}], got {min_exit_layer!r}"
        )
    if not isinstance(model_name, str) or not isinstance(data_source, str):
        raise GltError("model_name and data_source must be strings (provenance labels)")

    agree = top1 == top1[-1]  # [layer, row]
    onset = stable_onset((~agree).long(), 1)
    has_gold = g >= 0
    correct = (top1 == g[None]) & has_gold[None]
    mp = readout.max_prob.cpu()
    tau_exit = []
    for tau in tau_t:
        reach = mp >= tau
        reach[:min_exit_layer] = False
        reach[-1] = True  # no confident layer: run the whole model
        tau_exit.append(_first_true(reach))
    rows = torch.arange(n_rows)

    groups = [c for c in dict.fromkeys(labels) if c != _ALL] + [_ALL]
    n_g = len(groups)
    sels = [
        torch.ones(n_rows, dtype=torch.bool) if c == _ALL else torch.tensor([lab == c for lab in labels])
        for c in groups
    ]
    hist = torch.zeros(n_g, n_layer, dtype=torch.long)
    stats = torch.full((5, n_g), math.nan)
    final_acc = torch.full((n_g,), math.nan)
    fixed_agree = torch.full((n_g, len(exits)), math.nan)
    fixed_acc = torch.full((n_g, len(exits)), math.nan)
    tau_stats = torch.full((6, n_g, len(tau_t)), math.nan)
    saved_rows = saved_fraction(onset.double(), n_layers)
    for gi, sel in enumerate(sels):
        on = onset[sel].double()
        hist[gi] = torch.bincount(onset[sel], minlength=n_layer)
        q = torch.quantile(on, torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64))
        stats[:, gi] = torch.tensor(
            [float(on.mean()), float(q[1]), float(q[0]), float(q[2]), float(saved_rows[sel].mean())]
        )
        gsel = sel & has_gold
        final_acc[gi] = _mean(correct[-1], gsel)
        for ei, layer in enumerate(exits):
            fixed_agree[gi, ei] = _mean(agree[layer], sel)
            fixed_acc[gi, ei] = _mean(correct[layer], gsel)
        for ti, ex in enumerate(tau_exit):
            tau_stats[0, gi, ti] = _mean(ex.double(), sel)
            tau_stats[1, gi, ti] = _mean(saved_fraction(ex.double(), n_layers), sel)
            tau_stats[2, gi, ti] = _mean(agree[ex, rows], sel)
            tau_stats[3, gi, ti] = _mean(correct[ex, rows], gsel)
            tau_stats[4, gi, ti] = _mean(ex < n_layers, sel)
            tau_stats[5, gi, ti] = _mean(ex.double() - min_exit_layer + 1, sel)
    return EarlyExitResult(
        lens=readout.lens,
        model_name=model_name,
        data_source=data_source,
        n_layers=n_layers,
        layer_labels=tuple(readout.layer_labels),
        groups=tuple(groups),
        n=tuple(int(s.sum()) for s in sels),
        n_gold=tuple(int((s & has_gold).sum()) for s in sels),
        row_group=tuple(labels),
        row_onset=onset,
        onset_hist=hist,
        onset_mean=stats[0],
        onset_median=stats[1],
        onset_q25=stats[2],
        onset_q75=stats[3],
        onset_saved=stats[4],
        final_accuracy=final_acc,
        exit_layers=exits,
        fixed_agreement=fixed_agree,
        fixed_accuracy=fixed_acc,
        taus=tau_t,
        min_exit_layer=min_exit_layer,
        tau_exit_mean=tau_stats[0],
        tau_saved=tau_stats[1],
        tau_agreement=tau_stats[2],
        tau_accuracy=tau_stats[3],
        tau_early_share=tau_stats[4],
        tau_lens_evals=tau_stats[5],
    )
