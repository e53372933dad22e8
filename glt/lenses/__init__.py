"""Lenses: what turns a layer's residual into logits (the logit, tuned and Jacobian lenses).

`Lens` is the contract every function taking a lens relies on (`glt.LogitLens` and
`glt.TunedLens` satisfy it). The fitted lenses are saved as one kind of folder (`_folder`:
``config.json`` + ``params.safetensors``, written atomically) that `glt.load_lens` reads.

Fitting a tuned lens (least squares, KL training, evaluation) and a Jacobian lens lives in
`glt.lenses.fit`.
"""

from glt.lenses._jacobian import (
    JacobianLens as JacobianLens,
)
from glt.lenses._jacobian import (
    export_jacobian_lens as export_jacobian_lens,
)
from glt.lenses._jacobian import (
    import_jacobian_lens as import_jacobian_lens,
)
from glt.lenses._logit import (
    LogitLens as LogitLens,
)
from glt.lenses._logit import (
    Unembed as Unembed,
)
from glt.lenses._protocol import (
    Lens as Lens,
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
    "export_jacobian_lens",
    "export_tuned_lens",
    "import_jacobian_lens",
    "import_tuned_lens",
    "JacobianLens",
    "load_lens",
    "Lens",
    "LogitLens",
    "TunedLens",
    "Unembed",
]
