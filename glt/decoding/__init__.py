"""The read-out engine: every layer decoded in one streamed pass over the vocabulary.

`readout` reduces a `glt.ResidualStack` and a lens to exact ranks, top-k, entropies and KL per
layer (the tiled CPU path, the fused CUDA path, exact arithmetic at the boundaries);
`sharded_readout` spreads it over ``torch.distributed`` ranks; the onset functions turn ranks
into the layer where a token is first (or stably) in the top-k.
"""

from glt.decoding._onsets import (
    K_GRID as K_GRID,
)
from glt.decoding._onsets import (
    OnsetCurve as OnsetCurve,
)
from glt.decoding._onsets import (
    Onsets as Onsets,
)
from glt.decoding._onsets import (
    aggregate_onsets as aggregate_onsets,
)
from glt.decoding._onsets import (
    compute_onsets as compute_onsets,
)
from glt.decoding._onsets import (
    first_crossing as first_crossing,
)
from glt.decoding._onsets import (
    stable_onset as stable_onset,
)
from glt.decoding._onsets import (
    topk_churn as topk_churn,
)
from glt.decoding._readout import (
    Readout as Readout,
)
from glt.decoding._readout import (
    readout as readout,
)
from glt.decoding._readout import (
    select_rows as select_rows,
)
from glt.decoding._sharded import (
    sharded_readout as sharded_readout,
)

__all__ = [
    "aggregate_onsets",
    "compute_onsets",
    "first_crossing",
    "K_GRID",
    "OnsetCurve",
    "Onsets",
    "Readout",
    "readout",
    "select_rows",
    "sharded_readout",
    "stable_onset",
    "topk_churn",
]
