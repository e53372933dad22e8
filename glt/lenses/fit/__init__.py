"""Fitting lenses: the tuned lens (least squares, KL training, checkpoints), the Jacobian lens, evaluation.

`fit_least_squares` (`_least_squares`) fits every translator in closed form to predict the final
residual; `train_tuned_lens` (`_train`), its recipe a `TrainConfig` (`_config`), starts from that
fit and minimises KL(final || lens) (`_loss`, tiled over the vocabulary, with gradients) with a
preconditioned per-layer line search (`_line_search`), on sequences cut from texts (`_data`),
resumable from atomic checkpoints (`_checkpoints`). `evaluate_lens` (`_evaluate`) measures any
lens on held-out text as a `LensEvaluation` (per-layer KL to the final distribution and next-token
loss). `fit_jacobian_lens` (`_jacobian`) fits a `glt.JacobianLens` by differentiating the model
(`merge_jacobian_lenses` combines fits on disjoint texts). `least_squares_lens` (`_cached`) gives
any model a least-squares lens in one call: fitted on the offline Wikipedia sample and cached.
``glt lens train`` and ``glt lens eval`` do the same for the tuned lens from the command line. It
imports `glt.core`, `glt.data` and `glt.lenses`.
"""

from glt.lenses.fit._cached import (
    LeastSquaresLens as LeastSquaresLens,
)
from glt.lenses.fit._cached import (
    least_squares_lens as least_squares_lens,
)
from glt.lenses.fit._config import (
    TrainConfig as TrainConfig,
)
from glt.lenses.fit._evaluate import (
    LensEvaluation as LensEvaluation,
)
from glt.lenses.fit._evaluate import (
    evaluate_lens as evaluate_lens,
)
from glt.lenses.fit._jacobian import (
    fit_jacobian_lens as fit_jacobian_lens,
)
from glt.lenses.fit._jacobian import (
    merge_jacobian_lenses as merge_jacobian_lenses,
)
from glt.lenses.fit._least_squares import (
    fit_least_squares as fit_least_squares,
)
from glt.lenses.fit._train import (
    train_tuned_lens as train_tuned_lens,
)

__all__ = [
    "evaluate_lens",
    "fit_jacobian_lens",
    "fit_least_squares",
    "least_squares_lens",
    "LeastSquaresLens",
    "LensEvaluation",
    "merge_jacobian_lenses",
    "TrainConfig",
    "train_tuned_lens",
]
