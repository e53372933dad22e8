"""Training data for lenses: texts cut into sequences, read positions, a seeded step plan."""

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from glt.core._capture import iter_residuals, tokenize
from glt.core._errors import GltError

__all__ = ["plan_sequences", "plan_steps", "read_rows", "split_validation", "validation_residuals"]


def plan_sequences(
    model: Any, texts: Sequence[str], *, seq_len: int = 256
) -> tuple[list[list[int]], int]:
    """Tokenise ``texts`` and cut them into sequences of at most ``seq_len`` tokens.

    Each piece of a long text starts with the BOS token again when the tokenizer adds one, so
    every sequence looks like a document start to the model. Returns ``(sequences, bos_id)``
    (``bos_id`` -1 when the tokenizer adds no BOS).
    """
    if not isinstance(seq_len, int) or seq_len < 2:
        raise GltError(f"seq_len must be an int >= 2, got {seq_len!r}")
    bos = getattr(model.tokenizer, "bos_token_id", None)
    seqs: list[list[int]] = []
    for ids in tokenize(model, list(texts), truncate=True):
        head = [ids[0]] if bos is not None and ids and ids[0] == bos else []
        body = ids[len(head):]
        width = seq_len - len(head)
        for a in range(0, max(len(body), 1), width):
            piece = head + body[a : a + width]
            if len(piece) >= 2:
                seqs.append(piece)
    return seqs, (int(bos) if bos is not None else -1)


def read_rows(tokens: Tensor, mask: Tensor, bos: int) -> tuple[Tensor, Tensor]:
    """``(batch_index, pos_index)`` of the real, non-BOS positions (BOS: a constant attention sink)."""
    keep = mask & (tokens != bos)
    return keep.nonzero(as_tuple=True)


def plan_steps(seqs: list[list[int]], bos: int, tokens_per_step: int, seed: int, n_steps: int) -> list[list[int]]:
    """Deterministic step plan: shuffled sequence indices grouped into ~tokens_per_step rows."""
    out: list[list[int]] = []
    epoch = 0
    while len(out) < n_steps:
        g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        order = torch.randperm(len(seqs), generator=g).tolist()
        cur: list[int] = []
        count = 0
        for i in order:
            cur.append(i)
            count += sum(1 for t in seqs[i] if t != bos)
            if count >= tokens_per_step:
                out.append(cur)
                cur, count = [], 0
                if len(out) == n_steps:
                    break
        epoch += 1
        if epoch > 10_000:
            raise GltError("texts hold no trainable tokens: pass longer texts")
    return out


VAL_PER_SEQ = 8
"""Validation positions taken from each held-out sequence: positions of one text are correlated
(one topic), so a validation set drawn from a few long texts would steer the line search's step
sizes toward those texts; spreading it over ``rows / 8`` texts keeps it representative."""


def split_validation(seqs: list[list[int]], bos: int, rows: int, seed: int) -> tuple[list, list]:
    """Hold aside seeded sequences giving ``rows`` validation positions, `VAL_PER_SEQ` at most each."""
    order = torch.randperm(len(seqs), generator=torch.Generator().manual_seed(seed + 7919)).tolist()
    val, count = set(), 0
    for i in order:
        if count >= rows or len(val) >= len(seqs) - 1:
            break
        val.add(i)
        count += min(VAL_PER_SEQ, sum(1 for t in seqs[i] if t != bos))
    return [s for i, s in enumerate(seqs) if i not in val], [seqs[i] for i in sorted(val)]


def validation_residuals(model: Any, seqs: list[list[int]], bos: int, rows: int, batch_size: int) -> Tensor:
    """Residuals ``[layer, row, d_model]``: up to `VAL_PER_SEQ` evenly spaced read positions per
    sequence of ``seqs``, the first ``rows`` of them."""
    parts = []
    for stack in iter_residuals(model, seqs, batch_size=batch_size):
        b, p = read_rows(stack.tokens, stack.mask, bos)
        pick = []
        for j in b.unique().tolist():
            idx = (b == j).nonzero().flatten()
            k = min(VAL_PER_SEQ, len(idx))
            pick.append(idx[torch.linspace(0, len(idx) - 1, k).round().long()])
        if pick:
            sel = torch.cat(pick)
            parts.append(stack.resid[:, b[sel], p[sel]].clone().float())
    return torch.cat(parts, 1)[:, :rows]
