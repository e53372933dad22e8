"""``glt compare``: study runs (models, lenses, or both) overlaid on a normalised depth axis.

It reads ``glt study`` output folders through the pipeline's own loaders (`load_study_run`), so
it sits after `glt.pipeline` in the dependency order and the CLI imports it. Depth is
``residual index / n_layers``: 0 is the embeddings and 1 the final residual of every model.
"""

from glt.compare._data import (
    MEASURES as MEASURES,
)
from glt.compare._data import (
    Comparison as Comparison,
)
from glt.compare._data import (
    HeadlineRow as HeadlineRow,
)
from glt.compare._data import (
    OverlayCurve as OverlayCurve,
)
from glt.compare._data import (
    Series as Series,
)
from glt.compare._plots import (
    plot_comparison as plot_comparison,
)
from glt.compare._report import (
    compare_runs as compare_runs,
)
from glt.compare._report import (
    write_comparison_report as write_comparison_report,
)
from glt.compare._runs import (
    StudyRun as StudyRun,
)
from glt.compare._runs import (
    load_study_run as load_study_run,
)

__all__ = [
    "compare_runs",
    "Comparison",
    "HeadlineRow",
    "load_study_run",
    "MEASURES",
    "OverlayCurve",
    "plot_comparison",
    "Series",
    "StudyRun",
    "write_comparison_report",
]
