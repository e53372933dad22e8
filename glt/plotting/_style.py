"""One plotting style for every glt figure: colour-blind-safe colours, labelled layer axes, Ns.

Colours come from the Okabe-Ito palette (safe under the common colour-vision deficiencies);
frequency buckets run warm (frequent) to cool (rare); onset variants differ by line style and
marker as well as by colour (first crossing solid with dots, stable onset dashed with squares),
so a figure printed in grey still reads. The lens is named in every title or legend. Layer axes use glt's residual
indices: 0 is the embedding output, ``n_layers`` the final residual.

Example:
    >>> with_n("DET", 1234)
    'DET (N=1,234)'
    >>> layer_tick_labels(4)
    ['emb', '1', '2', '3', '4']
"""

import contextlib
import functools
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from glt.core._errors import GltError

__all__ = [
    "BUCKET_COLORS",
    "FLIP_COLORS",
    "LAYER_AXIS_LABEL",
    "OKABE_ITO",
    "category_colors",
    "glt_style",
    "layer_tick_labels",
    "new_axes",
    "new_figure",
    "safe_text",
    "set_layer_axis",
    "with_n",
]

#: The Okabe-Ito palette (Okabe & Ito 2008), plus its customary grey.
OKABE_ITO: dict[str, str] = {
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "bluish_green": "#009E73",
    "orange": "#E69F00",
    "reddish_purple": "#CC79A7",
    "sky_blue": "#56B4E9",
    "yellow": "#F0E442",
    "black": "#000000",
    "grey": "#999999",
}

#: Category colours in the order categories are drawn (yellow last: faint on white).
_CYCLE = [OKABE_ITO[c] for c in (
    "blue", "vermillion", "bluish_green", "orange", "reddish_purple", "sky_blue", "black", "yellow",
)]

#: Frequency buckets from the most frequent (warm) to the rarest (cool); extra buckets get grey.
BUCKET_COLORS = (OKABE_ITO["vermillion"], OKABE_ITO["orange"], OKABE_ITO["sky_blue"], OKABE_ITO["blue"])

#: The gold-aware split of layer-vs-final top-1 changes.
FLIP_COLORS: dict[str, str] = {
    "right->right": OKABE_ITO["bluish_green"],
    "wrong->right": OKABE_ITO["sky_blue"],
    "right->wrong": OKABE_ITO["vermillion"],
    "wrong->wrong": OKABE_ITO["grey"],
}

LAYER_AXIS_LABEL = "layer (residual index; emb = embeddings)"

_RC = {
    "figure.dpi": 100,
    "savefig.dpi": 150,
    "savefig.bbox": "tight",
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "legend.fontsize": 8.5,
    "legend.framealpha": 0.9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.6,
    "lines.linewidth": 1.8,
    "svg.fonttype": "none",
}


@contextlib.contextmanager
def glt_style() -> Iterator[None]:
    """Context manager applying glt's matplotlib settings (fonts, grid, spines, dpi)."""
    import matplotlib.pyplot as plt

    with plt.rc_context(_RC):
        yield


def category_colors(n: int) -> list[str]:
    """``n`` distinct colour-blind-safe colours (Okabe-Ito, then repeated with grey).

    Example:
        >>> category_colors(2)
        ['#0072B2', '#D55E00']
    """
    if n < 0:
        raise GltError(f"n must be >= 0, got {n}")
    return [_CYCLE[i] if i < len(_CYCLE) else _CYCLE[i % len(_CYCLE)] for i in range(n)]


def bucket_colors(n: int) -> list[str]:
    """Colours for ``n`` frequency buckets, most frequent first."""
    return [BUCKET_COLORS[i] if i < len(BUCKET_COLORS) else OKABE_ITO["grey"] for i in range(n)]


def with_n(label: str, n: int) -> str:
    """A legend label carrying the N behind the curve."""
    return f"{label} (N={int(n):,})"


def layer_tick_labels(n_layers: int, ticks: Sequence[int] | None = None) -> list[str]:
    """Tick labels for residual indices: ``emb`` for 0, the integer otherwise."""
    ticks = range(n_layers + 1) if ticks is None else ticks
    return ["emb" if int(t) == 0 else str(int(t)) for t in ticks]


def _tick_positions(n_layers: int, max_ticks: int = 13) -> list[int]:
    step = 1
    for step in (1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 25, 50):
        if n_layers // step + 1 <= max_ticks:
            break
    ticks = list(range(0, n_layers + 1, step))
    if ticks[-1] != n_layers:
        if n_layers - ticks[-1] < step / 2 and len(ticks) > 1:
            ticks[-1] = n_layers
        else:
            ticks.append(n_layers)
    return ticks


#: The layer axis of a stack that also holds mid-block residuals (``resid_mid i``).
MID_AXIS_LABEL = "residual (emb = embeddings; i = entering block i; mid i = inside block i, after attention)"


def mid_tick_label(label: str) -> str:
    """A stack label as a tick: ``emb``, the residual index, ``mid i`` for ``resid_mid i``, ``final``.

    Example:
        >>> [mid_tick_label(x) for x in ("embed", "resid_mid 0", "resid_pre 1", "final")]
        ['emb', 'mid 0', '1', 'final']
    """
    if label == "embed":
        return "emb"
    return label.replace("resid_mid ", "mid ").replace("resid_pre ", "")


def set_layer_axis(ax: Any, n_layers: int, *, axis: str = "x", label: bool = True,
                   layer_labels: Sequence[str] | None = None) -> None:
    """Integer layer ticks (``emb`` at 0, always the final index) and the axis label.

    ``layer_labels`` (a stack's or read-out's, ``n_layers + 1`` of them) holding ``resid_mid i``
    entries label the positions with them (`mid_tick_label`) instead of residual indices, which
    they are not."""
    ticks = _tick_positions(int(n_layers))
    labels = layer_tick_labels(int(n_layers), ticks)
    axis_label = LAYER_AXIS_LABEL
    if layer_labels is not None and any(str(x).startswith("resid_mid") for x in layer_labels):
        labels, axis_label = [mid_tick_label(str(layer_labels[t])) for t in ticks], MID_AXIS_LABEL
    if axis == "x":
        ax.set_xticks(ticks, labels)
        ax.set_xlim(-0.5, n_layers + 0.5)
        if label:
            ax.set_xlabel(axis_label)
    else:
        ax.set_yticks(ticks, labels)
        if label:
            ax.set_ylabel(axis_label)


def new_figure(figsize: tuple[float, float] = (6.4, 4.0)) -> Any:
    """A new matplotlib Figure with constrained layout, outside pyplot's figure manager.

    glt never calls ``plt.show()`` and never registers its figures with pyplot (so nothing
    leaks in long runs); pyplot is imported only so that Jupyter's inline display of returned
    figures is switched on.
    """
    import matplotlib.pyplot  # noqa: F401  (activates Jupyter's figure display)
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, layout="constrained")


def new_axes(ax: Any = None, *, figsize: tuple[float, float] = (6.4, 4.0)) -> tuple[Any, Any]:
    """Return ``(figure, axes)``: the given axes and its figure, or a new figure (never shown)."""
    if ax is not None:
        return ax.figure, ax
    fig = new_figure(figsize)
    return fig, fig.add_subplot()


@functools.lru_cache(maxsize=1)
def _font_charmap() -> frozenset[int]:
    from matplotlib import font_manager, ft2font, rcParams

    path = font_manager.findfont(font_manager.FontProperties(family=rcParams["font.family"]))
    return frozenset(ft2font.FT2Font(path).get_charmap())


def safe_text(s: str) -> str:
    r"""``s`` with characters the plotting font cannot draw written as ``U+XXXX``.

    Token strings hold CJK, emoji and control characters that the default font lacks (matplotlib
    would warn and draw boxes). Newlines, tabs and carriage returns are shown escaped.

    Example:
        >>> print(safe_text("caf\u00e9\n\u7684"))
        café\nU+7684
    """
    s = s.replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")
    chars = _font_charmap()
    return "".join(c if ord(c) in chars else f"U+{ord(c):04X}" for c in s)


def as_numpy(x: Any) -> np.ndarray:
    """A tensor, list or array as a NumPy array (on the CPU)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu()
    return np.asarray(x)
