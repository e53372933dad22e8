"""Training checkpoints: lens, optimiser state and history, written atomically, never pickled.

A checkpoint is a folder ``<checkpoint_dir>/latest`` holding ``state.safetensors`` (translator
weights and every optimiser tensor) and ``state.json`` (step, history, the run's settings
fingerprint, optimiser scalars). It is built under a temporary name and renamed into place, so an
interruption at any moment leaves the previous complete checkpoint.
"""

import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from safetensors.torch import save as to_bytes

from glt.core._errors import GltError
from glt.core._io import atomic_dir, atomic_write_bytes, read_json, recover_dir, write_json
from glt.lenses._tuned import TunedLens

__all__ = ["load_checkpoint", "save_checkpoint", "save_tensors"]


def save_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor], rank: int = 0) -> None:
    """Write a safetensors file atomically (rank 0 only)."""


    if rank == 0:
        atomic_write_bytes(path, to_bytes({k: v.contiguous() for k, v in tensors.items()}))


def save_checkpoint(
    folder: str | os.PathLike, fingerprint: str, lens: TunedLens, opt: torch.optim.Optimizer | None,
    step: int, history: list[dict[str, Any]], rank: int = 0, search: dict[str, Any] | None = None,
) -> None:
    """Write the checkpoint for ``step`` completed steps (rank 0 only; others return)."""

    if rank != 0:
        return

    root = Path(folder)
    tensors = {"weight": lens.weight.detach().contiguous().clone(), "bias": lens.bias.detach().contiguous().clone()}
    scalars: dict[str, Any] = {}
    params = lens.translators()
    for i, p in enumerate(params if opt is not None else []):
        for key, val in opt.state.get(p, {}).items():
            if isinstance(val, torch.Tensor) and val.ndim > 0:
                tensors[f"opt.{i}.{key}"] = val.detach().contiguous().clone()
            else:
                scalars[f"{i}.{key}"] = float(val)
    with atomic_dir(root / "latest", "checkpoint") as tmp:  # creates root; OSErrors become GltError
        save_file(tensors, str(tmp / "state.safetensors"))
        write_json(tmp / "state.json", {"fingerprint": fingerprint, "step": step, "history": history,
                                        "opt_scalars": scalars, "lens_config": lens.config,
                                        **({"search": search} if search is not None else {})})


def load_checkpoint(
    folder: str | os.PathLike, fingerprint: str, lens: TunedLens, opt: torch.optim.Optimizer | None
) -> dict[str, Any] | None:
    """Restore ``lens`` and ``opt`` from ``folder/latest``; None when there is no checkpoint.

    Raises GltError when the checkpoint belongs to a run with other settings or data (resuming
    it would silently mix two runs) or when its files are corrupted.
    """

    latest = recover_dir(Path(folder) / "latest")
    if not (latest / "state.json").is_file():
        return None
    state = read_json(latest / "state.json", "checkpoint state")
    if state.get("fingerprint") != fingerprint:
        raise GltError(
            f"checkpoint {latest} belongs to a run with other settings or data (fingerprint "
            f"{state.get('fingerprint')} != {fingerprint}): delete {folder} or pass another "
            "checkpoint_dir to start afresh"
        )
    try:
        tensors = load_file(str(latest / "state.safetensors"))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise GltError(
            f"checkpoint file {latest / 'state.safetensors'} is corrupted or truncated ({str(e)[:100]}):"
            f" delete {latest} to restart from the previous step"
        ) from e
    with torch.no_grad():
        lens.weight.copy_(tensors["weight"])
        lens.bias.copy_(tensors["bias"])
    params = lens.translators()
    for i, p in enumerate(params if opt is not None else []):
        st: dict[str, Any] = {}
        for key, val in tensors.items():
            if key.startswith(f"opt.{i}."):
                st[key.split(".", 2)[2]] = val.clone()
        for key, val in state.get("opt_scalars", {}).items():
            j, name = key.split(".", 1)
            if int(j) == i:
                st[name] = torch.tensor(val) if name == "step" else val
        if st:
            opt.state[p] = st
    return state
