"""``glt study``: every study on one model as resumable, timed stages, with a report."""

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
