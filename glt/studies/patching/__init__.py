"""Activation patching: where a residual from another prompt takes over the output.

`patch_layers` (`_run`) replaces, at every residual index, the target prompt's residual with the
source prompt's, runs the rest of the model and reads whether the output lands on the source's
options; the `PatchingResult` (`_result`) gives the causal transition layer (first and stable)
next to the layer where the lens, reading the unpatched source, settles on its options. `_plots`
draws the effect of patching each layer.
"""

from glt.studies.patching._plots import (
    plot_patching as plot_patching,
)
from glt.studies.patching._result import (
    PatchingResult as PatchingResult,
)
from glt.studies.patching._run import (
    patch_layers as patch_layers,
)

__all__ = [
    "patch_layers",
    "PatchingResult",
    "plot_patching",
]
