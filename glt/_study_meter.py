"""The study's timing meter: how much of a stage's wall-clock time the model and the lens take.

While `Meter.installed` is active, every call of the model's forward pass (`glt.iter_residuals`'
``_forward_residuals`` and the patched runs of `glt.patch_layers`, ``_patched_final``) and of the
lens read-out (`glt.readout`) is timed with ``time.perf_counter`` and counted (forward tokens, read
rows; a read-out nested in another is counted once). The meter installs by pointing every loaded
``glt`` module's reference to those functions at a timing wrapper, and uninstalls by pointing them
back at the originals, also in modules imported while it was installed; it never nests wrappers.
`timing` turns a stage's wall time and its meter into the record ``glt study`` writes to
``timings/<stage>.json``: forward, read-out and the rest ("analysis"). It records no memory.

Example:
    >>> meter = Meter()
    >>> with meter.installed():
    ...     pass
    >>> timing("demo", "computed", 1.5, meter)["analysis_s"]
    1.5
"""

import contextlib
import sys
import time
from collections.abc import Iterator
from typing import Any

__all__ = ["Meter", "timing"]


class Meter:
    """Accumulates forward-pass and read-out time while installed (wraps glt's functions).

    Forward passes: `glt.iter_residuals`' ``_forward_residuals`` (tokens counted from the mask)
    and the patched runs of `glt.patch_layers` (``_patched_final``). Read-out: `glt.readout`
    (rows counted). Every glt module that imported one of them is patched, and restored after.
    """

    _FORWARD = (("glt._capture", "_forward_residuals"), ("glt._patching", "_patched_final"))

    def __init__(self) -> None:
        self.forward_s = 0.0
        self.forward_tokens = 0
        self.readout_s = 0.0
        self.readout_rows = 0
        self._depth = 0

    def _wrap_forward(self, orig: Any) -> Any:
        meter = self

        def forward(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return orig(*args, **kwargs)
            finally:
                meter.forward_s += time.perf_counter() - t0
                if orig.__name__ == "_forward_residuals":
                    meter.forward_tokens += int(args[2].sum())
                else:  # _patched_final(model, ids, src, layers, t_pos): len(layers) copies of ids
                    meter.forward_tokens += len(args[1]) * len(args[3])

        return forward

    def _wrap_readout(self, orig: Any) -> Any:
        meter = self

        def readout(*args: Any, **kwargs: Any) -> Any:
            if meter._depth:
                return orig(*args, **kwargs)
            meter._depth += 1
            t0 = time.perf_counter()
            try:
                out = orig(*args, **kwargs)
                meter.readout_rows += int(out.n_rows)
                return out
            finally:
                meter.readout_s += time.perf_counter() - t0
                meter._depth -= 1

        return readout

    @contextlib.contextmanager
    def installed(self) -> Iterator["Meter"]:
        import importlib

        swaps: dict[int, tuple[Any, Any]] = {}  # id(original) -> (original, wrapper)
        # the public glt.readout is an argument-checking wrapper (glt._check) of the same function
        for mod_name, attr in self._FORWARD + (("glt._readout", "readout"), ("glt", "readout")):
            try:
                orig = getattr(importlib.import_module(mod_name), attr)
            except (ImportError, AttributeError):
                continue
            orig = getattr(orig, "_glt_meter_orig", orig)
            wrap = self._wrap_readout(orig) if attr == "readout" else self._wrap_forward(orig)
            wrap._glt_meter_orig = orig
            swaps[id(orig)] = (orig, wrap)
        self._swap(swaps, to_wrapper=True)
        try:
            yield self
        finally:
            self._swap(swaps, to_wrapper=False)

    @staticmethod
    def _swap(swaps: dict[int, tuple[Any, Any]], *, to_wrapper: bool) -> None:
        """Point every glt module's reference at the wrappers (or back at the originals).

        A module imported while a stage runs binds whatever its import found (possibly a
        wrapper), so both directions look through any wrapper to its original.
        """
        for name, mod in list(sys.modules.items()):
            if mod is None or not (name == "glt" or name.startswith("glt.")):
                continue
            for attr, val in list(vars(mod).items()):
                if not callable(val):
                    continue
                orig = getattr(val, "_glt_meter_orig", val)
                if id(orig) in swaps and swaps[id(orig)][0] is orig:
                    setattr(mod, attr, swaps[id(orig)][1] if to_wrapper else orig)


def timing(stage: str, status: str, wall: float, meter: Meter | None = None, **extra: Any) -> dict[str, Any]:
    """A stage's timing record: ``wall_s`` split into ``forward_s``, ``readout_s`` and the rest
    (``analysis_s``), with ``meter``'s token and row counts (zeros without a meter) and ``extra``."""
    fwd = meter.forward_s if meter else 0.0
    rd = meter.readout_s if meter else 0.0
    return {
        "stage": stage, "status": status, "wall_s": wall, "forward_s": fwd,
        "forward_tokens": meter.forward_tokens if meter else 0, "readout_s": rd,
        "readout_rows": meter.readout_rows if meter else 0,
        "analysis_s": max(0.0, wall - fwd - rd), **extra,
    }
