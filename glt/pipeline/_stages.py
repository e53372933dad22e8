"""The stages of ``glt study``: how each study is run, saved, tabulated, drawn and summarised.

One `StudySpec` per study (`glt.pipeline._plan` lists them); `plan_stages` expands them into `Stage` s (one per study,
lens and variant, such as ``mc_mmlu_tuned``). Each stage reads only the config and the model, never another
stage's output, so stages can run, fail or resume in any order with the same results.
"""

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from glt.pipeline._context import StudyContext

__all__ = ["Stage", "StudySpec", "fmt", "pct"]


@dataclasses.dataclass(frozen=True)
class StudySpec:
    """How one study runs inside ``glt study``.

    ``run(ctx, stage)`` returns a result with ``save(path)``; ``load(path)`` reads it back;
    ``tables(result)`` gives ``{file suffix: DataFrame}``; ``figures(results)`` draws from
    ``{stage: result}``; ``headlines(result)`` gives ``[(label, value)]`` for the report, whose
    rows at indices ``key_rows`` also go into the report's summary at the top. ``interactive(results)``,
    when given, returns an HTML fragment that ``report.html`` shows after the figures (the layer
    explorer); ``report.md`` keeps the static figures only.
    """

    key: str
    title: str
    run: Callable[[StudyContext, "Stage"], Any]
    load: Callable[[Path], Any]
    tables: Callable[[Any], dict[str, Any]]
    figures: Callable[[dict["Stage", Any]], dict[str, Any]]
    headlines: Callable[[Any], list[tuple[str, str]]]
    per_lens: bool = True
    variants: Callable[[Any], Sequence[str]] | None = None
    needs_frequency: bool = False
    description: str = ""
    key_rows: tuple[int, ...] = (0, 1)
    interactive: Callable[[dict["Stage", Any]], str] | None = None

    def save(self, result: Any, path: Path) -> Any:
        return result.save(path)


@dataclasses.dataclass(frozen=True)
class Stage:
    """One unit of work: a study for one lens (and variant); its result file is ``<name>.json``."""

    name: str
    spec: StudySpec
    lens: str | None
    variant: str | None = None

    def __hash__(self) -> int:
        return hash(self.name)


def fmt(x: Any, digits: int = 2) -> str:
    """``x`` with ``digits`` decimals ("n/a" for NaN; non-numbers as text)."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return str(x)
    return "n/a" if v != v else f"{v:.{digits}f}"


def pct(x: Any) -> str:
    """``x`` as a whole percentage ("n/a" for NaN)."""
    v = float(x)
    return "n/a" if v != v else f"{100 * v:.0f}%"
