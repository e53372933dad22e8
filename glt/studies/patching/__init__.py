"""Activation patching: where a residual from another prompt takes over the output."""

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
