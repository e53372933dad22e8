"""Guess-then-refine: which frequency bucket each layer's top-1 falls in, and how often it flips."""

from glt.studies.guess_then_refine._plots import (
    plot_bucket_share as plot_bucket_share,
)
from glt.studies.guess_then_refine._plots import (
    plot_flip_rate as plot_flip_rate,
)
from glt.studies.guess_then_refine._plots import (
    plot_flip_split as plot_flip_split,
)
from glt.studies.guess_then_refine._plots import (
    plot_rank_by_bucket as plot_rank_by_bucket,
)
from glt.studies.guess_then_refine._result import (
    GuessRefineResult as GuessRefineResult,
)
from glt.studies.guess_then_refine._run import (
    run_guess_then_refine as run_guess_then_refine,
)

__all__ = [
    "GuessRefineResult",
    "plot_bucket_share",
    "plot_flip_rate",
    "plot_flip_split",
    "plot_rank_by_bucket",
    "run_guess_then_refine",
]
