"""`TrainConfig`: the recipe of a tuned-lens training run, one frozen, validated object.

`glt.train_tuned_lens` takes the recipe as a `TrainConfig` (its ``config`` argument) and also as
keyword arguments naming fields (``max_tokens=4096``), which replace those fields of ``config``:
the keyword form every call used before the config existed keeps working, and a recipe can be
kept in one object and varied one field at a time. What a run does around the recipe (where to
checkpoint and save the lens, what to evaluate it on, a callback, the progress bar) stays an
argument of `glt.train_tuned_lens`, and so do the frequency counts: data, like the texts.

A training checkpoint is fingerprinted from the recipe's values (`glt.lenses.fit._train`), the
same names and values as glt 0.1.0's keyword arguments, so a run restarted with an equal recipe
resumes, whichever form passed it.
"""

import dataclasses
import math
import operator
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from glt.core._check import check_type
from glt.core._errors import GltError
from glt.lenses._tuned import TunedLens

__all__ = ["TrainConfig", "config_with"]

# lower bound of each integer field
_AT_LEAST = {"max_tokens": 0, "tokens_per_step": 1, "least_squares_tokens": 0, "seq_len": 2, "batch_size": 1,
             "val_rows": 1, "row_chunk": 1, "vocab_tile": 1}
# [low, high) of each number field
_RANGE = {"ridge": (0.0, math.inf), "lr": (0.0, math.inf), "momentum": (0.0, 1.0), "weight_decay": (0.0, math.inf),
          "grad_clip": (0.0, math.inf), "frequency_alpha": (0.0, math.inf)}


@dataclass(frozen=True)
class TrainConfig:
    """How to train a tuned lens: start, budget, optimiser, objective, data cut and memory knobs.

    The defaults are glt's recipe (least-squares start, then the line search; see
    `glt.lenses.fit._train` for why and for the measurements). tuned-lens's own recipe is
    ``TrainConfig(init="zero", optimizer="sgd")``. Every field is checked when the config is
    made: a wrong type or a value out of range raises `GltError` naming the field.

    Attributes:
        init: ``"least_squares"`` (closed-form fit on ``least_squares_tokens`` positions, then KL
            training), ``"zero"`` (the logit lens, tuned-lens's init) or a `glt.TunedLens` to start
            from (copied, e.g. a saved least-squares fit).
        max_tokens: KL-training budget in read positions; ``steps = max_tokens // tokens_per_step``
            (0 steps with ``init="least_squares"`` gives the least-squares lens).
        tokens_per_step: read positions per optimiser step (over all ranks).
        least_squares_tokens: positions of the least-squares fit (``init="least_squares"``).
        ridge: ridge penalty of the least-squares fit.
        optimizer: ``"linesearch"`` (diagonally preconditioned gradient with per-layer step sizes
            chosen on ``val_rows`` positions held out of the training texts, at most 8 per text;
            ``lr``, ``momentum``, ``weight_decay`` and ``grad_clip`` do not apply), ``"sgd"``
            (the tuned-lens recipe) or ``"adam"`` (AMSGrad, lr ``1e-3 * lr``, as tuned-lens).
        lr: learning rate, before the ``1 - momentum`` factor applied for SGD; in ``[0, inf)``.
        momentum: SGD momentum / Adam beta1, in ``[0, 1)``.
        weight_decay: in ``[0, inf)``.
        grad_clip: global gradient-norm clip (0: none), in ``[0, inf)``.
        frequency_alpha: exponent of the frequency-reweighted objective, each position weighted
            by ``(1 + count[final top-1])^-alpha`` when `glt.train_tuned_lens` gets
            ``frequency_counts``; in ``[0, inf)``.
        layers: translator indices to train, increasing (e.g. ``range(11, 18)``); None trains all.
            Stored as a tuple; checked against the model's ``n_layers`` when training starts.
        seq_len: tokens per training sequence (texts are cut), >= 2.
        batch_size: sequences per forward pass.
        val_rows: validation positions of the line search.
        row_chunk: read positions per KL chunk (memory).
        compute_dtype: dtype of the vocabulary tiles (``torch.bfloat16`` is ~3x faster on CPUs
            with AVX512-BF16).
        vocab_tile: vocabulary tile width (memory).
        seed: fixes the data order; the same seed gives the same lens.

    Example:
        >>> cfg = TrainConfig(max_tokens=4096, optimizer="sgd")
        >>> cfg.max_tokens // cfg.tokens_per_step, cfg.init
        (4, 'least_squares')
        >>> config_with(cfg, {"seed": 3}).seed
        3
        >>> TrainConfig(momentum=1.0)
        Traceback (most recent call last):
        ...
        glt.core._errors.GltError: TrainConfig.momentum must be a number in [0.0, 1.0), got 1.0
    """

    init: Literal["least_squares", "zero"] | TunedLens = "least_squares"
    max_tokens: int = 65_536
    tokens_per_step: int = 1024
    least_squares_tokens: int = 16_384
    ridge: float = 1e-4
    optimizer: Literal["linesearch", "sgd", "adam"] = "linesearch"
    lr: float = 1.0
    momentum: float = 0.9
    weight_decay: float = 1e-3
    grad_clip: float = 1.0
    frequency_alpha: float = 1.0
    layers: Sequence[int] | None = None
    seq_len: int = 256
    batch_size: int = 8
    val_rows: int = 48
    row_chunk: int = 64
    compute_dtype: torch.dtype = torch.float32
    vocab_tile: int = 8192
    seed: int = 0

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            check_field(f.name, getattr(self, f.name))
        if self.layers is not None:
            object.__setattr__(self, "layers", tuple(operator.index(i) for i in self.layers))


def check_field(name: str, value: Any) -> None:
    """GltError unless ``value`` suits the `TrainConfig` field ``name`` (type, then range)."""
    check_type(value, _HINTS[name], name=f"TrainConfig.{name}")
    if name in _AT_LEAST and value < _AT_LEAST[name]:
        raise GltError(f"TrainConfig.{name} must be an int >= {_AT_LEAST[name]}, got {value!r}")
    if name in _RANGE:
        low, high = _RANGE[name]
        if not low <= value < high:  # also refuses NaN
            raise GltError(f"TrainConfig.{name} must be a number in [{low}, {high}), got {value!r}")
    if name == "layers" and value is not None:
        try:
            [operator.index(i) for i in value]
        except TypeError:
            raise GltError(f"TrainConfig.layers must be translator indices (ints) or None, got {value!r:.80}") from None


def config_with(config: TrainConfig | None, overrides: Mapping[str, Any]) -> TrainConfig:
    """``config`` (default `TrainConfig()`) with the fields named in ``overrides`` replaced.

    An unknown name raises `GltError` listing the fields; each value is checked before the new
    config is made, so a wrong one is reported as the field it was meant for.
    """
    names = [f.name for f in dataclasses.fields(TrainConfig)]
    unknown = sorted(set(overrides) - set(names))
    if unknown:
        raise GltError(
            f"train_tuned_lens got unknown settings {unknown}: pass TrainConfig fields ({', '.join(names)}) "
            "or the run's own arguments (frequency_counts, checkpoint_dir, checkpoint_every, callback, "
            "heldout_texts, eval_rows, out, data_name, progress)"
        )
    for name, value in overrides.items():
        check_field(name, value)
    return dataclasses.replace(config if config is not None else TrainConfig(), **overrides)


_HINTS = typing.get_type_hints(TrainConfig)  # each field's annotation, as check_field checks it
