"""The timing hook: how much of a piece of work's wall-clock time the model and the lens take.

Capture (`glt.iter_residuals`' forward passes), patching (`glt.patch_layers`' patched runs) and
the read-out (`glt.readout`) report to the `Meter` that is active in the current context (a
`contextvars.ContextVar`, set by `Meter.installed`), through `forward_timer` and
`readout_timer`; with no meter active they do nothing but check the variable. Nothing is patched:
the reporting code is part of those functions. A read-out nested in another is counted once.
`glt study` turns a stage's wall time and its meter into the record it writes to
``timings/<stage>.json`` (`glt.pipeline._timing`). No memory is recorded. The variable is per thread and per
asyncio task, so concurrent stages do not mix.

Example:
    >>> meter = Meter()
    >>> with meter.installed():
    ...     with forward_timer(tokens=7):
    ...         pass
    >>> meter.forward_tokens
    7
"""

import contextlib
import contextvars
import time
from collections.abc import Callable, Iterator

__all__ = ["Meter", "forward_timer", "readout_timer"]

_ACTIVE: contextvars.ContextVar["Meter | None"] = contextvars.ContextVar("glt_meter", default=None)


class Meter:
    """Accumulates forward-pass and read-out time while installed in the current context.

    Attributes:
        forward_s, forward_tokens: seconds in forward passes and the tokens they ran (real
            tokens of captured prompts; every patched copy of a patching run).
        readout_s, readout_rows: seconds in outermost read-outs and the rows they read.
    """

    def __init__(self) -> None:
        self.forward_s = 0.0
        self.forward_tokens = 0
        self.readout_s = 0.0
        self.readout_rows = 0
        self._depth = 0

    def scaled(self, factor: float) -> "Meter":
        """A copy with every total times ``factor`` (a share of work measured together)."""
        out = Meter()
        out.forward_s, out.readout_s = self.forward_s * factor, self.readout_s * factor
        out.forward_tokens = round(self.forward_tokens * factor)
        out.readout_rows = round(self.readout_rows * factor)
        return out

    @contextlib.contextmanager
    def installed(self) -> Iterator["Meter"]:
        """Make this meter the one that capture, patching and the read-out report to."""
        token = _ACTIVE.set(self)
        try:
            yield self
        finally:
            _ACTIVE.reset(token)


@contextlib.contextmanager
def forward_timer(*, tokens: int) -> Iterator[None]:
    """Time one forward pass of ``tokens`` tokens into the active meter (if any)."""
    meter = _ACTIVE.get()
    if meter is None:
        yield
        return
    t0 = time.perf_counter()
    try:
        yield
    finally:
        meter.forward_s += time.perf_counter() - t0
        meter.forward_tokens += int(tokens)


@contextlib.contextmanager
def readout_timer() -> Iterator[Callable[[int], None]]:
    """Time a read-out into the active meter; call the yielded function with its row count.

    A read-out inside another one (e.g. a study calling `glt.readout` per batch inside a timed
    read-out) is counted by the outermost only.
    """
    meter = _ACTIVE.get()
    rows = [0]

    def count(n: int) -> None:
        rows[0] = int(n)

    if meter is None or meter._depth:
        yield count
        return
    meter._depth += 1
    t0 = time.perf_counter()
    try:
        yield count
    finally:
        meter.readout_s += time.perf_counter() - t0
        meter.readout_rows += rows[0]
        meter._depth -= 1
