"""What the stages of one ``glt study`` run share: the model, its lenses and the frequency table.

`StudyContext` loads each lazily, once, and records the seconds spent (the report's set-up line).
`load_tuned_lens` / `default_lens_name` say which tuned lens a model gets; `load_jacobian_lens` and
`lens_folder_kind` read a Jacobian lens folder (``--lens-path``).
"""

import time
from pathlib import Path
from typing import Any

from glt.core._errors import GltError
from glt.core._io import read_json
from glt.core._models import load_model, model_name
from glt.data._frequency import TokenFrequency, load_frequency
from glt.data._wikipedia import WIKI_SOURCE, wikipedia_paragraphs
from glt.lenses._jacobian import FORMAT as JACOBIAN_FORMAT
from glt.lenses._jacobian import JacobianLens
from glt.lenses._logit import LogitLens
from glt.lenses._protocol import Lens
from glt.lenses._tuned import TunedLens, load_lens
from glt.lenses.fit._cached import least_squares_lens

__all__ = ["StudyContext", "default_lens_name", "lens_folder_kind", "load_jacobian_lens", "load_tuned_lens"]

_ASSETS = Path(__file__).resolve().parent.parent / "assets" / "lenses"


def default_lens_name(model: str = "default") -> str:
    """``"tuned"`` when a tuned lens ships for ``model`` (the default model), else
    ``"least_squares"`` (fitted on the spot and cached, `glt.lenses.fit._cached`)."""
    if model == "default" and (_ASSETS / "default" / "config.json").is_file():
        return "tuned"
    return "least_squares"


def load_tuned_lens(model: Any, path: str | None = None) -> TunedLens | JacobianLens:
    """The tuned lens at ``path``, or the one shipped for ``model``; GltError when there is none.

    A Jacobian lens folder at ``path`` gives that lens (`glt.load_lens` reads either kind)."""
    if path is None and not (_ASSETS / "default" / "config.json").is_file():
        raise GltError(
            "no tuned lens ships with this glt build (glt/assets/lenses/default is missing): pass "
            "--lens least_squares (fitted on the spot and cached) or --lens logit, or train one with "
            "`glt lens train` and pass --lens-path FOLDER"
        )
    name = path if path is not None else "default"
    if path is None and model_name(model) != "gemma-3-270m":
        raise GltError(
            f"glt ships a tuned lens for the default model only, not for {model_name(model)!r}: "
            "pass --lens least_squares (fitted on the spot and cached) or --lens logit, or "
            "--lens-path FOLDER with a lens trained for this model (`glt lens train`)"
        )
    return load_lens(name, model)


def lens_folder_kind(path: str) -> str:
    """``"jacobian"`` for a Jacobian lens folder (its ``config.json`` format), else ``"tuned"``."""
    cfg_file = Path(path).expanduser() / "config.json"
    cfg = read_json(cfg_file, "lens config") if cfg_file.is_file() else {}
    return "jacobian" if isinstance(cfg, dict) and cfg.get("format") == JACOBIAN_FORMAT else "tuned"


def load_jacobian_lens(model: Any, path: str | None) -> JacobianLens:
    """The Jacobian lens folder at ``path``; GltError when there is none or it holds another lens."""
    if path is None:
        raise GltError(
            "--lens jacobian needs --lens-path FOLDER: no Jacobian lens ships with glt; fit one with "
            "glt.fit_jacobian_lens(model, texts).save(FOLDER) or benchmarks/fit_jacobian_lens.py"
        )
    lens = load_lens(path, model)
    if not isinstance(lens, JacobianLens):
        raise GltError(f"--lens jacobian needs a Jacobian lens folder, but {path} holds a {lens.name} lens: "
                       f"pass --lens {lens.name}, or a folder written by JacobianLens.save")
    return lens


class StudyContext:
    """Lazily loaded model, lenses and frequency table shared by the stages of one run."""

    def __init__(self, config: Any, *, progress: bool = True) -> None:
        self.config = config
        self.progress = progress
        self._model: Any = None
        self._lenses: dict[str, Lens] = {}
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

    def lens(self, name: str) -> Lens:
        if name not in self._lenses:
            t0 = time.perf_counter()
            if name == "logit":
                self._lenses[name] = LogitLens.from_model(self.model)
            elif name == "least_squares":
                self._lenses[name] = least_squares_lens(self.model, model_arg=self.config.model,
                                                        progress=self.progress)
            elif name == "jacobian":
                self._lenses[name] = load_jacobian_lens(self.model, self.folder("jacobian"))
            else:
                self._lenses[name] = load_tuned_lens(self.model, self.folder("tuned"))
            self.setup[f"load {name} lens"] = time.perf_counter() - t0
        return self._lenses[name]

    def folder(self, kind: str) -> str | None:
        """The folder the ``kind`` lens (``"tuned"`` or ``"jacobian"``) is read from: the one of
        ``config.lens_folders`` holding that kind, else ``config.lens_path`` if it holds it (a
        Jacobian lens at ``lens_path`` also answers for ``"jacobian"`` alone), else None (the
        shipped lens)."""
        for path in getattr(self.config, "lens_folders", ()):
            if lens_folder_kind(path) == kind:
                return path
        path = self.config.lens_path
        if path is not None and (lens_folder_kind(path) == kind or kind == "jacobian"):
            return path
        return None

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
