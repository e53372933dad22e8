"""Plotting: glt's style, the generic curves (rank over depth, onsets, token heatmap, side by side)
and the interactive layer explorer (`explore`, `Explorer`).

`glt_style` and `new_figure` (`_style`) give every figure the same colour-blind-safe colours,
labelled layer axes and the N behind every curve. `_curves` draws what any read-out gives: rank
curves over depth, onset-vs-k curves, a token heatmap, and `plot_side_by_side`, two results of
one kind (say logit vs tuned lens) in two panels with the plot their class registered
(`register_plot`). Every ``plot_*`` returns its figure or axes and never calls ``plt.show()``.

Each study's own plots live in its subpackage (`glt.studies.guess_then_refine`, ...) and register
there: this subpackage knows no study. It imports `glt.core` and `glt.decoding`.
"""

from glt.plotting._curves import (
    plot_onset_curves as plot_onset_curves,
)
from glt.plotting._curves import (
    plot_rank_curves as plot_rank_curves,
)
from glt.plotting._curves import (
    plot_side_by_side as plot_side_by_side,
)
from glt.plotting._curves import (
    plot_token_heatmap as plot_token_heatmap,
)
from glt.plotting._curves import (
    register_plot as register_plot,
)
from glt.plotting._explorer import (
    Explorer as Explorer,
)
from glt.plotting._explorer import (
    explore as explore,
)
from glt.plotting._style import (
    glt_style as glt_style,
)
from glt.plotting._style import (
    new_figure as new_figure,
)

__all__ = [
    "Explorer",
    "explore",
    "glt_style",
    "new_figure",
    "plot_onset_curves",
    "plot_rank_curves",
    "plot_side_by_side",
    "plot_token_heatmap",
    "register_plot",
]
