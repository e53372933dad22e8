"""Fact recall: the depth at which each token of a multi-token answer is found.

`run_fact_recall` (`_run`) feeds prompt + answer in one forward pass (teacher forcing) and reads
the position before each answer token; `FactRecallResult` (`_result`) holds every answer token's
rank over depth and onset curves per (answer length, position), correct and incorrect answers
reported separately. The facts come from `_data` (glt's own, offline TriviaQA / NQ-open and
country capitals: `load_facts`) or from the user's MQuAKE / CounterFact files (`_files`);
`_plots` draws onsets by answer-token position and rank curves.
"""

from glt.studies.fact_recall._data import (
    Fact as Fact,
)
from glt.studies.fact_recall._data import (
    load_facts as load_facts,
)
from glt.studies.fact_recall._files import (
    read_counterfact as read_counterfact,
)
from glt.studies.fact_recall._files import (
    read_mquake as read_mquake,
)
from glt.studies.fact_recall._plots import (
    plot_fact_onsets as plot_fact_onsets,
)
from glt.studies.fact_recall._plots import (
    plot_fact_ranks as plot_fact_ranks,
)
from glt.studies.fact_recall._result import (
    FactRecallResult as FactRecallResult,
)
from glt.studies.fact_recall._run import (
    run_fact_recall as run_fact_recall,
)

__all__ = [
    "Fact",
    "FactRecallResult",
    "load_facts",
    "plot_fact_onsets",
    "plot_fact_ranks",
    "read_counterfact",
    "read_mquake",
    "run_fact_recall",
]
