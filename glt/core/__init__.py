"""Core: what every other layer stands on: errors, argument checks, persistence, models, capture.

`GltError` (`_errors`) is the one exception glt raises for user errors, and `checked` (`_check`)
checks a public function's annotated arguments where the function is defined. Persistence is
atomic and never pickles: `_io` writes JSON and safetensors under a temporary name then renames,
`_codec` is the one tagged, versioned format of every saved result, and `_paths` checks the paths
glt reads and writes. `load_model` (`_models`) returns a TransformerLens model (the embedded
Gemma 3 270M by default) and `capture_residuals` / `iter_residuals` (`_capture`) its residual
stream as a `ResidualStack`; `_assets` says what ships inside glt for which model (a tuned lens
and a frequency table each for the default model and SmolLM2-135M). `_distributed` shards work
over ``torch.distributed`` ranks, and `_meter` is the timing hook that capture and the read-out
report to.

It imports nothing from the rest of glt but `glt._version` (which saved files record).
"""

from glt.core._capture import (
    ResidualSite as ResidualSite,
)
from glt.core._capture import (
    ResidualStack as ResidualStack,
)
from glt.core._capture import (
    capture_residuals as capture_residuals,
)
from glt.core._capture import (
    iter_residuals as iter_residuals,
)
from glt.core._capture import (
    tokenize as tokenize,
)
from glt.core._check import (
    checked as checked,
)
from glt.core._check import (
    layer_indices as layer_indices,
)
from glt.core._distributed import (
    all_gather_list as all_gather_list,
)
from glt.core._distributed import (
    rank_and_world as rank_and_world,
)
from glt.core._distributed import (
    shard_range as shard_range,
)
from glt.core._distributed import (
    torchrun_group as torchrun_group,
)
from glt.core._errors import (
    GltError as GltError,
)
from glt.core._io import (
    atomic_write_bytes as atomic_write_bytes,
)
from glt.core._io import (
    atomic_write_text as atomic_write_text,
)
from glt.core._io import (
    read_json as read_json,
)
from glt.core._io import (
    write_json as write_json,
)
from glt.core._meter import (
    Meter as Meter,
)
from glt.core._models import (
    cache_dir as cache_dir,
)
from glt.core._models import (
    load_model as load_model,
)
from glt.core._models import (
    model_name as model_name,
)

__all__ = [
    "all_gather_list",
    "atomic_write_bytes",
    "atomic_write_text",
    "cache_dir",
    "capture_residuals",
    "checked",
    "GltError",
    "iter_residuals",
    "layer_indices",
    "load_model",
    "Meter",
    "model_name",
    "rank_and_world",
    "read_json",
    "ResidualSite",
    "ResidualStack",
    "shard_range",
    "tokenize",
    "torchrun_group",
    "write_json",
]
