"""The stages of ``glt study``: how each study is run, saved, tabulated, drawn and summarised.

One `StudySpec` per study (`glt.pipeline._plan` lists them); `plan_stages` expands them into `Stage` s (one per study,
lens and variant, such as ``mc_mmlu_tuned``). Each stage reads only the config and the model, never another
stage's output, so stages can run, fail or resume in any order with the same results. The stages of one
study and variant that differ only by lens run together (``StudySpec.run`` takes them all): the model's
forward passes run once and every lens decodes the same residuals, each stage keeping its own result.
"""

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from glt.pipeline._context import StudyContext

__all__ = ["Stage", "StudySpec", "by_stage", "each_stage", "fmt", "pct"]


@dataclasses.dataclass(frozen=True)
class StudySpec:
    """How one study runs inside ``glt study``.

    ``run(ctx, stages)`` runs stages that differ only by lens (one forward pass for all of them)
    and returns ``{stage name: result}``, each result with ``save(path)``; ``load(path)`` reads it back;
    ``tables(result)`` gives ``{file suffix: DataFrame}``; ``figures(results)`` draws from
    ``{stage: result}``; ``headlines(result)`` gives ``[(label, value)]`` for the report, whose
    rows at indices ``key_rows`` also go into the report's summary at the top. ``interactive(results)``,
    when given, returns an HTML fragment that ``report.html`` shows after the figures (the layer
    explorer); ``report.md`` keeps the static figures only.
    """

    key: str
    title: str
    run: Callable[[StudyContext, Sequence["Stage"]], dict[str, Any]]
    load: Callable[[Path], Any]
    tables: Callable[[Any], dict[str, Any]]
    figures: Callable[[dict["Stage", Any]], dict[str, Any]]
    headlines: Callable[[Any], list[tuple[str, str]]]
    per_lens: bool = True
    variants: Callable[[Any], Sequence[str | None]] | None = None
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


def by_stage(stages: Sequence[Stage], lenses: Sequence[Any], results: dict[str, Any]) -> dict[str, Any]:
    """``{stage name: result}`` from a study's ``{lens.name: result}`` (stage ``i`` read with ``lenses[i]``)."""
    return {s.name: results[lens.name] for s, lens in zip(stages, lenses, strict=True)}


def each_stage(run: Callable[[StudyContext, Stage], Any]) -> Callable[[StudyContext, Sequence[Stage]], dict[str, Any]]:
    """A ``StudySpec.run`` from a function of one stage (for a study without forward passes to share)."""
    return lambda ctx, stages: {s.name: run(ctx, s) for s in stages}


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
