"""Guess-then-Refine: which frequency bucket each layer's top-1 falls in, and how often it flips.

Every position of a text is a prefix: the read-out at position ``p`` predicts token ``p + 1``, so
one forward pass over a passage yields many prefixes (``cuts="all"``). The paper's random cuts
(one random prefix length per passage) are ``cuts="random"``.

Conventions:

* layers are residual indices (0 = embeddings, ``n_layers`` = final residual, see
  `glt.ResidualStack`); the *final* top-1 is the read-out's tracked token at the last index (the
  lowest id among maximal logits);
* a *flip* at layer ``l``: the layer's top-1 differs from the final top-1;
* gold-aware split at layer ``l`` against the true next token: the first word says whether the
  layer's top-1 equals the gold token, the second whether the final top-1 does
  (``right->wrong``: the layer had it, the model's output lost it);
* the prefix made of BOS alone (position 0 when the tokenizer adds a BOS) is not read, and the
  last position of each text has no gold next token: it counts in the bucket shares and flip
  rates but not in the gold-aware split. Both are counted in `GuessRefineResult.counts`;
* "early" layers default to the first quarter of the blocks, without the embeddings:
  ``1 .. max(1, n_layers // 4)`` (``1 .. 4`` for an 18-layer model).
"""

import os
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from glt._capture import iter_residuals, model_tokenizer
from glt._errors import GltError
from glt._frequency import TokenFrequency, load_frequency
from glt._io import malformed, read_json, write_json
from glt._models import model_name
from glt._readout import readout

__all__ = ["GOLD_CLASSES", "GuessRefineResult", "run_guess_then_refine"]

#: The gold-aware four-way split: (layer top-1 right?) -> (final top-1 right?).
GOLD_CLASSES: tuple[str, ...] = ("right->right", "right->wrong", "wrong->right", "wrong->wrong")
_FORMAT = "glt.GuessRefineResult/1"
_TENSORS = {
    "text_index": torch.long, "pos_index": torch.long, "gold": torch.long,
    "top1": torch.long, "bucket": torch.long, "rank_final": torch.long, "max_prob": torch.float32,
}


@dataclass(frozen=True, eq=False)
class GuessRefineResult:
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
        layers = tuple(self.early_layers if layers is None else layers)
        if not layers or any(not 0 <= int(x) <= self.n_layers for x in layers):
            raise GltError(f"layers must be residual indices in [0, {self.n_layers}], got {layers}")
        idx = list(layers)
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

    def save(self, path: str | os.PathLike) -> Path:
        """Write the result (per-position arrays included) to a JSON file, atomically."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        return write_json(path, {"format": _FORMAT, **data})

    @classmethod
    def load(cls, path: str | os.PathLike) -> "GuessRefineResult":
        """Read a result written by `save` (GltError if missing, corrupt or not a result)."""
        data = read_json(path, "guess-then-refine result")
        if not isinstance(data, dict) or data.pop("format", None) != _FORMAT:
            raise GltError(f"{path} is not a glt guess-then-refine result: pass a file from .save()")
        with malformed(path, "guess-then-refine result", "re-run and save"):
            kw = {f.name: data[f.name] for f in fields(cls)}
            for name, dtype in _TENSORS.items():
                kw[name] = torch.tensor(kw[name], dtype=dtype)
                if name in ("top1", "bucket", "rank_final", "max_prob"):
                    kw[name] = kw[name].reshape(len(data["layer_labels"]), -1)
            for name in ("layer_labels", "bucket_labels", "early_layers", "composition"):
                kw[name] = tuple(kw[name])
            return cls(**kw)


def _default_frequency(model: Any) -> TokenFrequency:
    name = model_name(model)
    if name == "gemma-3-270m":
        return load_frequency("default")
    raise GltError(
        f"frequency: glt ships a table only for the default model, not for {name!r}: build one "
        "with glt.TokenFrequency.from_texts(glt._corpus.wikipedia_paragraphs(), model) and pass "
        "frequency=..."
    )


def _token_ids(model: Any, text: Any, i: int) -> list[int]:
    """Token ids of one text exactly as `glt.tokenize` gives them (ids pass through, checked)."""
    if isinstance(text, str):
        tok = model_tokenizer(model)
        if tok is None:
            raise GltError("texts are strings but the model has no tokenizer: pass token id lists")
        return [int(t) for t in tok(text, add_special_tokens=True)["input_ids"]]
    if isinstance(text, (Sequence, Tensor)) and not isinstance(text, (bytes, dict)):
        ids = [int(t) for t in (text.tolist() if isinstance(text, Tensor) else text)]
        d_vocab = int(model.cfg.d_vocab)
        if any(t < 0 or t >= d_vocab for t in ids):
            raise GltError(f"texts[{i}] has token ids outside [0, {d_vocab}): pass valid ids")
        return ids
    raise GltError(f"texts[{i}] must be a string or a list of token ids, got {type(text).__name__}")


def _plan(
    model: Any, texts: Iterable[Any], cuts: str, max_positions: int | None, seed: int,
    per_text: int | None = None,
) -> tuple[list[tuple[int, list[int], int, list[int]]], dict[str, int]]:
    """Choose read positions: ``(text index, forward ids, first read pos, golds)`` per text."""
    tok = model_tokenizer(model)
    bos = getattr(tok, "bos_token_id", None)
    n_ctx = int(model.cfg.n_ctx)
    rng = random.Random(seed)
    counts = {"n_texts_seen": 0, "n_texts_used": 0, "skipped_empty_text": 0,
              "skipped_too_short": 0, "skipped_bos_only_prefix": 0, "skipped_beyond_context": 0,
              "n_no_gold_last_position": 0, "unread_after_max_positions": 0,
              "unread_after_max_positions_per_text": 0, "n_texts_unused": 0}
    plan, budget = [], max_positions if max_positions is not None else -1
    for i, text in enumerate(texts):
        if budget == 0:
            counts["n_texts_unused"] = len(texts) - i if hasattr(texts, "__len__") else -1
            break
        counts["n_texts_seen"] += 1
        if isinstance(text, str) and not text.strip():
            counts["skipped_empty_text"] += 1
            continue
        ids = _token_ids(model, text, i)
        first = 1 if bos is not None and ids[:1] == [bos] else 0
        last = min(len(ids), n_ctx) - 1  # last readable position
        if cuts == "random":
            last = min(last, len(ids) - 2)  # a random cut always has a gold token
            if last < first:
                counts["skipped_too_short"] += 1
                continue
            first = last = rng.randint(first, last)
        elif last < first:
            counts["skipped_too_short"] += 1
            continue
        else:
            counts["skipped_bos_only_prefix"] += first
            counts["skipped_beyond_context"] += max(0, len(ids) - n_ctx)
            if per_text is not None and last - first + 1 > per_text:
                counts["unread_after_max_positions_per_text"] += last - first + 1 - per_text
                last = first + per_text - 1
        take = last - first + 1 if budget < 0 else min(last - first + 1, budget)
        counts["unread_after_max_positions"] += last - first + 1 - take
        golds = [ids[p + 1] if p + 1 < len(ids) else -1 for p in range(first, first + take)]
        counts["n_no_gold_last_position"] += golds.count(-1)
        plan.append((i, ids[: first + take], first, golds))
        counts["n_texts_used"] += 1
        budget -= take if budget > 0 else 0
    return plan, counts


def run_guess_then_refine(
    model: Any,
    lens: Any,
    texts: Iterable[Any] | None = None,
    *,
    frequency: TokenFrequency | str | os.PathLike | None = None,
    max_positions: int | None = 1000,
    max_positions_per_text: int | None = None,
    batch_size: int = 8,
    cuts: str = "all",
    seed: int = 0,
    early_layers: Sequence[int] | None = None,
    source: str | None = None,
    progress: bool = True,
) -> GuessRefineResult:
    """Decode every prefix of ``texts`` at every layer and bucket each layer's top-1 by frequency.

    Args:
        model: a TransformerLens model (its tokenizer turns texts into ids as `glt.tokenize`).
        lens: a `glt.LogitLens`, a tuned lens, or any object with the lens contract.
        texts: strings or token id lists; default: the held-out Wikipedia paragraphs.
        frequency: the `glt.TokenFrequency` table that defines the buckets, or a name / folder
            for `glt.load_frequency`; default: the shipped table for the default model (other
            models must pass one).
        max_positions: stop after this many read positions (None: read everything); with
            ``cuts="all"`` the last text used may be read only in part.
        max_positions_per_text: with ``cuts="all"``, read at most the first this many prefixes
            of each text (their gold tokens still come from the whole text, so only a text's
            true last position lacks one); None: every position.
        batch_size: texts per forward pass; memory stays flat (one batch of residuals at a time).
        cuts: ``"all"`` (every position is a prefix) or ``"random"`` (one random prefix length
            per text, the paper's protocol, with ``seed``).
        seed: seed of the random cuts.
        early_layers: residual indices pooled as "early" in the headline (default above).
        source: a description of ``texts`` for provenance.
        progress: show a tqdm progress bar.

    Returns:
        A frozen `GuessRefineResult`.

    Example:
        >>> # model = glt.load_model(); lens = glt.LogitLens.from_model(model)
        >>> # res = glt.run_guess_then_refine(model, lens, max_positions=500)
        >>> # res.headline()["top_share_early"], res.to_dataframe()
    """
    from tqdm.auto import tqdm

    if cuts not in ("all", "random"):
        raise GltError(f"cuts must be 'all' or 'random', got {cuts!r}")
    if max_positions is not None and (not isinstance(max_positions, int) or max_positions < 1):
        raise GltError(f"max_positions must be a positive int or None, got {max_positions!r}")
    if max_positions_per_text is not None and (
        not isinstance(max_positions_per_text, int) or max_positions_per_text < 1
    ):
        raise GltError(
            f"max_positions_per_text must be a positive int or None, got {max_positions_per_text!r}"
        )
    if not isinstance(batch_size, int) or batch_size < 1:
        raise GltError(f"batch_size must be a positive int, got {batch_size!r}")
    if not hasattr(lens, "unembed") or not hasattr(lens, "check_compatible"):
        raise GltError(f"lens must follow the lens contract (glt.LogitLens, TunedLens), got {type(lens).__name__}")
    n_layers = int(model.cfg.n_layers)
    lens.check_compatible(n_layers + 1, int(model.cfg.d_model))
    early = tuple(range(1, 1 + max(1, n_layers // 4))) if early_layers is None else tuple(early_layers)
    if not early or any(not isinstance(x, int) or not 0 <= x <= n_layers for x in early):
        raise GltError(f"early_layers must be residual indices in [0, {n_layers}], got {early_layers!r}")
    if frequency is None:
        frequency = _default_frequency(model)
    elif isinstance(frequency, (str, os.PathLike)):
        frequency = load_frequency(frequency)
    if not isinstance(frequency, TokenFrequency):
        raise GltError(f"frequency must be a glt.TokenFrequency, got {type(frequency).__name__}")
    if frequency.d_vocab != lens.unembed.d_vocab:
        raise GltError(
            f"frequency table covers {frequency.d_vocab} token ids (tokenizer "
            f"{frequency.tokenizer!r}) but the model's vocabulary has {lens.unembed.d_vocab}: build "
            "the table with this model's tokenizer: TokenFrequency.from_texts(texts, model)"
        )
    if texts is None:
        from glt._corpus import WIKI_SOURCE, wikipedia_paragraphs

        texts, source = wikipedia_paragraphs("heldout"), source or f"{WIKI_SOURCE}, held-out paragraphs"
    if isinstance(texts, str):
        raise GltError("texts must be a list of texts, got one string: wrap it in a list")
    plan, counts = _plan(model, texts, cuts, max_positions, seed, max_positions_per_text)
    if counts["n_texts_seen"] == 0:
        raise GltError("texts is empty: pass at least one text")
    if not plan:
        raise GltError(f"no readable prefix in the {counts['n_texts_seen']} texts ({counts}): pass longer texts")

    parts: dict[str, list[Tensor]] = {k: [] for k in _TENSORS if k != "bucket"}
    stacks = iter_residuals(model, [ids for _, ids, _, _ in plan], batch_size=batch_size)
    batches = range(0, len(plan), batch_size)
    for start, stack in tqdm(zip(batches, stacks, strict=True), total=len(batches),
                             disable=not progress, desc="guess-then-refine"):
        items = plan[start : start + batch_size]
        read = torch.zeros_like(stack.mask)
        gold = torch.full(stack.mask.shape, -1, dtype=torch.long)
        for b, (_, _, first, golds) in enumerate(items):
            read[b, first : first + len(golds)] = True
            gold[b, first : first + len(golds)] = torch.tensor(golds, dtype=torch.long)
        r = readout(stack, lens, positions=read, top_k=1)
        bi, pi = r.batch_index.cpu(), r.pos_index.cpu()
        top1 = r.top1.cpu().clone()
        top1[-1] = r.targets[:, 0].cpu()  # the tracked final top-1 (lowest id among ties)
        parts["text_index"].append(torch.tensor([it[0] for it in items], dtype=torch.long)[bi])
        parts["pos_index"].append(pi)
        parts["gold"].append(gold[bi, pi])
        parts["top1"].append(top1)
        parts["rank_final"].append(r.ranks[..., 0].cpu())
        parts["max_prob"].append(r.max_prob.cpu().float())
    cat = {k: torch.cat(v, -1) for k, v in parts.items()}
    return GuessRefineResult(
        model=model_name(model),
        lens=str(getattr(lens, "name", type(lens).__name__)),
        data_source=source or "user texts",
        cuts=cuts,
        seed=seed,
        layer_labels=tuple(stack.labels),
        bucket_labels=frequency.labels,
        early_layers=early,
        frequency=frequency.provenance(),
        composition=tuple(frequency.composition()),
        counts=counts,
        bucket=frequency.bucket_of(cat["top1"]),
        **cat,
    )
