"""The stages of ``glt study``: how each study is run, saved, tabulated, drawn and summarised.

One `StudySpec` per study; `plan_stages` expands them into `Stage` s (one per study, lens and
variant, such as ``mc_mmlu_tuned``). Each stage reads only the config and the model, never another
stage's output, so stages can run, fail or resume in any order with the same results.
"""

import dataclasses
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from glt._errors import GltError

__all__ = ["STUDIES", "Stage", "StudyContext", "StudySpec", "plan_stages"]


class StudyContext:
    """Lazily loaded model, lenses and frequency table shared by the stages of one run."""

    def __init__(self, config: Any, *, progress: bool = True) -> None:
        self.config = config
        self.progress = progress
        self._model: Any = None
        self._lenses: dict[str, Any] = {}
        self._freq: Any = None
        self.setup: dict[str, float] = {}
        self.results: dict[str, Any] = {}

    @property
    def loaded(self) -> bool:
        return self._model is not None

    @property
    def model(self) -> Any:
        if self._model is None:
            from glt._models import load_model

            t0 = time.perf_counter()
            self._model = load_model(self.config.model)
            self.setup["load model"] = time.perf_counter() - t0
        return self._model

    def lens(self, name: str) -> Any:
        if name not in self._lenses:
            t0 = time.perf_counter()
            if name == "logit":
                from glt._lens import LogitLens

                self._lenses[name] = LogitLens.from_model(self.model)
            else:
                from glt._study import load_tuned_lens

                self._lenses[name] = load_tuned_lens(self.model, self.config.lens_path)
            self.setup[f"load {name} lens"] = time.perf_counter() - t0
        return self._lenses[name]

    def frequency(self) -> Any:
        """The shipped table for the default model, else one counted on the Wikipedia sample."""
        if self._freq is None:
            from glt._frequency import TokenFrequency, load_frequency

            t0 = time.perf_counter()
            if self.config.model == "default":
                self._freq = load_frequency("default")
            else:
                from glt._corpus import WIKI_SOURCE, wikipedia_paragraphs

                texts = wikipedia_paragraphs("all", max_paragraphs=self.config.freq_paragraphs)
                self._freq = TokenFrequency.from_texts(texts, self.model, corpus=WIKI_SOURCE,
                                                       progress=self.progress)
            self.setup["frequency table"] = time.perf_counter() - t0
        return self._freq

    def prepare(self, stage: "Stage") -> float:
        """Load what ``stage`` needs before its timer starts; returns the seconds spent."""
        t0 = time.perf_counter()
        _ = self.model
        if stage.lens is not None:
            self.lens(stage.lens)
        if stage.spec.needs_frequency:
            self.frequency()
        return time.perf_counter() - t0

    def wiki_texts(self, n: int) -> list[str]:
        from glt._corpus import wikipedia_paragraphs

        return wikipedia_paragraphs(self.config.text_split, max_paragraphs=n)


@dataclasses.dataclass(frozen=True)
class StudySpec:
    """How one study runs inside ``glt study``.

    ``run(ctx, stage)`` returns a result with ``save(path)``; ``load(path)`` reads it back;
    ``tables(result)`` gives ``{file suffix: DataFrame}``; ``figures(results)`` draws from
    ``{stage: result}``; ``headlines(result)`` gives ``[(label, value)]`` for the report, whose
    rows at indices ``key_rows`` also go into the report's summary at the top.
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


def _registry() -> list[StudySpec]:
    from glt import _study_specs

    return _study_specs.specs()


def plan_stages(config: Any, only: Sequence[str] | None = None) -> list[Stage]:
    """Expand the studies into stages for ``config.lenses``; ``only`` filters by name or key."""
    plan: list[Stage] = []
    for spec in _registry():
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


STUDIES = _registry
