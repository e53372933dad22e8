"""``glt study``: every study on one model as resumable, timed stages, with a report.

`study_config` / `StudyConfig` (`_run`) say what to run (`QUICK` and `FULL` are the presets);
`plan_stages` (`_plan`) expands the studies, each a `StudySpec` (`_stages`, `_specs*`), into one
stage per study, lens and variant. `run_study` runs the stages (with ``resume``, only those
without a saved result), sharing one model, its lenses and the frequency table (`_context`),
timing each (`_timing`, fed by `glt.core`'s meter), then writes the report, figures, tables and
provenance (`_report`, `_provenance`). This is where the studies meet: it imports every layer
below it, and a stage never reads another stage's output.
"""

from glt.pipeline._context import (
    default_lens_name as default_lens_name,
)
from glt.pipeline._context import (
    load_tuned_lens as load_tuned_lens,
)
from glt.pipeline._plan import (
    plan_stages as plan_stages,
)
from glt.pipeline._run import (
    FULL as FULL,
)
from glt.pipeline._run import (
    QUICK as QUICK,
)
from glt.pipeline._run import (
    StudyConfig as StudyConfig,
)
from glt.pipeline._run import (
    run_study as run_study,
)
from glt.pipeline._run import (
    study_config as study_config,
)

__all__ = [
    "default_lens_name",
    "FULL",
    "load_tuned_lens",
    "plan_stages",
    "QUICK",
    "run_study",
    "study_config",
    "StudyConfig",
]
