"""What the stages of one ``glt study`` run share: the model, its lenses and the frequency table.

`StudyContext` loads each lazily, once, and records the seconds spent (the report's set-up line).
`load_tuned_lens` / `default_lens_name` say which tuned lens a model gets.
"""

import time
from pathlib import Path
from typing import Any

from glt.core._errors import GltError
from glt.core._models import load_model, model_name
from glt.data._frequency import TokenFrequency, load_frequency
from glt.data._wikipedia import WIKI_SOURCE, wikipedia_paragraphs
from glt.lenses._logit import LogitLens
from glt.lenses._tuned import load_lens

__all__ = ["StudyContext", "default_lens_name", "load_tuned_lens"]

_ASSETS = Path(__file__).resolve().parent.parent / "assets" / "lenses"


def default_lens_name(model: str = "default") -> str:
    """``"tuned"`` when a tuned lens ships for ``model`` (the default model), else ``"logit"``."""
    if model == "default" and (_ASSETS / "default" / "config.json").is_file():
        return "tuned"
    return "logit"


def load_tuned_lens(model: Any, path: str | None = None) -> Any:
    """The tuned lens at ``path``, or the one shipped for ``model``; GltError when there is none."""
    if path is None and not (_ASSETS / "default" / "config.json").is_file():
        raise GltError(
            "no tuned lens ships with this glt build (glt/assets/lenses/default is missing): pass "
            "--lens logit, or train one with `glt lens train` and pass --lens-path FOLDER"
        )
    name = path if path is not None else "default"
    if path is None and model_name(model) != "gemma-3-270m":
        raise GltError(
            f"glt ships a tuned lens for the default model only, not for {model_name(model)!r}: "
            "pass --lens logit, or --lens-path FOLDER with a lens trained for this model"
        )
    return load_lens(name, model)


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
            t0 = time.perf_counter()
            self._model = load_model(self.config.model)
            self.setup["load model"] = time.perf_counter() - t0
        return self._model

    def lens(self, name: str) -> Any:
        if name not in self._lenses:
            t0 = time.perf_counter()
            if name == "logit":
                self._lenses[name] = LogitLens.from_model(self.model)
            else:
                self._lenses[name] = load_tuned_lens(self.model, self.config.lens_path)
            self.setup[f"load {name} lens"] = time.perf_counter() - t0
        return self._lenses[name]

    def frequency(self) -> Any:
        """The shipped table for the default model, else one counted on the Wikipedia sample."""
        if self._freq is None:
            t0 = time.perf_counter()
            if self.config.model == "default":
                self._freq = load_frequency("default")
            else:
                texts = wikipedia_paragraphs("all", max_paragraphs=self.config.freq_paragraphs)
                self._freq = TokenFrequency.from_texts(texts, self.model, corpus=WIKI_SOURCE,
                                                       progress=self.progress)
            self.setup["frequency table"] = time.perf_counter() - t0
        return self._freq

    def prepare(self, stage: Any) -> float:
        """Load what ``stage`` needs before its timer starts; returns the seconds spent."""
        t0 = time.perf_counter()
        _ = self.model
        if stage.lens is not None:
            self.lens(stage.lens)
        if stage.spec.needs_frequency:
            self.frequency()
        return time.perf_counter() - t0

    def wiki_texts(self, n: int) -> list[str]:
        return wikipedia_paragraphs(self.config.text_split, max_paragraphs=n)
