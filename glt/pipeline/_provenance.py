"""Provenance of a ``glt study`` run: the machine and packages, the model, lenses and data used."""

import platform
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import torch

from glt._version import __version__
from glt.core._assets import shipped_key
from glt.core._models import model_name

__all__ = ["environment", "provenance"]


def environment() -> dict[str, Any]:
    """Provenance of the machine and packages (for the report)."""
    try:
        tl = version("transformer-lens")
    except PackageNotFoundError:  # pragma: no cover - metadata missing
        tl = "?"
    return {
        "glt": __version__, "python": platform.python_version(), "torch": torch.__version__,
        "transformer_lens": tl, "platform": platform.platform(),
        "torch_threads": torch.get_num_threads(),
    }


def _short(v: Any, n: int = 300) -> Any:
    text = v if isinstance(v, str) else repr(v)
    return text if len(text) <= n else text[: n - 3] + "..."


def _choice(name: str, lens: Any, ctx: Any) -> str:
    """How the run came by lens ``name``, in words."""
    if name == "logit":
        return "logit: the model's own final norm and unembedding"
    if name in ("tuned", "jacobian"):
        path = ctx.folder(name)
        option = "--lens-path" if path == ctx.config.lens_path else "--lens"
        return f"{name}: " + (f"{option} {path}" if path else "the tuned lens shipped for the model")
    origin = getattr(lens, "origin", {}) or {}
    how = (f"reused from the cache {origin.get('folder')} (fitted {origin.get('fitted_at')})" if origin.get("reused")
           else f"fitted on the spot this run in {origin.get('fit_seconds', float('nan')):.0f} s, cached at "
           f"{origin.get('folder')}")
    return (f"least_squares: a least-squares lens on {origin.get('positions', '?')} positions of the offline "
            f"Wikipedia sample (train split), {how}")


def provenance(ctx: Any) -> dict[str, Any]:
    m = ctx.model
    prov: dict[str, Any] = {
        "model": model_name(m), "model_argument": ctx.config.model, "n_layers": int(m.cfg.n_layers),
        "d_model": int(m.cfg.d_model), "d_vocab": int(m.cfg.d_vocab), "n_ctx": int(m.cfg.n_ctx),
    }
    for name, lens in ctx._lenses.items():
        cfg = lens.full_config() if hasattr(lens, "full_config") else {}
        keep = {k: _short(cfg[k]) for k in ("model_name", "training", "least_squares", "data", "steps",
                                            "seed", "unembed_hash", "glt_version") if k in cfg}
        if name == "tuned":
            keep["folder"] = str(ctx.folder("tuned") or f"shipped (glt/assets/lenses/{shipped_key(ctx.config.model)})")
        if name == "jacobian":
            keep.update(folder=str(ctx.folder("jacobian")), fit=_short(cfg.get("fit")),
                        n_prompts=cfg.get("n_prompts"), residual_0=cfg.get("residual_0"))
        origin = getattr(lens, "origin", None)
        if name == "least_squares" and isinstance(origin, dict):
            keep["folder"] = str(origin.get("folder"))
            keep["on_the_spot"] = _short({k: origin.get(k) for k in (
                "reused", "fitted_at", "fit_seconds", "positions", "kl_training_estimate")})
        prov[f"{name} lens"] = keep or "the model's own final norm and unembedding"
    if ctx._lenses:
        prov["lens choice"] = "; ".join(_choice(name, lens, ctx) for name, lens in ctx._lenses.items())
    if ctx._freq is not None:
        prov["frequency table"] = f"{ctx._freq.corpus} ({ctx._freq.n_texts} texts, tokenizer {ctx._freq.tokenizer})"
    return prov
