"""The tuned lens: one affine translator per residual index, saved as safetensors, never pickled.

Translator ``i`` maps the residual at index ``i`` (0 = embedding output = Hugging Face
``hidden_states[0]`` = ``blocks.0.hook_resid_pre``; ``i`` = the residual entering block ``i``) to
``h + A_i h + b_i``, which the model's own final norm and unembedding then decode. Index
``n_layers`` (the final residual) has no translator: the lens is the identity there. This is
tuned-lens's convention, so its translator ``i`` (keys ``"{i}.weight"`` / ``"{i}.bias"``) is ours.

A glt lens is a folder: ``config.json`` (model, sizes, convention, unembedding fingerprint,
training provenance) and ``params.safetensors`` (``weight [n_layers, d_model, d_model]`` stored
like ``nn.Linear.weight`` as ``[out, in]``, ``bias [n_layers, d_model]``).
"""

import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor, nn

from glt.core._assets import SHIPPED_JACOBIAN, SHIPPED_NAMES, asset_dir, jacobian_key, shipped_key
from glt.core._check import checked
from glt.core._errors import GltError
from glt.core._io import atomic_dir, atomic_write_text, read_json, recover_dir
from glt.core._models import load_model, model_name
from glt.core._paths import existing_folder
from glt.lenses._folder import PARAMS, lens_config, write_lens_folder
from glt.lenses._jacobian import FORMAT as JACOBIAN_FORMAT
from glt.lenses._jacobian import JacobianLens
from glt.lenses._logit import LogitLens, Unembed

__all__ = ["TunedLens", "export_tuned_lens", "import_tuned_lens", "load_lens"]

FORMAT = "glt-tuned-lens"
FORMAT_VERSION = 1
CONVENTION = (
    "translator i reads residual index i: 0 = embedding output (blocks.0.hook_resid_pre, HF "
    "hidden_states[0]), i = residual entering block i; index n_layers (final residual, before "
    "the final norm) has no translator"
)


class TunedLens(LogitLens):
    """A tuned lens: ``logits = unembed(h + A_idx h + b_idx)``; the logit lens when ``A = b = 0``.

    Args:
        unembed: the model's read-out (`glt.Unembed`), shared with the logit lens.
        n_layers: the model's block count; translators exist for indices ``0 .. n_layers - 1``.
        config: provenance recorded in ``config.json`` (model name, training data, ...).

    Attributes:
        weight: ``[n_layers, d_model, d_model]`` translator matrices ``A`` (``[out, in]``).
        bias: ``[n_layers, d_model]`` translator biases ``b``.

        mid_weight, mid_bias: ``[n_layers, d_model, d_model]`` / ``[n_layers, d_model]``
            translators of each block's mid residual (``blocks.{i}.hook_resid_mid``, after
            attention, before the MLP), or None (the default).

    Mid residuals are read only by a lens that has mid translators (``reads_resid_mid`` is
    True then): `glt.fit_least_squares` fits them with ``resid_mid=True``, in the same closed
    form as the block-boundary ones, and `set_mid_translators` sets them. A KL-trained lens has
    none: a stack captured with ``resid_mid=True`` raises GltError in `glt.readout`; read it
    with `glt.LogitLens` or a least-squares lens fitted with ``resid_mid=True``.

    Example:
        >>> import torch
        >>> from glt.lenses._logit import Unembed
        >>> lens = TunedLens(Unembed(torch.nn.Identity(), torch.randn(5, 11), None), n_layers=3)
        >>> h = torch.randn(3 + 1, 2, 5)  # [layer, pos, d_model]
        >>> bool((lens.transform_stack(h) == h).all())  # zero-initialised: the logit lens
        True
        >>> tuple(lens(h[1], 1).shape)
        (2, 11)
    """

    name = "tuned"
    mid_weight: Tensor | None
    mid_bias: Tensor | None

    def __init__(self, unembed: Unembed, n_layers: int, config: dict[str, Any] | None = None) -> None:
        super().__init__(unembed, n_layers)
        d = unembed.d_model
        self.weight = nn.Parameter(torch.zeros(self.n_layers, d, d))
        self.bias = nn.Parameter(torch.zeros(self.n_layers, d))
        self.register_buffer("mid_weight", None, persistent=False)  # never trained: not a Parameter
        self.register_buffer("mid_bias", None, persistent=False)
        self.config: dict[str, Any] = dict(config or {})

    @property
    def reads_resid_mid(self) -> bool:  # type: ignore[override]
        """Whether the lens has mid translators (and so reads ``resid_mid`` residuals)."""
        return self.mid_weight is not None

    def set_mid_translators(
        self, weight: Float[Tensor, "layer d_model d_model"], bias: Float[Tensor, "layer d_model"],
        *, source: str = "mid translators",
    ) -> "TunedLens":
        """Set block ``i``'s mid-residual translator to ``h + weight[i] h + bias[i]`` (``[out, in]``);
        GltError (naming ``source``) for other shapes or non-finite values. Returns the lens."""
        _check_translators(self, weight, bias, f"{source}: the mid translators",
                           "fit them for this model (glt.fit_least_squares(model, texts, resid_mid=True))")
        self.mid_weight = weight.detach().float().to(self.weight.device).clone()
        self.mid_bias = bias.detach().float().to(self.weight.device).clone()
        return self

    @classmethod
    def from_model(cls, model: Any, config: dict[str, Any] | None = None) -> "TunedLens":  # type: ignore[override]
        """A zero-initialised tuned lens (equal to the logit lens) for ``model``."""

        cfg = {"model_name": model_name(model), **(config or {})}
        return cls(Unembed.from_model(model), int(model.cfg.n_layers), cfg)

    def translators(self) -> list[nn.Parameter]:
        """The trainable parameters (the unembedding and final norm are never trained)."""
        return [self.weight, self.bias]

    def transform_hidden(self, h: Float[Tensor, "... d_model"], idx: int) -> Float[Tensor, "... d_model"]:
        """``h + A_idx h + b_idx`` for ``idx < n_layers``; identity at ``idx == n_layers``."""
        self._check_idx(idx)
        if idx == self.n_layers:
            return h
        x = h.to(self.weight.dtype)
        return x + x @ self.weight[idx].T + self.bias[idx]

    def transform_mid(self, h: Float[Tensor, "... d_model"], block: int) -> Float[Tensor, "... d_model"]:
        """``h + M_block h + c_block`` for block ``block``'s mid residual; GltError without mid translators."""
        super().transform_mid(h, block)  # checks the translators exist and the block index
        assert self.mid_weight is not None and self.mid_bias is not None
        x = h.to(self.mid_weight.dtype)
        return x + x @ self.mid_weight[block].T + self.mid_bias[block]

    def transform_stack(self, resid: Float[Tensor, "layer ... d_model"]) -> Float[Tensor, "layer ... d_model"]:
        """`transform_hidden` for a whole stack (layer ``i`` = residual index ``i``), one einsum."""
        n = resid.shape[0]
        if n != self.n_layers + 1:
            raise GltError(
                f"resid must stack n_layers + 1 = {self.n_layers + 1} residuals on dim 0, got "
                f"{n}: pass a ResidualStack.resid of this model"
            )
        x = resid.to(self.weight.dtype)
        head = x[:-1]
        bias = self.bias.view(self.n_layers, *([1] * (x.ndim - 2)), -1)
        moved = head + torch.einsum("l...i,loi->l...o", head, self.weight) + bias
        return torch.cat([moved, x[-1:]], 0)

    # ---------------------------------------------------------------- persistence
    def save(self, path: str | os.PathLike, *, extra_files: dict[str, Any] | None = None) -> Path:
        """Write the lens folder (``config.json``, ``params.safetensors``) atomically.

        The folder is built under a temporary name beside ``path`` and renamed into place, so a
        crash leaves the old lens or none, never half of one. ``extra_files`` maps file names to
        JSON-able objects (``.json``) or strings, written into the same folder.
        """
        tensors = {"weight": self.weight, "bias": self.bias}
        if self.mid_weight is not None and self.mid_bias is not None:
            tensors.update(mid_weight=self.mid_weight, mid_bias=self.mid_bias)
        return write_lens_folder(path, "tuned lens folder", tensors, self.full_config(), extra_files)

    def full_config(self) -> dict[str, Any]:
        """The ``config.json`` content: format, sizes, convention, fingerprint, provenance."""
        return lens_config(self, FORMAT, FORMAT_VERSION, "linear_tuned_lens", CONVENTION,
                           **({"resid_mid_translators": True} if self.reads_resid_mid else {}))


def _shipped_folder(name: str) -> Path | None:
    """The shipped lens folder that ``name`` names, else None: a shipped model's name ("default",
    "smollm2-135m", ...) names its tuned lens, ``"<name>-jacobian"`` its Jacobian lens."""
    key = jacobian_key(name.removesuffix("-jacobian")) if name.endswith("-jacobian") else shipped_key(name)
    return asset_dir("lenses", key) if key else None


def _resolve_model(model: Any, cfg: dict[str, Any], where: Path) -> Any:
    if model is not None:
        return model
    name = cfg.get("model_load_name")
    if not name:
        raise GltError(
            f"load_lens({str(where)!r}) needs the model: its config.json names no loadable model; "
            "pass model=glt.load_model(...)"
        )

    return load_model(name)


def _check_fit(cfg: dict[str, Any], model: Any, unembed: Unembed, where: Path, allow_mismatch: bool) -> None:
    n_layers, d_model = int(model.cfg.n_layers), unembed.d_model
    for key, have in (("d_model", d_model), ("n_layers", n_layers)):
        if int(cfg.get(key, -1)) != have:
            raise GltError(
                f"lens {where} was trained for {key}={cfg.get(key)} but the model has {key}={have}:"
                " train or load a lens for this model"
            )
    want = cfg.get("unembed_hash")
    have_hash = unembed.fingerprint()
    if want and want not in (have_hash, unembed.fingerprint(legacy=True)):
        msg = (
            f"lens {where} was trained with unembedding hash {want} ({cfg.get('model_name')}) but "
            f"the model's is {have_hash}"
        )
        if not allow_mismatch:
            raise GltError(msg + ": load a lens for this model, or pass allow_mismatch=True if the "
                           "unembedding is known to be equivalent (e.g. re-quantised weights)")
        warnings.warn(msg + " (allow_mismatch=True)", UserWarning, stacklevel=3)


def _read_params(file: Path) -> dict[str, Tensor]:
    if not file.is_file():
        raise GltError(f"lens file {file} does not exist: the lens folder is incomplete; save or export it again")
    try:
        return load_file(str(file))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise GltError(
            f"lens file {file} is corrupted or truncated ({str(e)[:120]}): delete the lens folder "
            "and save, train or download it again"
        ) from e


def _check_translators(lens: TunedLens, weight: Tensor, bias: Tensor, what: str, fix: str) -> None:
    """GltError (``what`` holds ..., then ``fix``) unless ``weight`` / ``bias`` are finite and shaped
    ``[n_layers, d_model, d_model]`` / ``[n_layers, d_model]`` for ``lens``."""
    want_w, want_b = (lens.n_layers, lens.d_model, lens.d_model), (lens.n_layers, lens.d_model)
    if tuple(weight.shape) != want_w or tuple(bias.shape) != want_b:
        raise GltError(f"{what}: weight {tuple(weight.shape)} and bias {tuple(bias.shape)} do not fit this lens, "
                       f"which needs [n_layers, d_model, d_model]={want_w} and {want_b}: {fix}")
    if not (torch.isfinite(weight).all() and torch.isfinite(bias).all()):
        raise GltError(f"{what} hold NaN/inf values: {fix}")


def _fill(lens: TunedLens, weight: Tensor, bias: Tensor, file: Path) -> TunedLens:
    _check_translators(lens, weight, bias, f"lens file {file}: the translators",
                       "the folder does not match its config.json; retrain, save or re-export the lens")
    with torch.no_grad():
        lens.weight.copy_(weight.float())
        lens.bias.copy_(bias.float())
    return lens


@checked
def load_lens(
    path_or_name: str | os.PathLike, model: Any = None, *, allow_mismatch: bool = False
) -> TunedLens | JacobianLens:
    """Load a tuned lens: a shipped one by model name, a glt lens folder or a tuned-lens folder.

    glt ships a tuned lens for ``"default"`` (Gemma 3 270M) and ``"smollm2-135m"``; those names
    (as `glt.load_model` takes them) load the shipped lens, before any folder of that name.
    ``"default-jacobian"`` loads the Jacobian lens shipped for the default model.

    A glt folder is read by the lens kind its ``config.json`` names: a tuned lens, or a Jacobian
    lens (`glt.JacobianLens`, format ``glt-jacobian-lens``).

    Nothing is unpickled: glt folders are read from safetensors, and tuned-lens folders
    (``config.json`` + ``params.pt``) with ``torch.load(weights_only=True)`` (see
    `import_tuned_lens`).

    Args:
        path_or_name: ``"default"``, ``"smollm2-135m"``, ``"default-jacobian"`` or a folder path.
        model: the model the lens decodes; None loads the model named in ``config.json``.
        allow_mismatch: accept a lens whose unembedding fingerprint differs from the model's
            (warns). The fingerprint is taken at bfloat16 precision, so the same model in
            float32 or bfloat16 matches without it; float16 or re-quantised weights need it.
            Different ``d_model`` or ``n_layers`` always raise.

    Raises:
        GltError: missing, corrupted or inconsistent files, or a lens for another model.

    Example:
        >>> # lens = glt.load_lens("default", model)
        >>> # r = glt.readout(stack, lens)
    """
    shipped = _shipped_folder(path_or_name) if isinstance(path_or_name, str) else None
    where = shipped if shipped is not None else recover_dir(Path(path_or_name).expanduser())
    if shipped is not None and not (where / "config.json").is_file():
        raise GltError(
            f"the shipped {path_or_name!r} lens is missing from this installation ({where}): reinstall glt"
        )
    if not where.is_dir():
        raise GltError(
            f"lens {str(path_or_name)!r} is not a folder: pass a shipped lens's model name "
            f"({', '.join(sorted(SHIPPED_NAMES))}; {', '.join(f'{k}-jacobian' for k in SHIPPED_JACOBIAN)} for a "
            "Jacobian lens) or a folder holding config.json and "
            "params.safetensors (glt) or params.pt (tuned-lens)"
        )
    if not (where / PARAMS).is_file() and (where / "params.pt").is_file():
        return import_tuned_lens(where, model, allow_mismatch=allow_mismatch)
    cfg = read_json(where / "config.json", "lens config")
    if not isinstance(cfg, dict) or cfg.get("format") not in (FORMAT, JACOBIAN_FORMAT):
        raise GltError(
            f"lens config {where / 'config.json'} is not a glt lens "
            f"(format={cfg.get('format') if isinstance(cfg, dict) else None!r}):"
            " pass a folder written by TunedLens.save or JacobianLens.save, or a tuned-lens folder with params.pt"
        )
    params = _read_params(where / PARAMS)
    jacobian = cfg["format"] == JACOBIAN_FORMAT
    for key in ("jacobian",) if jacobian else ("weight", "bias"):
        if key not in params:
            raise GltError(f"lens file {where / PARAMS} lacks tensor {key!r}: save the lens again")
    model = _resolve_model(model, cfg, where)
    unembed = Unembed.from_model(model)
    _check_fit(cfg, model, unembed, where, allow_mismatch)
    keep = {k: v for k, v in cfg.items() if k not in _DERIVED}
    if jacobian:
        return JacobianLens(unembed, int(model.cfg.n_layers), keep).set_jacobian(
            params["jacobian"], residual_0=keep.get("residual_0", "identity"), source=f"lens file {where / PARAMS}")
    lens = _fill(TunedLens(unembed, int(model.cfg.n_layers), keep), params["weight"], params["bias"], where / PARAMS)
    if ("mid_weight" in params) != ("mid_bias" in params):
        raise GltError(f"lens file {where / PARAMS} holds only one of mid_weight / mid_bias: save the lens again")
    if "mid_weight" in params:
        lens.set_mid_translators(params["mid_weight"], params["mid_bias"], source=f"lens file {where / PARAMS}")
    return lens


_DERIVED = {"format", "format_version", "lens_type", "d_model", "n_layers", "d_vocab",
            "layer_index_convention", "resid_mid_translators", "unembed_hash", "dtype", "glt_version"}


@checked
def import_tuned_lens(
    path: str | os.PathLike, model: Any, *, allow_mismatch: bool = False
) -> TunedLens:
    """Read a tuned-lens checkpoint folder (``config.json`` + ``params.pt``) without unpickling.

    ``params.pt`` is read with ``torch.load(weights_only=True)``; its keys ``"{i}.weight"``
    (``[out, in]``) and ``"{i}.bias"`` become translator ``i`` (same index convention).
    tuned-lens's own ``unembed_hash`` uses another algorithm and is not checked; ``d_model`` and
    ``num_hidden_layers`` are.
    """
    where = existing_folder(path, "tuned-lens folder")
    cfg = read_json(where / "config.json", "tuned-lens config")
    if model is None:
        raise GltError(f"import_tuned_lens({str(where)!r}) needs model=: the lens decodes through its unembedding")
    if not isinstance(cfg, dict) or "d_model" not in cfg or "num_hidden_layers" not in cfg:
        raise GltError(
            f"tuned-lens config {where / 'config.json'} lacks d_model / num_hidden_layers: pass a "
            "folder written by tuned-lens's TunedLens.save"
        )
    if cfg.get("lens_type", "linear_tuned_lens") != "linear_tuned_lens":
        raise GltError(
            f"tuned-lens config {where} has lens_type={cfg.get('lens_type')!r}: only 'linear_tuned_lens' is supported"
        )
    file = where / "params.pt"
    if not file.is_file():
        raise GltError(f"tuned-lens file {file} does not exist: the folder is incomplete")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling refusal or corruption
        raise GltError(
            f"tuned-lens file {file} could not be read safely ({type(e).__name__}: {str(e)[:120]}):"
            " it is corrupted, truncated or holds more than tensors; export it again"
        ) from e
    mapped = {"d_model": cfg["d_model"], "n_layers": cfg["num_hidden_layers"]}
    unembed = Unembed.from_model(model)
    _check_fit(mapped, model, unembed, where, allow_mismatch)
    n = int(cfg["num_hidden_layers"])
    if not isinstance(state, dict) or any(f"{i}.weight" not in state for i in range(n)):
        raise GltError(
            f"tuned-lens file {file} must map '{{i}}.weight' for i in 0..{n - 1}, got keys "
            f"{sorted(state)[:4] if isinstance(state, dict) else type(state).__name__}: export it again"
        )
    d = unembed.d_model
    weight = torch.stack([state[f"{i}.weight"] for i in range(n)])
    bias = torch.stack([state.get(f"{i}.bias", torch.zeros(d)) for i in range(n)])
    lens = TunedLens(unembed, n, {
        "model_name": cfg.get("base_model_name_or_path"),
        "imported_from": f"tuned-lens folder {where.name}",
        "tuned_lens_unembed_hash": cfg.get("unembed_hash"),
    })
    return _fill(lens, weight, bias, file)


@checked
def export_tuned_lens(lens: TunedLens, path: str | os.PathLike) -> Path:
    """Write ``lens`` (a `TunedLens`) as a tuned-lens folder (``config.json`` + ``params.pt``), atomically.

    tuned-lens (``TunedLens.from_unembed_and_pretrained``) loads it; ``unembed_hash`` is left null
    because tuned-lens hashes the unembedding differently.
    """
    path = Path(path)
    with atomic_dir(path, "tuned-lens folder") as tmp:  # OSErrors become GltError naming path
        state = {}
        for i in range(lens.n_layers):
            state[f"{i}.weight"] = lens.weight[i].detach().float().clone().cpu()
            state[f"{i}.bias"] = lens.bias[i].detach().float().clone().cpu()
        torch.save(state, tmp / "params.pt")
        cfg = {
            "base_model_name_or_path": lens.config.get("model_name") or "unknown",
            "d_model": lens.d_model,
            "num_hidden_layers": lens.n_layers,
            "bias": True,
            "base_model_revision": None,
            "unembed_hash": None,
            "lens_type": "linear_tuned_lens",
        }
        atomic_write_text(tmp / "config.json", json.dumps(cfg, indent=1))
    return path
