"""The studies ``glt study`` runs, in order, and their expansion into stages.

Each study's `StudySpec` lives in a ``glt.pipeline._specs*`` module; `specs` lists them in the
order the report shows them, and `plan_stages` expands them into `Stage` s (one per study, lens
and variant, such as ``mc_mmlu_tuned``).
"""

from collections.abc import Sequence
from typing import Any

from glt.core._errors import GltError
from glt.pipeline._specs import (
    TextReadout,
    heatmap_spec,
    multiple_choice_spec,
    part_of_speech_spec,
    patching_spec,
)
from glt.pipeline._specs_fact_recall import fact_recall_spec
from glt.pipeline._specs_guess_then_refine import early_exit_spec, guess_then_refine_spec, sublayer_spec
from glt.pipeline._stages import Stage, StudySpec

__all__ = ["TextReadout", "plan_stages", "specs"]


def specs() -> list[StudySpec]:
    """The studies in the order `glt study` runs them."""
    return [heatmap_spec(), guess_then_refine_spec(), sublayer_spec(), part_of_speech_spec(), fact_recall_spec(),
            multiple_choice_spec(), early_exit_spec(), patching_spec()]


def plan_stages(config: Any, only: Sequence[str] | None = None) -> list[Stage]:
    """Expand the studies into stages for ``config.lenses``; ``only`` filters by name or key."""
    plan: list[Stage] = []
    for spec in specs():
        variants = list(spec.variants(config)) if spec.variants else [None]
        lenses = list(config.lenses) if spec.per_lens else [None]
        for lens in lenses:
            for v in variants:
                parts = [spec.key] + ([v] if v else []) + ([lens] if lens else [])
                plan.append(Stage("_".join(parts), spec, lens, v))
    if only is not None:
        names = {s.name for s in plan} | {s.spec.key for s in plan}
        unknown = sorted(set(only) - names)
        if unknown:
            raise GltError(f"stages {unknown} are unknown: choose from {sorted(names)}")
        plan = [s for s in plan if s.name in only or s.spec.key in only]
    return plan
