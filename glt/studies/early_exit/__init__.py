"""Early exit: the compute a lens-based exit rule would save, and what it would cost.

`early_exit` (`_run`) works from a `glt.Readout` alone (no extra forward pass): when each token's
prediction settles (the stable onset of the final top-1) and, for a confidence threshold, the
layer a lens-based rule would exit at, the share of block compute it would save and the accuracy
of the answer it would give, per token category; the result is an `EarlyExitResult`, and `_plots`
draws exit layer and saved depth per threshold.
"""

from glt.studies.early_exit._plots import (
    plot_early_exit as plot_early_exit,
)
from glt.studies.early_exit._run import (
    EarlyExitResult as EarlyExitResult,
)
from glt.studies.early_exit._run import (
    early_exit as early_exit,
)

__all__ = [
    "early_exit",
    "EarlyExitResult",
    "plot_early_exit",
]
