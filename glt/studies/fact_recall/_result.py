"""The result of `glt.run_fact_recall`: per-answer-token ranks over depth and onset curves.

`FactRecallResult` keeps one row per (fact, answer position) with the rank of the gold token at
every layer, groups the onsets by answer length, position and outcome (correct / incorrect
under greedy decoding), tabulates them and saves/loads as JSON.
"""

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from glt.core._codec import Format, Saved
from glt.core._errors import GltError
from glt.decoding._onsets import OnsetCurve, OnsetKind, Onsets, aggregate_onsets, compute_onsets
from glt.studies.fact_recall._data import Fact

__all__ = ["FactRecallResult"]

_OUTCOMES = ("correct", "incorrect")


def _group(n: int, j: int, correct: bool) -> str:
    return f"len{n}/pos{j}/{'correct' if correct else 'incorrect'}"


@dataclass(frozen=True, eq=False)
class FactRecallResult(Saved):
    """Per-answer-token ranks over depth and the onset curves of a fact-recall run.

    A "row" is one answer token of one analysed fact (facts in order, positions ascending).

    Attributes:
        model, lens, sources: provenance (model name, lens name, the facts' sources).
        ks: the k grid of the onsets; layer_labels: one label per residual index.
        max_answer_tokens, accept_unspaced: the options used.
        n_input: how many facts were passed; facts: the analysed ones; fact_index: their index
            in the input; skipped: ``(input index, reason)`` of every other fact.
        answer_tokens: per analysed fact, the gold answer token ids (length ``n``).
        row_fact, row_position: ``[row]`` fact (into ``facts``) and answer position ``j``.
        gold, tracked: ``[row]`` the gold token and the token whose rank is tracked.
        correct: ``[row]`` final top-1 == gold (or, at j = 0, its unspaced variant).
        ranks, logprobs: ``[layer, row]`` 0-based rank and log-probability of ``tracked``.
        top1, max_prob: ``[layer, row]`` the lens top-1 and its probability (for early exit).

    Derived (computed on first use): ``row_length`` ``[row]``, ``first`` / ``stable`` ``[k, row]``
    onsets (-1 = never inside the top-k), and ``curves``, the aggregated onsets per group
    ``len{n}/pos{j}/{correct|incorrect}``.
    """

    _format: ClassVar[Format] = Format(
        "glt.FactRecallResult", "fact-recall result", "re-run and save",
        legacy=(("format", "glt.FactRecallResult/1"),), sizes={"layer": "layer_labels"})

    model: str
    lens: str
    sources: tuple[str, ...]
    ks: tuple[int, ...]
    layer_labels: tuple[str, ...]
    max_answer_tokens: int
    accept_unspaced: bool
    n_input: int
    facts: tuple[Fact, ...]
    fact_index: tuple[int, ...]
    skipped: tuple[tuple[int, str], ...]
    answer_tokens: tuple[tuple[int, ...], ...]
    row_fact: Int[Tensor, " row"]
    row_position: Int[Tensor, " row"]
    gold: Int[Tensor, " row"]
    tracked: Int[Tensor, " row"]
    correct: Bool[Tensor, " row"]
    ranks: Int[Tensor, "layer row"]
    logprobs: Float[Tensor, "layer row"]
    top1: Int[Tensor, "layer row"]
    max_prob: Float[Tensor, "layer row"]

    @property
    def n_layers(self) -> int:
        return len(self.layer_labels) - 1

    @property
    def row_length(self) -> Int[Tensor, " row"]:
        """The answer length ``n`` of each row's fact."""
        lengths = torch.tensor([len(a) for a in self.answer_tokens], dtype=torch.long)
        return lengths[self.row_fact]

    @cached_property
    def _onsets(self) -> Onsets:
        return compute_onsets(self.ranks, self.ks)

    @property
    def first(self) -> Int[Tensor, "k row"]:
        """First-crossing onsets ``[k, row]`` (-1 = never inside the top-k)."""
        return self._onsets.first

    @property
    def stable(self) -> Int[Tensor, "k row"]:
        """Stable onsets ``[k, row]`` (-1 = not inside the top-k at the last layer)."""
        return self._onsets.stable

    @cached_property
    def curves(self) -> tuple[OnsetCurve, ...]:
        """Aggregated onsets per (length, position, outcome), first and stable, sorted."""
        length, pos, ok = self.row_length, self.row_position, self.correct
        keys = sorted({(int(n), int(j), bool(c)) for n, j, c in zip(length, pos, ok, strict=True)},
                      key=lambda t: (t[0], t[1], not t[2]))
        out: list[OnsetCurve] = []
        for n, j, c in keys:
            sel = (length == n) & (pos == j) & (ok == c)
            o = self._onsets
            sub = Onsets(self.ks, o.first[:, sel], o.stable[:, sel], o.n_layers)
            out.extend(aggregate_onsets(sub, [_group(n, j, c)] * int(sel.sum())))
        return tuple(out)

    @property
    def skip_counts(self) -> dict[str, int]:
        """How many facts were skipped for each reason."""
        return dict(Counter(reason for _, reason in self.skipped))

    @property
    def answer_correct(self) -> Bool[Tensor, " fact"]:
        """Per analysed fact: every answer token correct (greedy decoding gives the answer)."""
        wrong = torch.zeros(len(self.facts), dtype=torch.long)
        wrong.index_add_(0, self.row_fact, (~self.correct).long())
        return wrong == 0

    def curve(self, n: int, j: int, correct: bool, kind: OnsetKind = "first") -> OnsetCurve | None:
        """The curve of one group, or None if that group has no rows."""
        for c in self.curves:
            if c.group == _group(n, j, correct) and c.kind == kind:
                return c
        return None

    def summary(self, ks: Sequence[int] = (1, 10)) -> Any:
        """One row per (length, position, outcome): N and median first / stable onsets at ``ks``.

        Every (length, position) present gets both outcomes, with N = 0 where none.
        """
        import pandas as pd

        bad = [k for k in ks if k not in self.ks]
        if bad:
            raise GltError(f"ks {bad} are not on this result's grid {self.ks}: pick from it")
        rows = []
        length = self.row_length
        for n, j in sorted({(int(n), int(j)) for n, j in zip(length, self.row_position, strict=True)}):
            for outcome in _OUTCOMES:
                row: dict[str, Any] = {"length": n, "position": j, "outcome": outcome}
                row["n"] = int(((length == n) & (self.row_position == j)
                                & (self.correct == (outcome == "correct"))).sum())
                for kind in ("first", "stable"):
                    c = self.curve(n, j, outcome == "correct", kind)
                    for k in ks:
                        i = self.ks.index(k)
                        row[f"median_{kind}_k{k}"] = c.median[i] if c else float("nan")
                        row[f"n_crossed_{kind}_k{k}"] = c.n_crossed[i] if c else 0
                rows.append(row)
        return pd.DataFrame(rows)

    def to_dataframe(self) -> Any:
        """Long table of the onset curves: one row per (length, position, outcome, kind, k)."""
        import pandas as pd

        rows = []
        for c in self.curves:
            n, j, outcome = c.group.split("/")
            for i, k in enumerate(c.ks):
                rows.append({
                    "model": self.model, "lens": self.lens, "length": int(n[3:]),
                    "position": int(j[3:]), "outcome": outcome, "kind": c.kind, "k": k, "n": c.n,
                    "n_crossed": c.n_crossed[i], "mean": c.mean[i], "median": c.median[i],
                    "q25": c.q25[i], "q75": c.q75[i],
                })
        return pd.DataFrame(rows)

    def token_dataframe(self) -> Any:
        """One row per answer token: fact, position, tokens, correctness, final rank, onsets."""
        import pandas as pd

        out, length = [], self.row_length
        for r in range(int(self.row_fact.shape[0])):
            f = self.facts[int(self.row_fact[r])]
            row = {"fact": int(self.row_fact[r]), "prompt": f.prompt, "answer": f.answer,
                   "relation": f.relation, "length": int(length[r]),
                   "position": int(self.row_position[r]), "gold": int(self.gold[r]),
                   "tracked": int(self.tracked[r]), "correct": bool(self.correct[r]),
                   "final_rank": int(self.ranks[-1, r])}
            for i, k in enumerate(self.ks):
                row[f"first_k{k}"] = int(self.first[i, r])
                row[f"stable_k{k}"] = int(self.stable[i, r])
            out.append(row)
        return pd.DataFrame(out)
