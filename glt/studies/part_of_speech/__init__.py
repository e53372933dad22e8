"""Part of speech: the layer at which the next word's first token enters the top-k, per tag.

`_align` tags texts with spaCy (`load_tagger`; an optional dependency, the ``pos`` extra) and
aligns each word to the first token it starts; `run_pos_study` (`_run`) reads the position
before that token at every layer and returns a `PosResult`: onsets (first crossing and stable)
per tag and per group (function, content and other words), correct and incorrect predictions
kept apart, each with its N; `_plots` draws onset and rank curves per tag.
"""

from glt.studies.part_of_speech._align import (
    load_tagger as load_tagger,
)
from glt.studies.part_of_speech._plots import (
    plot_pos_onsets as plot_pos_onsets,
)
from glt.studies.part_of_speech._plots import (
    plot_pos_ranks as plot_pos_ranks,
)
from glt.studies.part_of_speech._run import (
    PosResult as PosResult,
)
from glt.studies.part_of_speech._run import (
    run_pos_study as run_pos_study,
)

__all__ = [
    "load_tagger",
    "plot_pos_onsets",
    "plot_pos_ranks",
    "PosResult",
    "run_pos_study",
]
