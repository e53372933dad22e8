"""``glt compare``: study runs overlaid on normalised depth, written as a report like ``glt study``'s.

`compare_runs` loads the runs (folders or `StudyRun` s) and returns a `Comparison`;
`write_comparison_report` writes it into a folder:

* ``report.md`` and a self-contained ``report.html`` (the study report's renderers): the
  differences between the runs first, then the series (model, lens, layer count, run folder,
  glt version), every series' headline numbers, and one section per study with its figures;
* ``figures/<name>.png`` and ``.svg`` (the study report's figure saving);
* ``data/overlay.csv`` (one row per point), ``data/headlines.csv`` and ``comparison.json``
  (`Comparison.load` reads it back).

An output folder must be new, empty or an earlier comparison (rewritten); anything else needs
``force=True``.
"""

import datetime
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from glt._version import __version__
from glt.compare._data import Comparison
from glt.compare._differences import differences, study_differences
from glt.compare._extract import curves_of, headlines_of, series_of
from glt.compare._plots import DEPTH_LABEL, comparison_figures
from glt.compare._runs import StudyRun, load_study_run
from glt.core._check import checked
from glt.core._errors import GltError
from glt.core._io import atomic_write_text, writing
from glt.core._paths import folder_target
from glt.pipeline._report import _caption, _save_figure, render_html, render_markdown

__all__ = ["compare_runs", "write_comparison_report"]

_MANIFEST = "comparison.json"
_SECTIONS = (
    ("guess_refine", "Guess-then-refine", "Share of each frequency bucket among the top-1 tokens, and how "
     "often a top-1 in that bucket differs from the final top-1 (flip rate), over depth."),
    ("pos", "Part of speech", "Mean depth at which the next word's first token first enters (and stays "
     "in) the top-k, for function and content words, against k."),
    ("facts", "Fact recall", "Mean depth at which answer token j of an n-token answer enters the top-k, "
     "for correctly predicted answer tokens (incorrect ones for a run with none correct), against k."),
    ("mc", "Multiple choice", "Median probability on the option tokens (format) and share of items whose "
     "layer choice among the options is the final choice (decision), over depth; main run only."),
    ("early_exit", "Early exit", "Share of tokens whose final top-1 has settled (stable onset at k=1) by "
     "each depth, an oracle exit's saving; and the confidence exit's compute saved against agreement."),
)


@checked
def compare_runs(
    runs: Sequence[str | os.PathLike | StudyRun],
    *,
    out: str | os.PathLike | None = None,
    force: bool = False,
    progress: bool = False,
) -> Comparison:
    """Overlay ``glt study`` runs (different models, lenses, or both) on a normalised depth axis.

    Args:
        runs: two or more run folders (``glt study --out``) or runs loaded with
            `glt.compare.load_study_run`; a run read with two lenses gives two series.
        out: write the report, figures and data into this folder (see `write_comparison_report`).
        force: write into ``out`` even if it holds something other than a comparison.
        progress: print a line per step while writing.

    Returns:
        The `Comparison`: series, overlay curves (layer ``i`` of an ``n``-layer run at depth
        ``i / n``), headline numbers and the differences between the runs.

    Raises:
        GltError: fewer than two runs, the same run twice, a folder that is not a study run, a
            damaged result file, or a run with no finished stage.

    Example:
        >>> # cmp = glt.compare_runs(["gemma-study", "smollm2-study"], out="gemma-vs-smollm2")
        >>> # [s.label for s in cmp.series], cmp.differences
    """
    if isinstance(runs, (str, bytes, os.PathLike)) or len(runs) < 2:
        raise GltError(f"runs must list two or more study run folders, got {runs!r:.120}: pass e.g. "
                       "['gemma-study', 'smollm2-study']")
    loaded = [r if isinstance(r, StudyRun) else load_study_run(r) for r in runs]
    paths = [r.path.resolve() for r in loaded]
    twice = sorted({str(p) for p in paths if paths.count(p) > 1})
    if twice:
        raise GltError(f"runs lists {twice} more than once: pass each run folder once")
    series = series_of(loaded)
    cmp = Comparison(
        runs=tuple(str(r.path) for r in loaded), series=tuple(s for s, _ in series),
        curves=tuple(c for s, run in series for c in curves_of(s, run)),
        headlines=tuple(h for s, run in series for h in headlines_of(s, run)),
        differences=tuple(differences(loaded, series)), study_differences=study_differences(loaded))
    if out is not None:
        write_comparison_report(cmp, out, force=force, progress=progress)
    return cmp


def _check_out(out: Path, runs: Sequence[str], force: bool) -> None:
    for run in runs:
        if out.resolve() == Path(run).resolve():
            raise GltError(f"--out {out} is one of the runs compared: choose another folder")
    if out.is_dir() and any(out.iterdir()) and not (out / _MANIFEST).is_file() and not force:
        raise GltError(f"--out {out} is not empty and holds no glt comparison: choose an empty or new "
                       "folder, or pass --force to write into it anyway")


def _blocks(cmp: Comparison, figs: dict[str, list[tuple[str, str]]]) -> list[tuple[str, Any]]:
    blocks: list[tuple[str, Any]] = [("h1", "glt comparison report")]
    blocks.append(("p", f"{len(cmp.series)} series from {len(cmp.runs)} `glt study` runs, written "
                   f"{datetime.datetime.now().isoformat(timespec='seconds')} by glt {__version__}. Depth is "
                   f"normalised: {DEPTH_LABEL}, so layer i of an n-layer model sits at i/n. Each legend "
                   "gives the model, the lens, the layer count and the N behind the curve."))
    blocks.append(("h2", "Differences between the runs"))
    if cmp.differences:
        blocks.append(("p", "Besides the model and the lens, these differ; numbers that depend on them are "
                       "not like for like:"))
        blocks.append(("table", (["difference"], [[d] for d in cmp.differences])))
    else:
        blocks.append(("p", "None besides the model and the lens: same glt version, settings, data and stages."))
    blocks.append(("h2", "Series"))
    blocks.append(("table", (["series", "model", "lens", "layers", "glt", "run folder"],
                             [[s.label, s.model, s.lens, s.n_layers, s.glt_version, s.run] for s in cmp.series])))
    if cmp.headlines:
        blocks.append(("h2", "Headline numbers"))
        blocks.append(("p", "Each run's headline numbers as its own report states them, with their N."))
        blocks.append(("table", (["series", "study", "task", "measure", "value"], [list(r) for r in cmp.headlines])))
    for key, title, text in _SECTIONS:
        if key not in figs:
            continue
        blocks.append(("h2", title))
        blocks.append(("p", text))
        if cmp.study_differences.get(key):
            blocks.append(("p", "Settings that differ for this study: " + "; ".join(cmp.study_differences[key]) + "."))
        have = {c.series for c in cmp.curves if c.study == key}
        lacking = [s.label for s in cmp.series if s.label not in have]
        if lacking:
            blocks.append(("p", "Not drawn (no result in the run): " + "; ".join(lacking) + "."))
        for path, caption in figs[key]:
            blocks.append(("figure", (path, caption)) if path else ("p", caption))
    blocks.append(("p", "Data: `data/overlay.csv` (one row per point: x is the depth, or the compute saved for "
                   "the confidence exit), `data/headlines.csv`, `comparison.json` (glt.compare.Comparison.load)."))
    return blocks


@checked
def write_comparison_report(comparison: Comparison, out: str | os.PathLike, *, force: bool = False,
                            progress: bool = False) -> Path:
    """Write ``comparison``'s report (``report.md``, ``report.html``), figures and data into ``out``.

    Args:
        comparison: a `Comparison` from `compare_runs` (or `Comparison.load`).
        out: the output folder: new, empty, or an earlier comparison, which is rewritten.
        force: write into a folder holding other files.
        progress: print a line per step.

    Returns:
        ``out`` as a Path.
    """
    folder = folder_target(out, "comparison output folder")
    _check_out(folder, comparison.runs, force)
    with writing(folder, "comparison output folder"):
        (folder / "figures").mkdir(parents=True, exist_ok=True)
        (folder / "data").mkdir(parents=True, exist_ok=True)
    figs: dict[str, list[tuple[str, str]]] = {}
    for name, fig in comparison_figures(comparison).items():
        if progress:
            print(f"glt compare: figure {name}")
        key = next(k for k, _, _ in _SECTIONS if name.startswith(k))
        figs.setdefault(key, []).append((_save_figure(fig, folder / "figures", name), _caption(fig, name)))
    atomic_write_text(folder / "data" / "overlay.csv", comparison.to_dataframe().to_csv(index=False))
    atomic_write_text(folder / "data" / "headlines.csv", comparison.headlines_dataframe().to_csv(index=False))
    comparison.save(folder / _MANIFEST)
    blocks = _blocks(comparison, figs)
    atomic_write_text(folder / "report.md", render_markdown(blocks))
    atomic_write_text(folder / "report.html", render_html(blocks, folder, "glt comparison report"))
    return folder
