"""The result of `glt.run_guess_then_refine`: each layer's top-1, its frequency bucket, and flips.

`GuessRefineResult` keeps one row per read prefix with every layer's top-1 token, its frequency
bucket, the rank of the final top-1 and the gold next token; it derives bucket shares, flip rates
and the gold-aware split per layer (conventions in `glt.studies.guess_then_refine._run`), tabulates them and
saves/loads as JSON.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from glt.core._check import layer_indices
from glt.core._codec import Format, Saved

__all__ = ["GOLD_CLASSES", "GuessRefineResult"]

#: The gold-aware four-way split: (layer top-1 right?) -> (final top-1 right?).
GOLD_CLASSES: tuple[str, ...] = ("right->right", "right->wrong", "wrong->right", "wrong->wrong")


@dataclass(frozen=True, eq=False)
class GuessRefineResult(Saved):
    """Per-position lens top-1 tokens with their frequency buckets, and the study's aggregates.

    The per-position arrays are kept (``n`` = read positions) so later analyses (early exit,
    other bucketings) can reuse them without re-running the model.

    Attributes:
        model, lens, data_source: provenance.
        cuts, seed: how prefixes were chosen (``"all"`` positions, or ``"random"``: one per text).
        layer_labels: one label per residual index.
        bucket_labels: labels of the frequency buckets (``bucket`` indexes them).
        early_layers: the layers pooled as "early" in `headline`.
        frequency: provenance of the frequency table.
        composition: share of the frequency corpus's tokens in each bucket.
        counts: texts seen / used and every item not read, by reason: ``skipped_empty_text``,
            ``skipped_too_short`` (no prefix with a next token), ``skipped_bos_only_prefix``,
            ``skipped_beyond_context`` (positions past ``n_ctx``), ``n_no_gold_last_position``
            (read, but left out of the gold split), ``unread_after_max_positions`` (positions
            of the last text left unread at the cap), ``unread_after_max_positions_per_text``
            and ``n_texts_unused`` (texts after the
            cap; -1 when ``texts`` is an iterator of unknown length).
        text_index, pos_index: ``[n]`` which text and token position each prefix ends at.
        gold: ``[n]`` the true next token (-1 at a text's last position: none).
        top1: ``[layer, n]`` the lens top-1 (the last layer is the final top-1).
        bucket: ``[layer, n]`` the bucket of ``top1``.
        rank_final: ``[layer, n]`` 0-based rank of the final top-1 at each layer.
        max_prob: ``[layer, n]`` the lens top-1 probability.
    """

    _format: ClassVar[Format] = Format(
        "glt.GuessRefineResult", "guess-then-refine result", "re-run and save",
        legacy=(("format", "glt.GuessRefineResult/1"),), sizes={"layer": "layer_labels"})

    model: str
    lens: str
    data_source: str
    cuts: str
    seed: int
    layer_labels: tuple[str, ...]
    bucket_labels: tuple[str, ...]
    early_layers: tuple[int, ...]
    frequency: dict
    composition: tuple[dict, ...]
    counts: dict
    text_index: Int[Tensor, " n"]
    pos_index: Int[Tensor, " n"]
    gold: Int[Tensor, " n"]
    top1: Int[Tensor, "layer n"]
    bucket: Int[Tensor, "layer n"]
    rank_final: Int[Tensor, "layer n"]
    max_prob: Float[Tensor, "layer n"]

    @property
    def n_positions(self) -> int:
        return int(self.gold.shape[0])

    @property
    def n_layers(self) -> int:
        """Number of blocks (arrays hold ``n_layers + 1`` residual indices)."""
        return len(self.layer_labels) - 1

    @property
    def final_top1(self) -> Int[Tensor, " n"]:
        return self.top1[-1]

    @property
    def flip(self) -> Bool[Tensor, "layer n"]:
        """``[layer, n]`` True where the layer's top-1 differs from the final top-1."""
        return self.top1 != self.top1[-1:]

    @property
    def has_gold(self) -> Bool[Tensor, " n"]:
        return self.gold >= 0

    def _per_bucket(self, values: Tensor) -> Tensor:
        """Sum ``values [layer, n]`` into ``[layer, bucket]`` by each layer's bucket."""
        out = torch.zeros(self.top1.shape[0], len(self.bucket_labels), dtype=torch.long)
        return out.scatter_add_(1, self.bucket, values.long())

    @property
    def bucket_counts(self) -> Int[Tensor, "layer bucket"]:
        """Positions whose layer top-1 falls in each bucket."""
        return self._per_bucket(torch.ones_like(self.bucket))

    @property
    def bucket_share(self) -> Float[Tensor, "layer bucket"]:
        """Share of positions whose layer top-1 falls in each bucket (rows sum to 1)."""
        return self.bucket_counts.double() / max(self.n_positions, 1)

    @property
    def flip_counts(self) -> Int[Tensor, "layer bucket"]:
        """Flipped positions per layer and bucket (out of `bucket_counts`)."""
        return self._per_bucket(self.flip)

    @property
    def flip_rate(self) -> Float[Tensor, "layer bucket"]:
        """Flip rate per layer and bucket (NaN where the bucket is empty at that layer)."""
        n = self.bucket_counts.double()
        return torch.where(n > 0, self.flip_counts.double() / n.clamp_min(1), torch.nan)

    @property
    def gold_split(self) -> Int[Tensor, "layer bucket cls"]:
        """Counts of `GOLD_CLASSES` per layer and bucket, over positions with a gold token.

        Example:
            >>> GOLD_CLASSES.index("right->wrong")  # the layer had the gold token, the output lost it
            1
        """
        g = self.has_gold
        right = self.top1[:, g] == self.gold[g]
        final_right = right[-1:].expand_as(right)
        cls = (~right).long() * 2 + (~final_right).long()  # rr=0, rw=1, wr=2, ww=3
        idx = self.bucket[:, g] * 4 + cls
        out = torch.zeros(self.top1.shape[0], len(self.bucket_labels) * 4, dtype=torch.long)
        out.scatter_add_(1, idx, torch.ones_like(idx))
        return out.view(self.top1.shape[0], len(self.bucket_labels), 4)

    def headline(self, layers: Sequence[int] | None = None) -> dict[str, Any]:
        """The paper's headline numbers, pooled over ``layers`` (default `early_layers`).

        Returns a dict with the top bucket's share of layer top-1s over the early layers and at
        the final layer, the early flip rate of top-bucket guesses, the final accuracy against
        the gold token, and the N behind each.
        """
        layers = self.early_layers if layers is None else layers
        idx = list(layer_indices(layers, name="layers", last=self.n_layers))
        n_early = self.n_positions * len(idx)
        top_early = int(self.bucket_counts[idx, 0].sum())
        flips_early = int(self.flip_counts[idx, 0].sum())
        g = self.has_gold
        n_gold = int(g.sum())
        return {
            "top_bucket": self.bucket_labels[0],
            "early_layers": idx,
            "early_layer_labels": [self.layer_labels[i] for i in idx],
            "top_share_early": top_early / n_early if n_early else float("nan"),
            "n_early": n_early,
            "top_share_final": float(self.bucket_share[-1, 0]),
            "n_final": self.n_positions,
            "top_flip_rate_early": flips_early / top_early if top_early else float("nan"),
            "n_top_early": top_early,
            "final_accuracy": float((self.final_top1[g] == self.gold[g]).double().mean())
            if n_gold else float("nan"),
            "n_gold": n_gold,
        }

    def to_dataframe(self) -> Any:
        """Long table, one row per (layer, bucket): counts, shares, flip rates, gold split."""
        import pandas as pd

        n, share = self.bucket_counts, self.bucket_share
        flips, rate, split = self.flip_counts, self.flip_rate, self.gold_split
        rows = []
        for layer, label in enumerate(self.layer_labels):
            for b, bucket in enumerate(self.bucket_labels):
                row = {
                    "layer": layer, "layer_label": label, "bucket": bucket, "n": int(n[layer, b]),
                    "share": float(share[layer, b]), "n_flip": int(flips[layer, b]),
                    "flip_rate": float(rate[layer, b]), "n_gold": int(split[layer, b].sum()),
                }
                row.update({c: int(split[layer, b, k]) for k, c in enumerate(GOLD_CLASSES)})
                rows.append(row)
        return pd.DataFrame(rows)
