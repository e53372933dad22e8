"""What both guess-then-refine read-outs take in: a text's token ids and the frequency table.

`run_guess_then_refine` and `sublayer_split` accept the same ``texts`` (strings, tokenised as
`glt.tokenize` does, or token id lists, checked against the vocabulary) and the same
``frequency`` (a `glt.TokenFrequency`, a name or folder for `glt.load_frequency`, or None for the
table shipped for the model: the default model or SmolLM2-135M).
"""

import os
from collections.abc import Sequence
from typing import Any

from torch import Tensor

from glt.core._assets import SHIPPED_NAMES, asset_dir, shipped_frequency_dir, shipped_key
from glt.core._capture import model_tokenizer
from glt.core._errors import GltError
from glt.core._models import model_name
from glt.data._frequency import TokenFrequency, load_frequency

__all__ = ["resolve_frequency", "token_ids"]


def token_ids(model: Any, text: Any, i: int) -> list[int]:
    """Token ids of ``texts[i]`` exactly as `glt.tokenize` gives them (ids pass through, checked)."""
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


def resolve_frequency(model: Any, frequency: Any, d_vocab: int) -> TokenFrequency:
    """The `glt.TokenFrequency` that ``frequency`` names, checked to cover ``d_vocab`` token ids."""
    if frequency is None:
        folder = shipped_frequency_dir(model)
        if folder is None:
            key = shipped_key(model)
            why = (f"this glt build lacks the table shipped for {model_name(model)!r} ({asset_dir('frequency', key)} "
                   "is missing)" if key else
                   f"glt ships tables for {' and '.join(SHIPPED_NAMES)} only, not for {model_name(model)!r}")
            raise GltError(
                f"frequency: {why}: build one with glt.TokenFrequency.from_texts(glt.wikipedia_paragraphs(), model) "
                "and pass frequency=..."
            )
        frequency = load_frequency(folder)
    elif isinstance(frequency, (str, os.PathLike)):
        frequency = load_frequency(frequency)
    if not isinstance(frequency, TokenFrequency):
        raise GltError(f"frequency must be a glt.TokenFrequency, a name or a folder, got {type(frequency).__name__}")
    if frequency.d_vocab != d_vocab:
        raise GltError(
            f"frequency table covers {frequency.d_vocab} token ids (tokenizer {frequency.tokenizer!r}) but the "
            f"model's vocabulary has {d_vocab}: build the table with this model's tokenizer: "
            "TokenFrequency.from_texts(texts, model)"
        )
    return frequency
