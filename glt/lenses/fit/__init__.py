"""Fitting a tuned lens: least squares, KL training with a line search, evaluation, checkpoints."""

from glt.lenses.fit._evaluate import (
    LensEvaluation as LensEvaluation,
)
from glt.lenses.fit._evaluate import (
    evaluate_lens as evaluate_lens,
)
from glt.lenses.fit._least_squares import (
    fit_least_squares as fit_least_squares,
)
from glt.lenses.fit._train import (
    train_tuned_lens as train_tuned_lens,
)

__all__ = [
    "evaluate_lens",
    "fit_least_squares",
    "LensEvaluation",
    "train_tuned_lens",
]
