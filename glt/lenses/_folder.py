"""The folder a fitted lens is saved as: ``config.json`` + ``params.safetensors``, written atomically.

`glt.TunedLens` and `glt.JacobianLens` (and so `glt.load_lens`) share it: `lens_config` builds the
``config.json`` (format, sizes, index convention, unembedding fingerprint, the lens's provenance)
and `write_lens_folder` writes the folder under a temporary name and renames it into place, so a
crash leaves the old lens or none, never half of one.
"""

import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import Tensor

from glt._version import __version__
from glt.core._io import atomic_dir, atomic_write_text, write_json

__all__ = ["PARAMS", "lens_config", "write_lens_folder"]

PARAMS = "params.safetensors"


def lens_config(lens: Any, fmt: str, version: int, lens_type: str, convention: str,
                **extra: Any) -> dict[str, Any]:
    """The ``config.json`` of ``lens``: its format, its own ``config`` (provenance), sizes, the
    index ``convention``, ``extra`` keys, the unembedding fingerprint, dtype and glt version."""
    return {
        "format": fmt,
        "format_version": version,
        "lens_type": lens_type,
        **lens.config,
        "d_model": lens.d_model,
        "n_layers": lens.n_layers,
        "d_vocab": lens.unembed.d_vocab,
        "layer_index_convention": convention,
        **extra,
        "unembed_hash": lens.unembed.fingerprint(),
        "dtype": "float32",
        "glt_version": __version__,
    }


def write_lens_folder(path: str | os.PathLike, what: str, tensors: dict[str, Tensor], config: dict[str, Any],
                      extra_files: dict[str, Any] | None = None, dtype: torch.dtype = torch.float32) -> Path:
    """Write ``tensors`` (as ``dtype`` safetensors, float32 by default), ``config`` (its ``dtype``
    entry set to match) and ``extra_files`` (file name -> string, or JSON-able object) into the
    folder ``path`` atomically; OSErrors become GltError naming ``path`` and ``what`` it is."""
    path = Path(path)
    with atomic_dir(path, what) as tmp:
        save_file({k: v.detach().to(dtype).contiguous().cpu() for k, v in tensors.items()}, str(tmp / PARAMS))
        write_json(tmp / "config.json", {**config, "dtype": str(dtype).removeprefix("torch.")})
        for name, obj in (extra_files or {}).items():
            if isinstance(obj, str):
                atomic_write_text(tmp / name, obj)
            else:
                write_json(tmp / name, obj)
    return path
