"""The part-of-speech study (the paper's Fig. 4a): at what depth does each word class settle?

Each item is a prefix of a text, the part-of-speech tag of the word that follows it, and that
word's **first token** (the gold token, found by character offsets, see `glt.studies.part_of_speech._align`). The
tracked token is always the gold token; the read-out position is the token just before it.

Two constructions:

* ``"first"`` (the paper's): for each tag T and each text, the prefix is the text before the
  first word tagged T. If that word is unusable (it starts mid-token, its prefix is too short,
  ...) the (text, T) pair is skipped with the reason; later words tagged T are not tried, as in
  the paper.
* ``"every"``: every word of a text whose tag is requested is an item; one forward pass per text
  gives all of them.

The prefix is the full text's tokens before the gold token (so the prefix tokenises exactly as
inside the text, and a word after a stand-alone space token, such as Gemma's digits after
``"▁"``, keeps that space in its prefix). Tags come from tagging the whole text, as in the paper.
An item is *correct* when the final layer's top-1 equals the gold token; the paper keeps only
those (``correct_only=True``). The paper also counted the word's first token with the other
leading-space variant as correct; glt does not, since that token spells a different text. By default
both are kept and reported apart, each with its N. Onsets (first crossing and stable, rank < k with 0-based
ranks) follow `glt.decoding._onsets`;
curves are labelled ``"{subset}/{label}"`` with subset ``correct``, ``incorrect`` or ``all`` and
label a tag or a group (``function``: ADP AUX CCONJ DET PART PRON SCONJ; ``content``: ADJ ADV
INTJ NOUN PROPN VERB; ``other``: NUM PUNCT SYM X).
"""

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from glt.core._capture import iter_residuals, model_tokenizer
from glt.core._check import checked
from glt.core._codec import Format, Saved
from glt.core._errors import GltError
from glt.core._models import model_name
from glt.decoding._onsets import (
    K_GRID,
    OnsetCurve,
    OnsetKind,
    Onsets,
    aggregate_onsets,
    compute_onsets,
    topk_churn,
)
from glt.decoding._readout import readout
from glt.lenses._protocol import Lens, lens_set
from glt.studies.part_of_speech._align import (
    CONTENT_TAGS,
    FUNCTION_TAGS,
    OTHER_TAGS,
    SKIP_UNREAD,
    SKIP_WRONG,
    PosItem,
    Tagger,
    check_tags,
    collect_items,
    pos_group,
    spacy_tagger,
    texts_iter,
)

__all__ = ["PAPER_TAGS", "PosResult", "run_pos_study"]

#: The tags of the paper's Fig. 4a.
PAPER_TAGS: tuple[str, ...] = ("DET", "ADP", "PUNCT", "NOUN", "VERB", "ADJ")
GROUPS = {"function": FUNCTION_TAGS, "content": CONTENT_TAGS, "other": OTHER_TAGS}


@dataclass(frozen=True, eq=False)
class PosResult(Saved):
    """Result of `run_pos_study`: per-item ranks of the gold token and their aggregates.

    Attributes:
        model, lens, data_source: provenance.
        construction: ``"first"`` or ``"every"``; tags: the requested tags; ks: the k grid.
        layer_labels: one label per residual index (0 = embeddings ... final).
        correct_only, min_prefix_chars: the options used.
        texts: the texts read (items point into them).
        items: one `PosItem` per item; ranks / logprobs: ``[layer, item]`` 0-based rank and
            log-probability of the gold token; correct: ``[item]`` final top-1 == gold.
        curves: onset curves, group ``"{subset}/{label}"`` (see the module docstring).
        candidates: per tag: word occurrences and distinct (lower-cased) word types in the texts
            read, items, distinct word types and gold tokens among items and correct items.
        churn: per subset, label and k: items, total entries into and exits from the top-k.
        skipped: ``(tag, reason, count)`` for everything not turned into an item.

    Example:
        >>> # res = glt.run_pos_study(model, lens)
        >>> # res.curve("DET", subset="correct").mean   # mean first-crossing layer per k
        >>> # res.summary_dataframe(k=1); res.candidates_dataframe(); res.save("pos.json")
    """

    _format: ClassVar[Format] = Format(
        "glt.PosResult", "part-of-speech result", "rerun the study", legacy=(("format", "glt.PosResult/1"),),
        sizes={"layer": "layer_labels", "item": "items"})

    model: str
    lens: str
    data_source: str
    construction: str
    tags: tuple[str, ...]
    ks: tuple[int, ...]
    layer_labels: tuple[str, ...]
    correct_only: bool
    min_prefix_chars: int
    texts: tuple[str, ...]
    items: tuple[PosItem, ...]
    ranks: Int[Tensor, "layer item"]
    logprobs: Float[Tensor, "layer item"]
    correct: Bool[Tensor, " item"]
    curves: tuple[OnsetCurve, ...]
    candidates: tuple[dict, ...]
    churn: tuple[dict, ...]
    skipped: tuple[tuple[str, str, int], ...]

    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def skipped_by_reason(self) -> dict[str, int]:
        """Skip counts summed over tags, per reason."""
        out: Counter = Counter()
        for _, reason, n in self.skipped:
            out[reason] += n
        return dict(out)

    def curve(self, label: str, *, subset: Literal["correct", "incorrect", "all"] = "correct",
              kind: OnsetKind = "first") -> OnsetCurve:
        """The onset curve of a tag or group (``label``) for ``subset`` and ``kind``."""
        name = f"{subset}/{label}"
        for c in self.curves:
            if c.group == name and c.kind == kind:
                return c
        have = sorted({c.group for c in self.curves})
        raise GltError(f"no {kind!r} curve {name!r}: available groups are {have}")

    def to_dataframe(self) -> Any:
        """One row per item: tag, group, word, gold token, final rank, correctness, k=1 onsets."""
        import pandas as pd

        ons = compute_onsets(self.ranks, (1,))
        return pd.DataFrame(
            {
                "text_index": [it.text_index for it in self.items],
                "start": [it.start for it in self.items],
                "word": [it.word for it in self.items],
                "tag": [it.tag for it in self.items],
                "group": [pos_group(it.tag) for it in self.items],
                "token_pos": [it.token_pos for it in self.items],
                "answer_id": [it.answer_id for it in self.items],
                "answer_token": [it.answer_token for it in self.items],
                "final_rank": self.ranks[-1].tolist(),
                "correct": self.correct.tolist(),
                "onset_first_k1": ons.first[0].tolist(),
                "onset_stable_k1": ons.stable[0].tolist(),
            }
        )

    def candidates_dataframe(self) -> Any:
        """Per tag: candidate words and gold tokens (the closed-class confound), with counts."""
        import pandas as pd

        return pd.DataFrame(list(self.candidates))

    def churn_dataframe(self) -> Any:
        """Per subset, label and k: items, entries into and exits from the top-k."""
        import pandas as pd

        return pd.DataFrame(list(self.churn))

    def curves_dataframe(self) -> Any:
        """Long table of the onset curves: subset, label, kind, k, n, n_crossed and statistics."""
        import pandas as pd

        rows = []
        for c in self.curves:
            subset, label = c.group.split("/", 1)
            for i, k in enumerate(c.ks):
                rows.append({"subset": subset, "label": label, "kind": c.kind, "k": k, "n": c.n,
                             "n_crossed": c.n_crossed[i], "mean": c.mean[i],
                             "median": c.median[i], "q25": c.q25[i], "q75": c.q75[i]})
        return pd.DataFrame(rows)

    def summary_dataframe(self, k: int = 1) -> Any:
        """Per subset and label at threshold ``k``: N, N crossed, mean / median first and stable onset."""
        import pandas as pd

        if k not in self.ks:
            raise GltError(f"k={k} is not on this result's k grid {self.ks}: pick one of them")
        i = self.ks.index(k)
        rows: dict[str, dict] = {}
        for c in self.curves:
            row = rows.setdefault(c.group, {"subset": c.group.split("/")[0],
                                            "label": c.group.split("/", 1)[1], "n": c.n})
            row[f"{c.kind}_n_crossed"] = c.n_crossed[i]
            row[f"{c.kind}_mean"] = c.mean[i]
            row[f"{c.kind}_median"] = c.median[i]
        return pd.DataFrame(list(rows.values()))

    def to_json(self) -> dict[str, Any]:
        """The JSON object `save` writes (the fields, plus the tag groups for readers of the file)."""
        return {**super().to_json(), "grouping": GROUPS}


def _check_args(ks: Any, batch_size: Any, max_items: Any, min_prefix_chars: Any) -> tuple[int, ...]:
    for name, v, lo in (("batch_size", batch_size, 1), ("min_prefix_chars", min_prefix_chars, 0)):
        if not isinstance(v, int) or isinstance(v, bool) or v < lo:
            raise GltError(f"{name} must be an int >= {lo}, got {v!r}")
    if max_items is not None and (not isinstance(max_items, int) or max_items < 1):
        raise GltError(f"max_items must be None or an int >= 1, got {max_items!r}")
    try:
        ks = tuple(int(k) for k in ks)
    except (TypeError, ValueError):
        ks = ()
    if not ks or ks[0] < 1 or any(b <= a for a, b in zip(ks, ks[1:], strict=False)):
        raise GltError(f"ks must be increasing integers >= 1 such as glt K_GRID, got {ks!r}")
    return ks


def _read(model: Any, lenses: dict[str, Lens], seqs: list[list[int]], per_text: list[list[PosItem]],
          batch_size: int, progress: bool) -> dict[str, tuple[Tensor, Tensor, Tensor, tuple[str, ...]]]:
    """Per lens: ranks and log-probabilities of the gold tokens, final-top-1 hits, layer labels
    (every batch's residuals captured once and decoded by each lens)."""
    ranks: dict[str, list[Tensor]] = {n: [] for n in lenses}
    logps: dict[str, list[Tensor]] = {n: [] for n in lenses}
    top1: dict[str, list[Tensor]] = {n: [] for n in lenses}
    bar = tqdm(total=sum(map(len, per_text)), disable=not progress, desc="part-of-speech study")
    stacks = iter_residuals(model, seqs, batch_size=batch_size)
    labels: tuple[str, ...] = ()
    for b0, stack in zip(range(0, len(seqs), batch_size), stacks, strict=True):
        mask = torch.zeros_like(stack.mask)
        gold = []
        for j, items in enumerate(per_text[b0 : b0 + batch_size]):
            for it in items:
                mask[j, it.token_pos - 1] = True
                gold.append(it.answer_id)
        targets = torch.tensor(gold, dtype=torch.long, device=mask.device)
        for name, lens in lenses.items():
            r = readout(stack, lens, targets=targets, top_k=1, positions=mask)
            ranks[name].append(r.ranks[..., 0].cpu())
            logps[name].append(r.target_logprobs[..., 0].cpu())
            top1[name].append(r.topk_ids[-1, :, 0].cpu() == targets.cpu())
            labels = r.layer_labels
        bar.update(len(gold))
    bar.close()
    return {n: (torch.cat(ranks[n], 1), torch.cat(logps[n], 1), torch.cat(top1[n]), labels) for n in lenses}


def _aggregate(items: Sequence[PosItem], ranks: Tensor, correct: Tensor, tags: tuple[str, ...],
               ks: tuple[int, ...], correct_only: bool, tag_words: Counter
               ) -> tuple[tuple[OnsetCurve, ...], tuple[dict, ...], tuple[dict, ...]]:
    ons = compute_onsets(ranks, ks)
    subsets = {"correct": correct} if correct_only else {
        "correct": correct, "incorrect": ~correct, "all": torch.ones_like(correct)}
    item_tags = [it.tag for it in items]
    labels = [(t, [g == t for g in item_tags]) for t in tags] + [
        (g, [pos_group(t) == g for t in item_tags]) for g in GROUPS]
    curves, churn = [], []
    for subset, sel in subsets.items():
        for label, member in labels:
            m = sel & torch.tensor(member, dtype=torch.bool)
            if not bool(m.any()):
                continue
            part = Onsets(ks, ons.first[:, m], ons.stable[:, m], ons.n_layers)
            curves += aggregate_onsets(part, [f"{subset}/{label}"] * int(m.sum()))
            for k in ks:
                ent, ext = topk_churn(ranks[:, m], k)
                churn.append({"subset": subset, "label": label, "k": k, "n": int(m.sum()),
                              "entries": int(ent.sum()), "exits": int(ext.sum()),
                              "n_left_after_entering": int((ext > 0).sum())})
    cands = []
    for t in tags:
        mine = [(it, bool(c)) for it, c in zip(items, correct.tolist(), strict=True) if it.tag == t]
        cands.append({
            "tag": t, "group": pos_group(t),
            "n_words": sum(n for (tg, _), n in tag_words.items() if tg == t),
            "n_word_types": sum(1 for (tg, _) in tag_words if tg == t),
            "n_items": len(mine),
            "n_item_word_types": len({it.word.lower() for it, _ in mine}),
            "n_answer_tokens": len({it.answer_id for it, _ in mine}),
            "n_items_correct": sum(c for _, c in mine),
            "n_answer_tokens_correct": len({it.answer_id for it, c in mine if c}),
        })
    return tuple(curves), tuple(cands), tuple(churn)


@checked
def run_pos_study(
    model: Any,
    lens: Lens | Sequence[Lens],
    texts: Any = None,
    *,
    tags: Any = PAPER_TAGS,
    construction: Literal["first", "every"] = "first",
    ks: Sequence[int] = K_GRID,
    correct_only: bool = False,
    min_prefix_chars: int = 17,
    batch_size: int = 8,
    max_items: int | None = 1000,
    tagger: Tagger | None = None,
    progress: bool = True,
) -> PosResult | dict[str, PosResult]:
    """Onset depth of the gold next word's first token, per part-of-speech tag.

    Args:
        model: a TransformerLens model with a fast Hugging Face tokenizer.
        lens: a `glt.Lens` for ``model`` (`glt.LogitLens`, `glt.TunedLens`), or a list of lenses
            with distinct names: each batch is then run once and decoded by every lens, and the
            result is ``{lens.name: PosResult}`` (each equal to that lens's result alone).
        texts: the texts to tag (paragraphs or sentences); default: sentences of 8-40 words from
            the held-out half of the offline Wikipedia sample, read until ``max_items``.
        tags: universal POS tags to study (default: the paper's six); see `UNIVERSAL_TAGS`.
        construction: ``"first"`` (the paper's) or ``"every"`` (see the module docstring).
        ks: thresholds for the onset curves (0-based rank < k).
        correct_only: keep only items whose final top-1 is the gold token (the paper's choice);
            otherwise correct, incorrect and all items are reported apart.
        min_prefix_chars: skip items whose prefix has fewer non-blank-edged characters (the
            paper uses 17); 0 keeps even a BOS-only prefix.
        batch_size: texts per forward pass.
        max_items: stop reading texts once this many items are collected (None: no limit).
        tagger: a function mapping a list of texts to, per text, ``(char offset, word, tag)``
            triples; default spaCy ``en_core_web_sm`` (needs ``pip install 'glt[pos]'``).
        progress: show a progress bar.

    Returns:
        A frozen `PosResult`.

    Example:
        >>> # res = glt.run_pos_study(model, glt.LogitLens.from_model(model), max_items=300)
        >>> # res.summary_dataframe(k=1)   # mean first / stable onset per tag and group
    """
    tags = check_tags(tags)
    ks = _check_args(ks, batch_size, max_items, min_prefix_chars)
    lenses, single = lens_set(lens)
    tokenizer = model_tokenizer(model)
    if tokenizer is None:
        raise GltError("model has no tokenizer: the part-of-speech study needs one to align words")
    it, source = texts_iter(texts)
    used, seqs, per_text, skips, tag_words = collect_items(
        it, tagger or spacy_tagger, tokenizer, tags, construction, min_prefix_chars,
        int(model.cfg.n_ctx), max_items)
    if not used:
        raise GltError("texts is empty: pass at least one text")
    if texts is not None and not isinstance(texts, str) and hasattr(texts, "__len__"):
        if len(texts) > len(used):
            skips[("*", SKIP_UNREAD)] += len(texts) - len(used)
    items = [x for group in per_text for x in group]
    if not items:
        why: Counter = Counter()
        for (_, reason), n in skips.items():
            why[reason] += n
        raise GltError(f"no usable items in {len(used)} texts for tags {list(tags)} (skipped: "
                       f"{dict(why)}): pass longer texts, other tags or a smaller min_prefix_chars")
    results = {}
    for name, (ranks, logps, correct, labels) in _read(model, lenses, seqs, per_text, batch_size, progress).items():
        kept, skipped = items, Counter(skips)
        if correct_only:
            for x, c in zip(items, correct.tolist(), strict=True):
                if not c:
                    skipped[(x.tag, SKIP_WRONG)] += 1
            keep = correct.clone()
            kept = [x for x, c in zip(items, keep.tolist(), strict=True) if c]
            ranks, logps, correct = ranks[:, keep], logps[:, keep], correct[keep]
        curves, cands, churn = _aggregate(kept, ranks, correct, tags, ks, correct_only, tag_words)
        results[name] = PosResult(
            model=model_name(model), lens=name,
            data_source=source, construction=construction, tags=tags, ks=ks,
            layer_labels=labels,
            correct_only=correct_only, min_prefix_chars=min_prefix_chars, texts=tuple(used),
            items=tuple(kept), ranks=ranks, logprobs=logps, correct=correct, curves=curves,
            candidates=cands, churn=churn,
            skipped=tuple((t, r, n) for (t, r), n in sorted(skipped.items())),
        )
    return results[next(iter(lenses))] if single else results

