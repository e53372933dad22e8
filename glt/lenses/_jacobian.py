"""The Jacobian lens: each residual moved to the final one by the model's own average Jacobian.

Gurnee et al., "Verbalizable Representations Form a Global Workspace in Language Models"
(Transformer Circuits, 2026); TransformerLens 4.3 ships it as
``transformer_lens.tools.analysis.JacobianLens``. For residual index ``i`` the lens holds one
``[d_model, d_model]`` matrix ``J_i``, the Jacobian of the final residual with respect to residual
``i``, averaged over a corpus (`glt.lenses.fit.fit_jacobian_lens` says exactly how), and reads
``lens(h_i) = unembed(J_i h_i)``: the model's own final norm, ``W_U``, ``b_U`` and soft-cap
applied to the transported residual. It is defined by the model's causal effect, not trained
to imitate the output, so its early read-outs cannot be made by a training objective.

Index convention (glt's, `glt.ResidualStack`): ``J_i`` reads residual index ``i``, and

* index ``n_layers`` (the final residual, before the final norm) is the identity, as in the
  reference (its target *is* the final residual);
* index ``i`` for ``1 <= i < n_layers`` is the output of block ``i - 1``: **the reference
  artefact's layer ``l`` (``blocks.{l}.hook_out``) is glt's residual ``l + 1``**;
* index ``0`` (the embedding output, ``blocks.0.hook_resid_pre``) has no matrix in the reference
  format. `glt.lenses.fit.fit_jacobian_lens` fits ``J_0`` with the same estimator (the Jacobian
  of the final residual with respect to the embeddings, so the lens stays defined by the model's
  causal effect at every index); a lens read from a reference artefact without one holds the
  identity there (the logit lens at the embeddings). ``config["residual_0"]`` says which:
  ``"fitted"`` or ``"identity"``.

Relation to the tuned lens: ``J_i h = h + (J_i - I) h``, so the Jacobian lens is a tuned lens
with translator ``A_i = J_i - I``, ``b_i = 0`` (tested), fitted by differentiation rather than by
minimising KL; the logit lens is ``J_i = I``.

Files. A glt Jacobian lens is a folder like the tuned lens's, read by `glt.load_lens`:
``config.json`` (format ``glt-jacobian-lens``, sizes, convention, the unembedding fingerprint,
fit provenance) and ``params.safetensors`` (``jacobian [n_layers, d_model, d_model]``, each
``[out, in]``). The reference artefact (a ``.pt`` file with ``J`` ``{layer: [d_model, d_model]}``,
``n_prompts``, ``source_layers``, ``d_model`` and optional ``metadata``, shared by the authors'
code, TransformerLens and the published lenses) is read by `import_jacobian_lens` with
``torch.load(weights_only=True)`` and written by `export_jacobian_lens`.
"""

import io
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from glt._version import __version__
from glt.core._check import checked
from glt.core._errors import GltError
from glt.core._io import atomic_write_bytes
from glt.core._models import model_name
from glt.core._paths import existing_file
from glt.lenses._folder import lens_config, write_lens_folder
from glt.lenses._logit import LogitLens, Unembed

__all__ = ["JacobianLens", "export_jacobian_lens", "import_jacobian_lens"]

FORMAT = "glt-jacobian-lens"
FORMAT_VERSION = 1
CONVENTION = (
    "jacobian i reads residual index i: 0 = embedding output (blocks.0.hook_resid_pre), i = output "
    "of block i - 1 (the reference artefact's layer i - 1, blocks.{i-1}.hook_out); index n_layers "
    "(final residual, before the final norm) is the identity"
)
EMBED_KEY = "glt_embed_J"
"""Extra top-level key of an exported reference artefact holding a fitted ``J_0`` (readers of the
reference format ignore keys they do not know; glt reads it back so a round trip is exact)."""
_REFERENCE_KEYS = ("J", "n_prompts", "source_layers", "d_model")


class JacobianLens(LogitLens):
    """The Jacobian lens: ``logits = unembed(J_idx h)``; the identity at the final residual.

    Args:
        unembed: the model's read-out (`glt.Unembed`), shared with the logit lens.
        n_layers: the model's block count; matrices exist for indices ``0 .. n_layers - 1``.
        config: provenance recorded in ``config.json`` (model, fit, ``residual_0``).

    Attributes:
        jacobian: ``[n_layers, d_model, d_model]`` float32 buffer, ``jacobian[i]`` the ``[out, in]``
            matrix of residual index ``i`` (the identity until set, i.e. the logit lens).

    Matrices exist for block-boundary residuals only: a stack captured with ``resid_mid=True``
    (a block's residual between attention and MLP) raises GltError in `glt.readout`; read it with
    `glt.LogitLens` (``reads_resid_mid`` is False here).

    Example:
        >>> import torch
        >>> from glt.lenses._logit import Unembed
        >>> lens = JacobianLens(Unembed(torch.nn.Identity(), torch.randn(5, 11), None), n_layers=3)
        >>> _ = lens.set_jacobian(2 * torch.eye(5).expand(3, 5, 5), residual_0="fitted")
        >>> h = torch.randn(3 + 1, 2, 5)  # [layer, pos, d_model]
        >>> moved = lens.transform_stack(h)
        >>> bool(torch.allclose(moved[1], 2 * h[1])), bool((moved[3] == h[3]).all())
        (True, True)
        >>> tuple(lens(h[1], 1).shape)
        (2, 11)
    """

    name = "jacobian"
    reads_resid_mid = False  # Jacobians of block-boundary residuals only

    def __init__(self, unembed: Unembed, n_layers: int, config: dict[str, Any] | None = None) -> None:
        super().__init__(unembed, n_layers)
        d = unembed.d_model
        self.register_buffer("jacobian", torch.eye(d).repeat(self.n_layers, 1, 1))
        self.config: dict[str, Any] = {"residual_0": "identity", **(config or {})}

    @classmethod
    def from_model(cls, model: Any, config: dict[str, Any] | None = None) -> "JacobianLens":  # type: ignore[override]
        """An identity Jacobian lens (equal to the logit lens) for ``model``."""
        return cls(Unembed.from_model(model), int(model.cfg.n_layers),
                   {"model_name": model_name(model), **(config or {})})

    @property
    def residual_0(self) -> str:
        """``"fitted"`` when ``J_0`` (the embeddings) was fitted, ``"identity"`` when it was not."""
        return str(self.config.get("residual_0", "identity"))

    def set_jacobian(
        self,
        jacobian: Tensor,
        *,
        residual_0: str,
        source: str = "jacobian",
    ) -> "JacobianLens":
        """Set every matrix (``[n_layers, d_model, d_model]``, ``[out, in]``); returns the lens.

        ``residual_0`` is ``"fitted"`` or ``"identity"`` (then ``jacobian[0]`` must be the identity).
        Both usually come from a file, so they are checked here, not by type: GltError naming
        ``source`` (a file, or the argument) when the shape is not this lens's, a value is NaN/inf
        or ``residual_0`` is neither.
        """
        if residual_0 not in ("fitted", "identity"):
            raise GltError(f"{source}: residual_0 must be 'fitted' or 'identity', got {residual_0!r}: fit or "
                           "export the lens again")
        want = tuple(self.jacobian.shape)
        if not isinstance(jacobian, Tensor) or tuple(jacobian.shape) != want:
            got = tuple(jacobian.shape) if isinstance(jacobian, Tensor) else type(jacobian).__name__
            raise GltError(
                f"{source} holds {got} but this lens needs [n_layers, d_model, d_model]={want}: fit or "
                "export the lens again for this model"
            )
        if not torch.isfinite(jacobian).all():
            raise GltError(f"{source} holds NaN/inf Jacobian entries: fit the lens again")
        if residual_0 == "identity" and not torch.equal(jacobian[0].float().cpu(), torch.eye(want[1])):
            raise GltError(f"{source}: residual_0='identity' but jacobian[0] is not the identity: pass "
                           "residual_0='fitted'")
        with torch.no_grad():
            self.jacobian.copy_(jacobian.to(self.jacobian.dtype))
        self.config["residual_0"] = residual_0
        return self

    def transform_hidden(self, h: Float[Tensor, "... d_model"], idx: int) -> Float[Tensor, "... d_model"]:
        """``J_idx h`` for ``idx < n_layers`` (in float32); identity at ``idx == n_layers``."""
        self._check_idx(idx)
        if idx == self.n_layers:
            return h
        J = self.jacobian[idx]
        return h.to(J.dtype) @ J.T

    def transform_stack(self, resid: Float[Tensor, "layer ... d_model"]) -> Float[Tensor, "layer ... d_model"]:
        """`transform_hidden` for a whole stack (layer ``i`` = residual index ``i``), one einsum."""
        n = resid.shape[0]
        if n != self.n_layers + 1:
            raise GltError(
                f"resid must stack n_layers + 1 = {self.n_layers + 1} residuals on dim 0, got "
                f"{n}: pass a ResidualStack.resid of this model"
            )
        x = resid.to(self.jacobian.dtype)
        moved = torch.einsum("l...i,loi->l...o", x[:-1], self.jacobian)
        return torch.cat([moved, x[-1:]], 0)

    # ---------------------------------------------------------------- persistence
    def save(self, path: str | os.PathLike, *, extra_files: dict[str, Any] | None = None,
             dtype: torch.dtype = torch.float32) -> Path:
        """Write the lens folder (``config.json``, ``params.safetensors``) atomically; `glt.load_lens`
        reads it back (in float32). ``extra_files`` maps file names to JSON-able objects (or strings)
        written beside them. ``dtype`` float16 halves the file at ~5e-4 relative precision per entry
        (the shipped lens's choice); the default float32 round-trips exactly."""
        if dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise GltError(f"dtype must be torch.float32, torch.float16 or torch.bfloat16, got {dtype}: "
                           "pass one of those")
        return write_lens_folder(path, "Jacobian lens folder", {"jacobian": self.jacobian}, self.full_config(),
                                 extra_files, dtype=dtype)

    def full_config(self) -> dict[str, Any]:
        """The ``config.json`` content: format, sizes, convention, fingerprint, provenance."""
        return lens_config(self, FORMAT, FORMAT_VERSION, "jacobian_lens", CONVENTION)


def _read_artefact(file: Path) -> dict[str, Any]:
    try:
        payload = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling refusal, corruption or truncation
        raise GltError(
            f"Jacobian lens artefact {file} could not be read safely ({type(e).__name__}: {str(e)[:160]}): "
            "it is corrupted, truncated or holds more than tensors and plain values; download or "
            "export it again"
        ) from e
    if not isinstance(payload, dict) or "J" not in payload or "d_model" not in payload:
        got = sorted(map(str, payload))[:6] if isinstance(payload, dict) else type(payload).__name__
        raise GltError(
            f"{file} is not a Jacobian lens artefact: expected a dict with keys {list(_REFERENCE_KEYS)} "
            f"(the reference format), got {got}: pass a file written by export_jacobian_lens, "
            "TransformerLens's JacobianLens.save or the reference implementation"
        )
    return payload


def _artefact_matrices(payload: dict[str, Any], file: Path, n_layers: int, d_model: int) -> dict[int, Tensor]:
    J = payload["J"]
    try:
        have_d = int(payload["d_model"])
        layers = {int(k): v for k, v in J.items()}
    except (TypeError, ValueError, AttributeError) as e:
        raise GltError(f"Jacobian lens artefact {file} is malformed (J must map int layers to "
                       f"tensors, d_model must be an int; {e}): export it again") from e
    if have_d != d_model:
        raise GltError(f"Jacobian lens artefact {file} was fitted for d_model={have_d} but the model has "
                       f"d_model={d_model}: fit or download a lens for this model")
    want = list(range(n_layers - 1))
    if sorted(layers) != want:
        raise GltError(
            f"Jacobian lens artefact {file} holds block outputs {sorted(layers)} but the model's "
            f"n_layers={n_layers} needs every block output 0..{n_layers - 2} (the final block is the "
            "identity): fit or download a lens for this model with every source layer"
        )
    listed = payload.get("source_layers")
    if listed is not None and sorted(int(x) for x in listed) != want:
        raise GltError(f"Jacobian lens artefact {file} lists source_layers {list(listed)} but J holds "
                       f"{sorted(layers)}: the file is inconsistent; export it again")
    for layer, m in layers.items():
        if not isinstance(m, Tensor) or tuple(m.shape) != (d_model, d_model) or not m.is_floating_point():
            got = tuple(m.shape) if isinstance(m, Tensor) else type(m).__name__
            raise GltError(f"Jacobian lens artefact {file}: J[{layer}] is {got}, expected a float "
                           f"[{d_model}, {d_model}] tensor: export it again")
    return layers


def _check_target(meta: dict[str, Any], file: Path, n_layers: int) -> None:
    target = meta.get("target_layer")
    if target is not None and int(target) != n_layers - 1:
        raise GltError(f"Jacobian lens artefact {file} targets block {target}, not the model's final "
                       f"block {n_layers - 1}: refit it with the final block as the target")


def _check_fingerprint(meta: dict[str, Any], unembed: Unembed, file: Path, allow_mismatch: bool) -> None:
    want = meta.get("glt_unembed_hash")
    if not want or want == unembed.fingerprint():
        return
    msg = (f"Jacobian lens artefact {file} was fitted with unembedding hash {want} "
           f"({meta.get('model_name')}) but the model's is {unembed.fingerprint()}")
    if not allow_mismatch:
        raise GltError(msg + ": load a lens for this model, or pass allow_mismatch=True if the "
                       "unembedding is known to be equivalent")
    warnings.warn(msg + " (allow_mismatch=True)", UserWarning, stacklevel=3)


@checked
def import_jacobian_lens(
    path: str | os.PathLike, model: Any, *, allow_mismatch: bool = False
) -> JacobianLens:
    """Read a reference Jacobian lens artefact (``.pt``) as a glt `JacobianLens`, without unpickling.

    The file is read with ``torch.load(weights_only=True)``. Its layer ``l`` (the output of block
    ``l``) becomes glt's residual ``l + 1``; residual 0 gets the ``glt_embed_J`` matrix if the file
    was exported by glt with one, else the identity (``config["residual_0"] == "identity"``).

    Args:
        path: the ``.pt`` artefact.
        model: the model the lens decodes (its final norm and unembedding are used).
        allow_mismatch: accept a glt-exported artefact whose unembedding fingerprint differs
            from the model's (warns). Artefacts from elsewhere carry no fingerprint: only
            ``d_model``, the layer count and the target block are checked.

    Raises:
        GltError: an unreadable or malformed file, or one for another ``d_model`` or layer count.

    Example:
        >>> # lens = glt.import_jacobian_lens("gemma_jacobian_lens.pt", model)
        >>> # r = glt.readout(glt.capture_residuals(model, ["The capital of France is"]), lens)
    """
    file = existing_file(path, "Jacobian lens artefact")
    payload = _read_artefact(file)
    n_layers, unembed = int(model.cfg.n_layers), Unembed.from_model(model)
    layers = _artefact_matrices(payload, file, n_layers, unembed.d_model)
    meta = payload.get("metadata") if isinstance(payload.get("metadata"), dict) else {}
    _check_target(meta, file, n_layers)
    _check_fingerprint(meta, unembed, file, allow_mismatch)
    d = unembed.d_model
    embed = payload.get(EMBED_KEY)
    if embed is not None and (not isinstance(embed, Tensor) or tuple(embed.shape) != (d, d)):
        raise GltError(f"Jacobian lens artefact {file}: {EMBED_KEY} must be a [{d}, {d}] tensor: export it again")
    first = torch.eye(d) if embed is None else embed.float()
    J = torch.stack([first] + [layers[lyr].float() for lyr in range(n_layers - 1)])
    config = {
        "model_name": meta.get("model_name") or model_name(model),
        "n_prompts": int(payload.get("n_prompts") or 0),
        "imported_from": f"reference artefact {file.name}",
        "reference_metadata": {k: v for k, v in meta.items() if isinstance(v, (str, int, float, bool))},
    }
    lens = JacobianLens(unembed, n_layers, config)
    return lens.set_jacobian(J, residual_0="identity" if embed is None else "fitted", source=f"artefact {file}")


@checked
def export_jacobian_lens(
    lens: JacobianLens, path: str | os.PathLike, *, dtype: torch.dtype = torch.float32
) -> Path:
    """Write ``lens`` as a reference artefact (``.pt``) atomically; returns the path.

    Keys ``J`` (glt residual ``i`` as layer ``i - 1`` for ``i = 1 .. n_layers - 1``),
    ``n_prompts``, ``source_layers``, ``d_model`` and ``metadata`` (model name, glt version, the
    unembedding fingerprint, ``target_layer``), as TransformerLens's ``JacobianLens.load`` and the
    reference implementation read them. A fitted ``J_0`` has no slot in the reference format: it
    is written under the extra key ``glt_embed_J``, which other readers ignore and
    `import_jacobian_lens` reads back. ``dtype`` float16 halves the file (the reference's
    default) at ~1e-3 relative precision; the default float32 round-trips exactly.
    """
    if not dtype.is_floating_point:
        raise GltError(f"dtype must be a floating dtype such as torch.float32 or torch.float16, got {dtype}")
    J = lens.jacobian.detach().cpu()
    payload: dict[str, Any] = {
        "J": {i - 1: J[i].to(dtype).clone() for i in range(1, lens.n_layers)},
        "n_prompts": int(lens.config.get("n_prompts") or 0),
        "source_layers": list(range(lens.n_layers - 1)),
        "d_model": lens.d_model,
        "metadata": {
            "model_name": str(lens.config.get("model_name") or "unknown"),
            "target_layer": lens.n_layers - 1,
            "glt_version": __version__,
            "glt_unembed_hash": lens.unembed.fingerprint(),
            "glt_residual_0": lens.residual_0,
            "hook_convention": "blocks.{layer}.hook_out",
        },
    }
    if lens.residual_0 == "fitted":
        payload[EMBED_KEY] = J[0].to(dtype).clone()
    buf = io.BytesIO()
    torch.save(payload, buf)
    return atomic_write_bytes(path, buf.getvalue(), "Jacobian lens artefact")
