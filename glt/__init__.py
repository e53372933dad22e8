"""glt: how language models use their depth.

Capture the residual stream of a TransformerLens model, decode every layer with the logit or
tuned lens, reduce the decoded distributions in one streamed pass, and run the Guess-then-Refine
studies of Gupta et al. (arXiv 2510.18871) on any model.
"""

from glt._capture import ResidualStack, capture_residuals, iter_residuals, tokenize
from glt._errors import GltError
from glt._lens import LogitLens, Unembed
from glt._models import cache_dir, load_model
from glt._readout import Readout, readout

__version__ = "0.1.0"

__all__ = [
    "GltError",
    "LogitLens",
    "Readout",
    "ResidualStack",
    "Unembed",
    "cache_dir",
    "capture_residuals",
    "iter_residuals",
    "load_model",
    "readout",
    "tokenize",
]
