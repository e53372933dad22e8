"""Lenses: what turns a layer's residual into logits (the logit lens and the tuned lens).

Fitting a tuned lens (least squares, KL training, evaluation) lives in `glt.lenses.fit`.
"""

from glt.lenses._logit import (
    LogitLens as LogitLens,
)
from glt.lenses._logit import (
    Unembed as Unembed,
)
from glt.lenses._tuned import (
    TunedLens as TunedLens,
)
from glt.lenses._tuned import (
    export_tuned_lens as export_tuned_lens,
)
from glt.lenses._tuned import (
    import_tuned_lens as import_tuned_lens,
)
from glt.lenses._tuned import (
    load_lens as load_lens,
)

__all__ = [
    "export_tuned_lens",
    "import_tuned_lens",
    "load_lens",
    "LogitLens",
    "TunedLens",
    "Unembed",
]
