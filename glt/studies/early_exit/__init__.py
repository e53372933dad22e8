"""Early exit: the compute a lens-based exit rule would save, and what it would cost."""

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
