"""What ships inside glt for which model: tuned lenses and token-frequency tables.

glt ships a trained tuned lens and a token-frequency table for each offline model, Gemma 3 270M
(the default model) and SmolLM2-135M, in ``glt/assets/lenses/<key>`` and
``glt/assets/frequency/<key>``, and a Jacobian lens for the default model in
``glt/assets/lenses/default-jacobian`` (float16). `shipped_key` maps a model (loaded, or a name as
`glt.load_model` takes it) to that key, `jacobian_key` to its Jacobian lens's; any other model has
none, and gets a lens fitted on the spot instead.
"""

from importlib import resources
from pathlib import Path
from typing import Any

from glt.core._models import DEFAULT_MODEL, DEFAULT_MODEL_ID, model_name

__all__ = ["SHIPPED", "SHIPPED_JACOBIAN", "SHIPPED_NAMES", "asset_dir", "jacobian_key", "shipped_frequency_dir",
           "shipped_jacobian_dir", "shipped_key", "shipped_lens_dir"]

#: Where the shipped assets are (inside the installed package).
ASSETS_ROOT = Path(str(resources.files("glt") / "assets"))
#: `glt.model_name` of a shipped model -> its asset folder name.
SHIPPED: dict[str, str] = {DEFAULT_MODEL_ID: "default", "smollm2-135m": "smollm2-135m"}
#: Asset keys of the models a Jacobian lens ships for (folder ``<key>-jacobian``).
SHIPPED_JACOBIAN: tuple[str, ...] = ("default",)
#: The names users pass for the shipped models (`glt.load_model`, `glt.load_lens`, ``--model``).
SHIPPED_NAMES: tuple[str, ...] = (DEFAULT_MODEL, "smollm2-135m")
#: Names `glt.load_model` resolves to SmolLM2-135M (case-insensitive, as it does; "default" is exact).
_SMOLLM2_NAMES = {"smollm2-135m": "smollm2-135m", "smollm2": "smollm2-135m"}


def shipped_key(model: Any) -> str | None:
    """The asset key of ``model`` (a loaded model, or a `glt.load_model` name), None if nothing ships.

    Example:
        >>> shipped_key("default"), shipped_key("SmolLM2"), shipped_key("gpt2")
        ('default', 'smollm2-135m', None)
    """
    if isinstance(model, str):
        name = DEFAULT_MODEL_ID if model == DEFAULT_MODEL else _SMOLLM2_NAMES.get(model.lower())
    else:
        name = model_name(model)
    return SHIPPED.get(name) if name else None


def asset_dir(kind: str, key: str) -> Path:
    """The folder of a shipped asset: ``kind`` is ``"lenses"`` or ``"frequency"``."""
    return ASSETS_ROOT / kind / key


def jacobian_key(model: Any) -> str | None:
    """The asset key of ``model``'s shipped Jacobian lens (``"<key>-jacobian"``), None if none ships.

    Example:
        >>> jacobian_key("default"), jacobian_key("smollm2-135m")
        ('default-jacobian', None)
    """
    key = shipped_key(model)
    return f"{key}-jacobian" if key in SHIPPED_JACOBIAN else None


def _shipped(kind: str, key: str | None, marker: str) -> Path | None:
    folder = asset_dir(kind, key) if key else None
    return folder if folder is not None and (folder / marker).is_file() else None


def shipped_lens_dir(model: Any) -> Path | None:
    """The shipped tuned lens folder of ``model``, None when none ships (or the build lacks it)."""
    return _shipped("lenses", shipped_key(model), "config.json")


def shipped_jacobian_dir(model: Any) -> Path | None:
    """The shipped Jacobian lens folder of ``model``, None when none ships (or the build lacks it).

    Example:
        >>> shipped_jacobian_dir("default").name, shipped_jacobian_dir("smollm2-135m")
        ('default-jacobian', None)
    """
    return _shipped("lenses", jacobian_key(model), "config.json")


def shipped_frequency_dir(model: Any) -> Path | None:
    """The shipped token-frequency table folder of ``model``, None when none ships (or the build lacks it)."""
    return _shipped("frequency", shipped_key(model), "frequency.json")
