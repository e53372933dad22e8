"""Multiple choice: when the answer format appears and when the choice is made.

`_data` loads offline MMLU and GLUE rows as `MCExample` s (`load_mc_dataset`) and `_prompts`
formats them as the paper does (`format_mc_prompt`, `MCPrompt`), with the option-symbol
permutation control. `run_multiple_choice` (`_run`) reads every layer at the last prompt position
with the option tokens as targets; `MultipleChoiceResult` (`_result`) gives per layer and item the
*format* (all options in the top-k, mass on the options) and the *decision* (the layer's choice
among the options vs the final one), with onsets and the control; `_plots` draws both curves.
"""

from glt.studies.multiple_choice._data import (
    MCExample as MCExample,
)
from glt.studies.multiple_choice._data import (
    load_mc_dataset as load_mc_dataset,
)
from glt.studies.multiple_choice._plots import (
    plot_mc_decision as plot_mc_decision,
)
from glt.studies.multiple_choice._plots import (
    plot_mc_format as plot_mc_format,
)
from glt.studies.multiple_choice._plots import (
    plot_multiple_choice as plot_multiple_choice,
)
from glt.studies.multiple_choice._prompts import (
    MCPrompt as MCPrompt,
)
from glt.studies.multiple_choice._prompts import (
    format_mc_prompt as format_mc_prompt,
)
from glt.studies.multiple_choice._result import (
    MultipleChoiceResult as MultipleChoiceResult,
)
from glt.studies.multiple_choice._run import (
    run_multiple_choice as run_multiple_choice,
)

__all__ = [
    "format_mc_prompt",
    "load_mc_dataset",
    "MCExample",
    "MCPrompt",
    "MultipleChoiceResult",
    "plot_mc_decision",
    "plot_mc_format",
    "plot_multiple_choice",
    "run_multiple_choice",
]
