"""What the stages of one ``glt study`` run share: the model, its lenses and the frequency table.

`StudyContext` loads each lazily, once, and records the seconds spent (the report's set-up line).
`load_tuned_lens` / `default_lens_name` say which tuned lens a model gets; `load_jacobian_lens` and
`lens_folder_kind` read a Jacobian lens folder (``--lens-path``).
"""

import time
from pathlib import Path
from typing import Any

from glt.core._assets import (
    SHIPPED_NAMES,
    asset_dir,
    shipped_frequency_dir,
    shipped_jacobian_dir,
    shipped_key,
    shipped_lens_dir,
)
from glt.core._capture import has_resid_mid
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

__all__ = ["StudyContext", "default_lens_name", "lens_folder", "lens_folder_kind", "load_jacobian_lens",
           "load_tuned_lens", "no_shipped_lens", "reads_resid_mid"]


def default_lens_name(model: str = "default") -> str:
    """``"tuned"`` when a tuned lens ships for ``model`` (a `glt.load_model` name: the default
    model or SmolLM2-135M), else ``"least_squares"`` (fitted on the spot and cached,
    `glt.lenses.fit._cached`)."""
    return "tuned" if shipped_lens_dir(model) is not None else "least_squares"


def no_shipped_lens(model: Any, option: str = "--lens tuned") -> GltError:
    """The error for asking for the shipped tuned lens of a model that has none."""
    name = model if isinstance(model, str) else model_name(model)
    key = shipped_key(model)
    why = (f"this glt build lacks it ({asset_dir('lenses', key)} is missing)" if key
           else f"glt ships tuned lenses for {' and '.join(repr(n) for n in SHIPPED_NAMES)} only, not for {name!r}")
    return GltError(
        f"{option}: {why}: pass --lens least_squares (fitted on the spot and cached) or --lens logit, "
        "or --lens-path FOLDER with a lens trained for this model (`glt lens train`)"
    )


def load_tuned_lens(model: Any, path: str | None = None) -> TunedLens | JacobianLens:
    """The tuned lens at ``path``, or the one shipped for ``model``; GltError when there is none.

    A Jacobian lens folder at ``path`` gives that lens (`glt.load_lens` reads either kind)."""
    if path is not None:
        return load_lens(path, model)
    folder = shipped_lens_dir(model)
    if folder is None:
        raise no_shipped_lens(model)
    return load_lens(folder, model)


def lens_folder_kind(path: str) -> str:
    """``"jacobian"`` for a Jacobian lens folder (its ``config.json`` format), else ``"tuned"``."""
    cfg_file = Path(path).expanduser() / "config.json"
    cfg = read_json(cfg_file, "lens config") if cfg_file.is_file() else {}
    return "jacobian" if isinstance(cfg, dict) and cfg.get("format") == JACOBIAN_FORMAT else "tuned"


def lens_folder(config: Any, kind: str) -> str | None:
    """The folder a run reads the ``kind`` lens (``"tuned"`` or ``"jacobian"``) from: the one of
    ``config.lens_folders`` holding that kind, else ``config.lens_path`` if it holds it (a Jacobian
    lens at ``lens_path`` also answers for ``"jacobian"`` alone), else None (the shipped lens)."""
    for path in getattr(config, "lens_folders", ()):
        if lens_folder_kind(path) == kind:
            return path
    path = config.lens_path
    if path is not None and (lens_folder_kind(path) == kind or kind == "jacobian"):
        return path
    return None


def reads_resid_mid(config: Any, name: str) -> bool:
    """Whether the run's ``name`` lens has ``resid_mid`` translators: the least-squares lens (the run
    fits them with it), a tuned lens folder saved with them (``resid_mid_translators`` in its
    ``config.json``); not the logit lens's name (it needs none), a shipped KL-trained lens or a
    Jacobian lens."""
    if name == "least_squares":
        return True
    folder = lens_folder(config, "tuned") if name == "tuned" else None
    cfg_file = Path(folder).expanduser() / "config.json" if folder is not None else None
    cfg = read_json(cfg_file, "lens config") if cfg_file is not None and cfg_file.is_file() else {}
    return isinstance(cfg, dict) and cfg.get("resid_mid_translators") is True


def load_jacobian_lens(model: Any, path: str | None) -> JacobianLens:
    """The Jacobian lens folder at ``path``, or (``path`` None) the one shipped for ``model``;
    GltError when there is none or it holds another lens."""
    if path is None:
        path = shipped_jacobian_dir(model)
    if path is None:
        raise GltError(
            f"--lens jacobian needs --lens-path FOLDER: no Jacobian lens ships for {model_name(model)!r} (one ships "
            "for the default model only); fit one with glt.fit_jacobian_lens(model, texts).save(FOLDER) or "
            "benchmarks/fit_jacobian_lens.py"
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
                # with mid translators where the blocks have a mid residual: the sublayer stage reads them
                self._lenses[name] = least_squares_lens(self.model, model_arg=self.config.model,
                                                        resid_mid=has_resid_mid(self.model), progress=self.progress)
            elif name == "jacobian":
                self._lenses[name] = load_jacobian_lens(self.model, self.folder("jacobian"))
            else:
                self._lenses[name] = load_tuned_lens(self.model, self.folder("tuned"))
            self.setup[f"load {name} lens"] = time.perf_counter() - t0
        return self._lenses[name]

    def folder(self, kind: str) -> str | None:
        """The folder the ``kind`` lens is read from (`lens_folder`)."""
        return lens_folder(self.config, kind)

    def frequency(self) -> Any:
        """The shipped table of the model (default model, SmolLM2-135M), else one counted on the
        Wikipedia sample."""
        if self._freq is None:
            t0 = time.perf_counter()
            folder = shipped_frequency_dir(self.config.model)
            if folder is not None:
                self._freq = load_frequency(folder)
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
