"""Multiple choice: when the answer format appears and when the choice is made."""

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
