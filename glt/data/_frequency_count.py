"""Counting a corpus with a tokenizer: the raw material of `glt.TokenFrequency`.

Texts are streamed in chunks through a Hugging Face tokenizer (or a model's), ids are counted
with ``bincount`` over the model's vocabulary, and the tokenizer's special and whitespace-only ids
are listed so the ranking can leave them out.
"""

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from glt.core._capture import model_tokenizer
from glt.core._errors import GltError
from glt.core._models import model_name

__all__ = ["count_tokens", "special_and_whitespace", "tokenizer_info"]


def _is_model(obj: Any) -> bool:
    return hasattr(obj, "cfg") and hasattr(obj, "tokenizer")


def tokenizer_info(tokenizer: Any) -> tuple[Any, int, str]:
    """(HF tokenizer, vocabulary size, name) for an HF tokenizer or a glt/TransformerLens model."""
    if _is_model(tokenizer):
        tok = model_tokenizer(tokenizer)
        if tok is None:
            raise GltError("tokenizer: the model has no tokenizer: pass its Hugging Face tokenizer")
        return tok, max(int(tokenizer.cfg.d_vocab), len(tok)), model_name(tokenizer)
    if not callable(tokenizer) or not hasattr(tokenizer, "batch_decode"):
        raise GltError(
            f"tokenizer must be a Hugging Face tokenizer or a glt model, got "
            f"{type(tokenizer).__name__}: pass e.g. glt.load_model('default')"
        )
    name = str(getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__)
    return tokenizer, len(tokenizer), Path(name).name or name


def special_and_whitespace(tok: Any, d_vocab: int) -> tuple[list[int], list[int]]:
    """Special token ids (BOS/EOS/pad/unk and added tokens marked special) and whitespace-only ids."""
    special = {int(i) for i in getattr(tok, "all_special_ids", []) or []}
    for i, added in (getattr(tok, "added_tokens_decoder", {}) or {}).items():
        if getattr(added, "special", False):
            special.add(int(i))
    n = min(d_vocab, len(tok))
    text = tok.batch_decode([[i] for i in range(n)])
    white = [i for i, s in enumerate(text) if s and not s.strip() and i not in special]
    return sorted(i for i in special if i < d_vocab), white


def count_tokens(texts: Iterable[Any], tok: Any, d_vocab: int, *, add_special_tokens: bool, chunk_size: int,
                 progress: bool) -> tuple[Tensor, int, int]:
    """``(counts [d_vocab], n_texts, n_empty)`` of ``texts`` tokenised by ``tok`` in chunks.

    Raises:
        GltError: a non-string item, an id beyond ``d_vocab``, no text, or no token at all.
    """

    counts = torch.zeros(d_vocab, dtype=torch.long)
    n_texts = n_empty = 0
    chunk: list[str] = []

    def flush() -> None:
        nonlocal n_empty
        enc = tok(chunk, add_special_tokens=add_special_tokens)["input_ids"]
        ids = torch.as_tensor([i for seq in enc for i in seq], dtype=torch.long)
        n_empty += sum(1 for seq in enc if len(seq) == 0)
        if ids.numel() and int(ids.max()) >= d_vocab:
            raise GltError(
                f"tokenizer produced id {int(ids.max())} >= vocabulary size {d_vocab}: pass the "
                "model (not a different tokenizer) so the vocabulary sizes agree"
            )
        counts.add_(torch.bincount(ids, minlength=d_vocab))
        chunk.clear()

    total = len(texts) if hasattr(texts, "__len__") else None
    for i, text in enumerate(tqdm(texts, total=total, disable=not progress, desc="counting")):
        if not isinstance(text, str):
            raise GltError(f"texts[{i}] must be a string, got {type(text).__name__}: {text!r:.60}")
        chunk.append(text)
        n_texts += 1
        if len(chunk) >= chunk_size:
            flush()
    if chunk:
        flush()
    if n_texts == 0:
        raise GltError("texts is empty: pass at least one text to count")
    if int(counts.sum()) == 0:
        raise GltError(f"the {n_texts} texts gave no tokens: pass non-empty texts")
    return counts, n_texts, n_empty
