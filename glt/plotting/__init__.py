"""Plotting: glt's style and the generic curves (rank over depth, onsets, token heatmap, side by side).

Each study's own plots live in its subpackage (`glt.studies.guess_then_refine`, ...).
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
from glt.plotting._style import (
    glt_style as glt_style,
)
from glt.plotting._style import (
    new_figure as new_figure,
)

__all__ = [
    "glt_style",
    "new_figure",
    "plot_onset_curves",
    "plot_rank_curves",
    "plot_side_by_side",
    "plot_token_heatmap",
    "register_plot",
]
