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
from typing import Any, Literal

import torch
from torch import Tensor
from tqdm.auto import tqdm

from glt.core._capture import iter_residuals, model_tokenizer
from glt.core._check import checked, layer_indices
from glt.core._codec import tensor_fields
from glt.core._errors import GltError
from glt.core._models import model_name
from glt.data._frequency import TokenFrequency
from glt.data._wikipedia import WIKI_SOURCE, wikipedia_paragraphs
from glt.decoding._readout import readout
from glt.lenses._protocol import Lens, lens_set
from glt.studies.guess_then_refine._inputs import resolve_frequency, token_ids
from glt.studies.guess_then_refine._result import GuessRefineResult

__all__ = ["run_guess_then_refine"]


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
        ids = token_ids(model, text, i)
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


@checked
def run_guess_then_refine(
    model: Any,
    lens: Lens | Sequence[Lens],
    texts: Iterable[Any] | None = None,
    *,
    frequency: TokenFrequency | str | os.PathLike | None = None,
    max_positions: int | None = 1000,
    max_positions_per_text: int | None = None,
    batch_size: int = 8,
    cuts: Literal["all", "random"] = "all",
    seed: int = 0,
    early_layers: Sequence[int] | None = None,
    source: str | None = None,
    progress: bool = True,
) -> GuessRefineResult | dict[str, GuessRefineResult]:
    """Decode every prefix of ``texts`` at every layer and bucket each layer's top-1 by frequency.

    Args:
        model: a TransformerLens model (its tokenizer turns texts into ids as `glt.tokenize`).
        lens: a `glt.Lens` for ``model`` (`glt.LogitLens`, `glt.TunedLens` or a lens of your own),
            or a list of lenses with distinct names: each batch's residuals are then captured once
            and decoded with every lens, and the result is ``{lens.name: GuessRefineResult}``
            (each equal to the result of that lens alone).
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
    n_layers = int(model.cfg.n_layers)
    lenses, single = lens_set(lens)
    for one in lenses.values():
        one.check_compatible(n_layers + 1, int(model.cfg.d_model))
    d_vocab = next(iter(lenses.values())).unembed.d_vocab
    early = (tuple(range(1, 1 + max(1, n_layers // 4))) if early_layers is None
             else layer_indices(early_layers, name="early_layers", last=n_layers))
    frequency = resolve_frequency(model, frequency, d_vocab)
    if texts is None:
        texts, source = wikipedia_paragraphs("heldout"), source or f"{WIKI_SOURCE}, held-out paragraphs"
    if isinstance(texts, str):
        raise GltError("texts must be a list of texts, got one string: wrap it in a list")
    plan, counts = _plan(model, texts, cuts, max_positions, seed, max_positions_per_text)
    if counts["n_texts_seen"] == 0:
        raise GltError("texts is empty: pass at least one text")
    if not plan:
        raise GltError(f"no readable prefix in the {counts['n_texts_seen']} texts ({counts}): pass longer texts")

    fields = [k for k in tensor_fields(GuessRefineResult) if k != "bucket"]
    parts: dict[str, dict[str, list[Tensor]]] = {name: {k: [] for k in fields} for name in lenses}
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
        for name, one in lenses.items():  # the same residuals, decoded by every lens
            r = readout(stack, one, positions=read, top_k=1)
            bi, pi = r.batch_index.cpu(), r.pos_index.cpu()
            top1 = r.top1.cpu().clone()
            top1[-1] = r.targets[:, 0].cpu()  # the tracked final top-1 (lowest id among ties)
            part = parts[name]
            part["text_index"].append(torch.tensor([it[0] for it in items], dtype=torch.long)[bi])
            part["pos_index"].append(pi)
            part["gold"].append(gold[bi, pi])
            part["top1"].append(top1)
            part["rank_final"].append(r.ranks[..., 0].cpu())
            part["max_prob"].append(r.max_prob.cpu().float())
    results = {name: _result(model, name, {k: torch.cat(v, -1) for k, v in part.items()}, stack.labels,
                             frequency=frequency, source=source, cuts=cuts, seed=seed, early=early, counts=counts)
               for name, part in parts.items()}
    return results[next(iter(lenses))] if single else results


def _result(model: Any, lens_name: str, cat: dict[str, Tensor], labels: Sequence[str], *, frequency: TokenFrequency,
            source: str | None, cuts: str, seed: int, early: tuple[int, ...], counts: dict[str, int]
            ) -> GuessRefineResult:
    return GuessRefineResult(
        model=model_name(model),
        lens=lens_name,
        data_source=source or "user texts",
        cuts=cuts,
        seed=seed,
        layer_labels=tuple(labels),
        bucket_labels=frequency.labels,
        early_layers=early,
        frequency=frequency.provenance(),
        composition=tuple(frequency.composition()),
        counts=counts,
        bucket=frequency.bucket_of(cat["top1"]),
        **cat,
    )
