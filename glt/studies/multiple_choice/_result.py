"""The result of `glt.run_multiple_choice`: per-item option ranks over depth, onsets and the control.

`MultipleChoiceResult` keeps, per item and layer, the vocabulary ranks and log-probabilities of the
option tokens (format) and of the content tokens, the final choice and gold index; it derives the
format and decision onsets and curves, tabulates them, and saves/loads as JSON (the permutation
control run is stored beside the main one as ``control``).
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from glt.core._codec import Format, Saved
from glt.decoding._onsets import (
    K_GRID,
    OnsetCurve,
    aggregate_onsets,
    compute_onsets,
    first_crossing,
    stable_onset,
    topk_churn,
)

__all__ = ["MultipleChoiceResult"]

_ONSETS = ("format_first", "format_stable", "decision_first", "decision_stable")


@dataclass(frozen=True, eq=False)
class MultipleChoiceResult(Saved):
    """Per-layer option ranks and probabilities for every item, and the measures derived from them.

    Attributes:
        option_ranks, option_logprobs: ``[layer, item, option]`` vocabulary rank (0-based, count of
            strictly greater logits) and log-probability of each option token.
        content_ranks, content_logprobs: the same for each option's content token.
        gold: ``[item]`` gold option index; ``final_top1``: ``[item]`` the model's unconstrained
            top-1 token at the final layer.
        skipped: ``(item id, reason)`` for every item left out; ``control``: the permutation
            control run (None when none was asked for).

    Derived measures (``choice``, ``decision_rank``, ``format_rank``, ``option_mass``, ...) are
    properties; ``summary()``, ``curves()``, ``item_table()`` and ``to_dataframe()`` tabulate them
    with the N behind every number.

    Example:
        >>> # res = glt.run_multiple_choice(model, lens, task="sst2", n_items=40, permute_symbols=True)
        >>> # res.summary().query("group == 'all'")[["run", "n", "accuracy", "decision_stable_median"]]
        >>> # res.curves().query("measure == 'option_mass'")  # median and quartiles per layer
    """

    _format: ClassVar[Format] = Format(
        "glt.MultipleChoiceResult", "multiple-choice result", "delete it and re-run the study",
        legacy=(("kind", "glt.MultipleChoiceResult"),), sizes={"layer": "layer_labels", "item": "item_ids"})

    task: str
    model: str
    lens: str
    source: str
    n_shots: int
    top_k_format: int
    symbols_mode: str
    layer_labels: tuple[str, ...]
    item_ids: tuple[str, ...]
    symbols: tuple[tuple[str, ...], ...]
    multi_token_symbols: tuple[str, ...]
    option_tokens: Int[Tensor, "item option"]
    content_tokens: Int[Tensor, "item option"]
    gold: Int[Tensor, " item"]
    option_ranks: Int[Tensor, "layer item option"]
    option_logprobs: Float[Tensor, "layer item option"]
    content_ranks: Int[Tensor, "layer item option"]
    content_logprobs: Float[Tensor, "layer item option"]
    final_top1: Int[Tensor, " item"]
    skipped: tuple[tuple[str, str], ...] = ()
    control: "MultipleChoiceResult | None" = None

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def choice(self) -> Int[Tensor, " item"]:
        """The final choice: argmax among the options at the final layer."""
        return self.option_logprobs[-1].argmax(-1)

    @property
    def correct(self) -> Bool[Tensor, " item"]:
        return self.choice == self.gold

    @property
    def accuracy(self) -> float:
        return float(self.correct.float().mean())

    @property
    def layer_choice(self) -> Int[Tensor, "layer item"]:
        """Each layer's argmax among the options."""
        return self.option_logprobs.argmax(-1)

    @property
    def decision_rank(self) -> Int[Tensor, "layer item"]:
        """Rank of the final choice among the options at each layer (0 = preferred)."""
        lp = self.option_logprobs
        chosen = lp.gather(-1, self.choice.view(1, -1, 1).expand(lp.shape[0], -1, 1))
        return (lp > chosen).sum(-1)

    @property
    def decision_agree(self) -> Bool[Tensor, "layer item"]:
        """``[layer, item]`` whether the layer's choice among the options is the final one."""
        return self.layer_choice == self.choice[None]

    @property
    def format_rank(self) -> Int[Tensor, "layer item"]:
        """The worst vocabulary rank among the options (all inside the top-k iff ``< k``)."""
        return self.option_ranks.max(-1).values

    @property
    def option_mass(self) -> Float[Tensor, "layer item"]:
        """Total probability on the option tokens."""
        return self.option_logprobs.exp().sum(-1)

    @property
    def top1_is_option(self) -> Bool[Tensor, " item"]:
        """``[item]`` whether the model's unconstrained final top-1 is one of the options."""
        return (self.final_top1[:, None] == self.option_tokens).any(-1)

    def onsets(self) -> dict[str, Tensor]:
        """Per-item onset layers (-1 = never): format first / stable at ``top_k_format``, decision."""
        k, off = self.top_k_format, (~self.decision_agree).long()
        return {"format_first": first_crossing(self.format_rank, k),
                "format_stable": stable_onset(self.format_rank, k),
                "decision_first": first_crossing(off, 1), "decision_stable": stable_onset(off, 1)}

    def format_onset_curves(self, ks: Sequence[int] = K_GRID) -> list[OnsetCurve]:
        """Format onsets on a grid of k, aggregated for ``all``, ``correct`` and ``incorrect`` items."""
        o = compute_onsets(self.format_rank, ks)
        labels = ["correct" if c else "incorrect" for c in self.correct.tolist()]
        return aggregate_onsets(o, ["all"] * self.n_items) + aggregate_onsets(o, labels)

    def _groups(self) -> list[tuple[str, Tensor]]:
        c = self.correct
        return [("all", torch.ones_like(c)), ("correct", c), ("incorrect", ~c)]

    def item_table(self) -> Any:
        """One row per item: gold, final choice, correctness, onsets and top-k churn."""
        import pandas as pd

        entries, exits = topk_churn(self.format_rank, self.top_k_format)
        changes = (self.layer_choice[1:] != self.layer_choice[:-1]).sum(0)
        ch, gold = self.choice.tolist(), self.gold.tolist()
        cols = {"item_id": list(self.item_ids), "gold": gold, "choice": ch,
                "gold_symbol": [s[g] for s, g in zip(self.symbols, gold, strict=True)],
                "choice_symbol": [s[c] for s, c in zip(self.symbols, ch, strict=True)],
                "correct": self.correct.tolist(), "top1_is_option": self.top1_is_option.tolist(),
                **{k: v.tolist() for k, v in self.onsets().items()},
                "format_entries": entries.tolist(), "format_exits": exits.tolist(),
                "decision_changes": changes.tolist()}
        return pd.DataFrame(cols)

    def to_dataframe(self) -> Any:
        """Long table: one row per (layer, item, option) with rank, probability and content token."""
        import pandas as pd

        n_l, n_i, n_o = self.option_ranks.shape
        lay, it, op = (t.reshape(-1) for t in torch.meshgrid(
            torch.arange(n_l), torch.arange(n_i), torch.arange(n_o), indexing="ij"))
        return pd.DataFrame({
            "layer": lay.numpy(), "layer_label": [self.layer_labels[i] for i in lay.tolist()],
            "item": it.numpy(), "item_id": [self.item_ids[i] for i in it.tolist()],
            "option": op.numpy(),
            "symbol": [self.symbols[i][o] for i, o in zip(it.tolist(), op.tolist(), strict=True)],
            "option_token": self.option_tokens[it, op].numpy(),
            "rank": self.option_ranks.reshape(-1).numpy(),
            "prob": self.option_logprobs.exp().reshape(-1).numpy(),
            "content_token": self.content_tokens[it, op].numpy(),
            "content_rank": self.content_ranks.reshape(-1).numpy(),
            "content_prob": self.content_logprobs.exp().reshape(-1).numpy(),
            "is_gold": (self.gold[it] == op).numpy(), "is_choice": (self.choice[it] == op).numpy(),
            "correct": self.correct[it].numpy(),
        })

    def curves(self) -> Any:
        """Median, quartiles and mean over items per layer of every measure, per group and run.

        Measures: ``option_mass``, ``format_rank``, ``format_inside`` (at ``top_k_format``),
        ``decision_rank``, ``decision_agree``, ``choice_prob``, ``gold_prob`` and
        ``choice_content_rank``; groups ``all`` / ``correct`` / ``incorrect`` each with its N.
        """
        import pandas as pd

        rows = []
        for run, res in self._runs():
            lp, idx = res.option_logprobs, torch.arange(res.n_items)
            measures = {
                "option_mass": res.option_mass, "format_rank": res.format_rank.double(),
                "format_inside": (res.format_rank < res.top_k_format).double(),
                "decision_rank": res.decision_rank.double(),
                "decision_agree": res.decision_agree.double(),
                "choice_prob": lp[:, idx, res.choice].exp(), "gold_prob": lp[:, idx, res.gold].exp(),
                "choice_content_rank": res.content_ranks[:, idx, res.choice].double()}
            for group, sel in res._groups():
                for name, val in measures.items():
                    v = val[:, sel].double()
                    q = (torch.quantile(v, torch.tensor([0.25, 0.5, 0.75], dtype=v.dtype), dim=1)
                         if v.shape[1] else torch.full((3, v.shape[0]), float("nan")))
                    mean = v.mean(1) if v.shape[1] else q[0]
                    for layer in range(v.shape[0]):
                        rows.append((run, res.symbols_mode, group, name, layer, res.layer_labels[layer],
                                     int(v.shape[1]), float(mean[layer]), float(q[1, layer]),
                                     float(q[0, layer]), float(q[2, layer])))
        return pd.DataFrame(rows, columns=["run", "symbols_mode", "group", "measure", "layer",
                                           "layer_label", "n", "mean", "median", "q25", "q75"])

    def summary(self) -> Any:
        """Headline numbers per run (main, control) and group: N, accuracy, onset medians."""
        import pandas as pd

        rows = []
        for run, res in self._runs():
            ons = res.onsets()
            for group, sel in res._groups():
                row: dict[str, Any] = {
                    "run": run, "symbols_mode": res.symbols_mode, "group": group,
                    "n": int(sel.sum()), "n_skipped": len(res.skipped),
                    "accuracy": float(res.correct[sel].float().mean()) if sel.any() else float("nan"),
                    "top1_is_option": float(res.top1_is_option[sel].float().mean()) if sel.any() else float("nan"),
                    "format_k": res.top_k_format}
                for name in _ONSETS:
                    v = ons[name][sel]
                    v = v[v >= 0].double()
                    q = torch.quantile(v, torch.tensor([0.25, 0.5, 0.75], dtype=v.dtype)).tolist() \
                        if v.numel() else [float("nan")] * 3
                    row.update({f"{name}_n": int(v.numel()), f"{name}_median": q[1],
                                f"{name}_q25": q[0], f"{name}_q75": q[2]})
                rows.append(row)
        return pd.DataFrame(rows)

    def _runs(self) -> list[tuple[str, "MultipleChoiceResult"]]:
        return [("main", self)] + ([("control", self.control)] if self.control is not None else [])
