"""The data of a comparison: series (one per run and lens), overlay curves, headlines, differences.

Depth convention: a residual index ``i`` of a model with ``n_layers`` blocks sits at depth
``i / n_layers``, so the embeddings are at 0 and the final residual at 1 for every model, and
layer ``i`` of an ``n``-layer run is exactly ``i / n``. Onset curves put the onset layer's
statistic (the mean over items that reach the top-k, as the study reports) on the same depth
axis against k; the early-exit trade-off puts the compute saved (already a share of the depth)
against agreement with the final output.

`Comparison` saves and loads through glt's codec (NaN as null), and ``to_dataframe`` gives one
row per point.
"""

import dataclasses
from typing import Any, ClassVar, NamedTuple

from glt.core._codec import Format, Saved
from glt.core._errors import GltError

__all__ = ["MEASURES", "Comparison", "HeadlineRow", "OverlayCurve", "Series"]

#: What each measure's x and y are: (x label, y label, y scale, what it shows).
MEASURES: dict[str, tuple[str, str, str, str]] = {
    "bucket_share": ("depth", "share of the top-1 tokens in the bucket", "linear",
                     "Frequency bucket of the top-1 over depth"),
    "flip_rate": ("depth", "flip rate (top-1 differs from the final top-1)", "linear",
                  "Flip rate of the top-1 per bucket over depth"),
    "onset_first": ("onset depth", "k (tracked token inside the top-k)", "log", "First crossing"),
    "onset_stable": ("onset depth", "k (tracked token inside the top-k)", "log", "Stable onset"),
    "option_mass": ("depth", "probability on the option tokens (median)", "linear",
                    "Format: probability mass on the options"),
    "decision_agree": ("depth", "share choosing the final option", "linear",
                       "Decision: the layer's choice among the options is the final one"),
    "settled_share": ("depth", "share of tokens settled (stable onset <= depth)", "linear",
                      "Tokens whose final top-1 has settled"),
    "exit_tradeoff": ("compute saved", "agreement with the final top-1", "linear",
                      "Confidence exit: compute saved vs agreement"),
}


@dataclasses.dataclass(frozen=True)
class Series:
    """One line family of the comparison: one run read with one lens.

    Attributes:
        label: unique legend label (model, lens and layer count; the run folder when needed).
        run: the run folder.
        model, lens, n_layers: what was read (``n_layers`` blocks: depth = index / n_layers).
        glt_version: the glt that wrote the run.
    """

    label: str
    run: str
    model: str
    lens: str
    n_layers: int
    glt_version: str


@dataclasses.dataclass(frozen=True)
class OverlayCurve:
    """One curve of one series: points ``(x[i], y[i])``, each resting on ``n[i]`` items.

    Attributes:
        study: the study key (``guess_refine``, ``pos``, ``facts``, ``mc``, ``early_exit``).
        measure: a key of `MEASURES` (what x and y are).
        group: the category within the study (a bucket, ``function``, ``n=2 token 1``, a task).
        series: the `Series` label.
        x, y: the points; x is a depth (or the compute saved) in ``[0, 1]``, NaN where undefined.
        n: the N behind each point; n_total: the N in the legend (positions or items).
        layers: for depth curves over layers, the residual index of each point (empty otherwise).
        note: how the group was selected (e.g. ``correct items``).
    """

    study: str
    measure: str
    group: str
    series: str
    x: tuple[float, ...]
    y: tuple[float, ...]
    n: tuple[int, ...]
    n_total: int
    layers: tuple[int, ...] = ()
    note: str = ""

    def __post_init__(self) -> None:
        if self.measure not in MEASURES:
            raise GltError(f"measure must be one of {sorted(MEASURES)}, got {self.measure!r}")
        if not len(self.x) == len(self.y) == len(self.n) or (self.layers and len(self.layers) != len(self.x)):
            raise GltError(f"curve {self.study}/{self.measure}/{self.group} of {self.series!r}: x, y, n "
                           f"(and layers) must have one entry per point, got {len(self.x)}, {len(self.y)}, "
                           f"{len(self.n)} and {len(self.layers)}")


class HeadlineRow(NamedTuple):
    """One headline number of one series, as the study report states it."""

    series: str
    study: str
    task: str
    measure: str
    value: str


@dataclasses.dataclass(frozen=True, eq=False)
class Comparison(Saved):
    """Study runs overlaid on a normalised depth axis (see the module docstring).

    Attributes:
        runs: the run folders, in the order given.
        series: one per (run, lens) with results.
        curves: every overlay curve.
        headlines: every series' headline numbers.
        differences: what differs between the runs besides the model and lens (glt versions,
            settings, data, missing or failed stages), one sentence each.
        study_differences: per study key, the settings that differ and concern that study.

    Example:
        >>> # cmp = glt.compare_runs(["gemma-study", "smollm2-study"], out="gemma-vs-smollm2")
        >>> # cmp.curve("guess_refine", "bucket_share", "Top 1-10", cmp.series[0].label).y
    """

    _format: ClassVar[Format] = Format("glt.Comparison", "study comparison", "run glt compare again",
                                       source="glt compare")

    runs: tuple[str, ...]
    series: tuple[Series, ...]
    curves: tuple[OverlayCurve, ...]
    headlines: tuple[HeadlineRow, ...]
    differences: tuple[str, ...]
    study_differences: dict[str, tuple[str, ...]]

    def curve(self, study: str, measure: str, group: str, series: str) -> OverlayCurve:
        """The one curve with these keys (GltError naming what exists otherwise)."""
        for c in self.curves:
            if (c.study, c.measure, c.group, c.series) == (study, measure, group, series):
                return c
        have = sorted({(c.study, c.measure, c.group) for c in self.curves if c.series == series})
        raise GltError(f"no curve {study}/{measure}/{group} for series {series!r}: it has {have[:12]}")

    def select(self, study: str, measure: str) -> list[OverlayCurve]:
        """Every curve of ``study`` and ``measure``, in series order."""
        return [c for c in self.curves if c.study == study and c.measure == measure]

    def to_dataframe(self) -> Any:
        """One row per point: study, measure, group, series (with its model, lens, n_layers), x, y, n."""
        import pandas as pd

        info = {s.label: s for s in self.series}
        rows = []
        for c in self.curves:
            s = info[c.series]
            for i in range(len(c.x)):
                rows.append({"study": c.study, "measure": c.measure, "group": c.group, "series": c.series,
                             "model": s.model, "lens": s.lens, "n_layers": s.n_layers, "run": s.run,
                             "layer": c.layers[i] if c.layers else None, "x": c.x[i], "y": c.y[i],
                             "n": c.n[i], "n_total": c.n_total, "note": c.note})
        return pd.DataFrame(rows)

    def headlines_dataframe(self) -> Any:
        """The headline table: one row per (series, study, task, measure)."""
        import pandas as pd

        return pd.DataFrame([r._asdict() for r in self.headlines],
                            columns=["series", "study", "task", "measure", "value"])
