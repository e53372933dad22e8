"""A stage's timing record: its wall time split into forward passes, read-outs and the rest.

`glt study` runs each stage under a `glt.core._meter.Meter` and writes `timing`'s record to
``timings/<stage>.json``.

Example:
    >>> timing("demo", "computed", 1.5)["analysis_s"]
    1.5
"""

from typing import Any

from glt.core._meter import Meter

__all__ = ["timing"]


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
