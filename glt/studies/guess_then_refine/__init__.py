"""Guess-then-refine: which frequency bucket each layer's top-1 falls in, and how often it flips.

`run_guess_then_refine` (`_run`) reads every position of a set of texts with a lens and puts
each layer's top-1 token in its frequency bucket (`glt.TokenFrequency`). `GuessRefineResult`
(`_result`) keeps one row per read prefix and derives the bucket shares per layer, the flip rates
(how often a layer's top-1 differs from the final one) and their split against the gold next
token (whether the layer, and whether the final layer, had it right); `_plots` draws shares, flip
rates, the split and rank by bucket. The paper's headline: early layers guess frequent tokens,
later layers refine them. `sublayer_split` (`_sublayers`) looks inside each block: it reads the
residual between attention and MLP (``resid_mid``, logit lens) and reports, per block with its N,
whether a guess was overturned by the attention or by the MLP (`SublayerSplit`,
`plot_sublayer_split`).
"""

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
from glt.studies.guess_then_refine._sublayers import (
    SublayerSplit as SublayerSplit,
)
from glt.studies.guess_then_refine._sublayers import (
    plot_sublayer_split as plot_sublayer_split,
)
from glt.studies.guess_then_refine._sublayers import (
    sublayer_split as sublayer_split,
)

__all__ = [
    "GuessRefineResult",
    "plot_bucket_share",
    "plot_flip_rate",
    "plot_flip_split",
    "plot_rank_by_bucket",
    "plot_sublayer_split",
    "run_guess_then_refine",
    "SublayerSplit",
    "sublayer_split",
]
