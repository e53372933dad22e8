"""Overlay curves from the runs' own results, each study's numbers put on the normalised depth axis.

Each ``_<study>`` function takes one loaded result of one series and returns its curves, taking
the values exactly as the result (or its own table) holds them and only dividing layers by the
series' block count: layer ``i`` becomes depth ``i / n_layers``.

* guess-then-refine: `glt.GuessRefineResult` ``bucket_share`` and ``flip_rate`` per bucket and
  layer (N = positions; per point, the positions whose top-1 falls in the bucket for flip rates);
* part of speech: the onset curves of the function and content groups (correct items where the
  run has them, else all), first crossing and stable, mean onset layer per k;
* fact recall: the onset curves per answer length n and token j of correctly predicted tokens
  (incorrect ones where the run has no correct one, as the study's own figure does);
* multiple choice: the main run's ``curves()`` table, all items: median option mass (format)
  and mean agreement with the final choice (decision), per task;
* early exit: the share of tokens settled by each depth (cumulative stable-onset histogram,
  all tokens), and the confidence policy's compute saved against agreement, per threshold.
"""

from typing import Any

from glt.compare._data import HeadlineRow, OverlayCurve, Series
from glt.compare._runs import StudyRun

__all__ = ["curves_of", "fact_outcome", "headlines_of", "pos_subset", "series_of"]


def _depth(layers: range | list[int], n_layers: int) -> tuple[float, ...]:
    return tuple(i / n_layers for i in layers)


def _floats(values: Any) -> tuple[float, ...]:
    return tuple(float(v) for v in (values.tolist() if hasattr(values, "tolist") else values))


def series_of(runs: list[StudyRun]) -> list[tuple[Series, StudyRun]]:
    """One `Series` per (run, lens) with at least one result; labels unique (folder added if needed)."""
    raw = []
    for run in runs:
        for lens in run.lenses:
            if any(s.lens == lens and s.name in run.results for s in run.stages):
                raw.append((run, lens, f"{run.model}, {lens} lens ({run.n_layers} layers)"))
    out, seen = [], set()
    for run, lens, label in raw:
        if sum(1 for _, _, other in raw if other == label) > 1:
            label = f"{label} [{run.path.name}]"
        base, i = label, 2
        while label in seen:
            label, i = f"{base} #{i}", i + 1
        seen.add(label)
        out.append((Series(label, str(run.path), run.model, lens, run.n_layers, run.glt_version), run))
    return out


def _guess_refine(res: Any, s: Series) -> list[OverlayCurve]:
    layers = range(res.bucket_share.shape[0])
    out = []
    for b, bucket in enumerate(res.bucket_labels):
        common = {"study": "guess_refine", "group": bucket, "series": s.label, "x": _depth(layers, s.n_layers),
                  "n_total": res.n_positions, "layers": tuple(layers)}
        out.append(OverlayCurve(measure="bucket_share", y=_floats(res.bucket_share[:, b]),
                                n=(res.n_positions,) * len(layers), **common))
        out.append(OverlayCurve(measure="flip_rate", y=_floats(res.flip_rate[:, b]),
                                n=tuple(int(v) for v in res.bucket_counts[:, b].tolist()), **common))
    return out


def _onsets(study: str, curves: list[tuple[str, Any]], s: Series, note: str) -> list[OverlayCurve]:
    return [OverlayCurve(study=study, measure=f"onset_{c.kind}", group=group, series=s.label,
                         x=tuple(float(m) / s.n_layers for m in c.mean), y=tuple(float(k) for k in c.ks),
                         n=tuple(int(v) for v in c.n_crossed), n_total=int(c.n), note=note)
            for group, c in curves]


def pos_subset(res: Any) -> str:
    """The items a part-of-speech comparison uses: ``correct`` when the run has them, else ``all``."""
    return "correct" if any(c.group.startswith("correct/") for c in res.curves) else "all"


def _pos(res: Any, s: Series) -> list[OverlayCurve]:
    subset = pos_subset(res)
    picked = [(c.group.split("/", 1)[1], c) for c in res.curves
              if c.group in (f"{subset}/function", f"{subset}/content")]
    return _onsets("pos", picked, s, f"{subset} items")


def fact_outcome(res: Any) -> str:
    """The answer tokens a fact comparison uses, as the study's figure: ``correct`` when the run
    has any, else ``incorrect``."""
    return "correct" if bool(res.correct.any()) else "incorrect"


def _facts(res: Any, s: Series) -> list[OverlayCurve]:
    outcome = fact_outcome(res)
    picked = []
    for c in res.curves:
        n, j, kept = c.group.split("/")
        if kept == outcome:
            picked.append((f"n={int(n[3:])} token {int(j[3:]) + 1}", c))
    return _onsets("facts", picked, s, f"{outcome} answer tokens")


def _mc(res: Any, s: Series, task: str) -> list[OverlayCurve]:
    df = res.curves()
    df = df[(df["run"] == "main") & (df["group"] == "all")]
    out = []
    for measure, stat in (("option_mass", "median"), ("decision_agree", "mean")):
        rows = df[df["measure"] == measure].sort_values("layer")
        layers = [int(v) for v in rows["layer"]]
        out.append(OverlayCurve(study="mc", measure=measure, group=task, series=s.label,
                                x=_depth(layers, s.n_layers), y=_floats(rows[stat]),
                                n=tuple(int(v) for v in rows["n"]), n_total=res.n_items, layers=tuple(layers),
                                note=f"{stat} over items, main run (not the permutation control)"))
    return out


def _early_exit(res: Any, s: Series) -> list[OverlayCurve]:
    gi = res.groups.index("all")
    n = int(res.n[gi])
    hist = res.onset_hist[gi].double()
    settled = hist.cumsum(0) / max(n, 1)
    layers = range(hist.shape[0])
    return [
        OverlayCurve(study="early_exit", measure="settled_share", group="all", series=s.label,
                     x=_depth(layers, s.n_layers), y=_floats(settled), n=(n,) * len(layers), n_total=n,
                     layers=tuple(layers), note="stable onset of the final top-1 at k=1"),
        OverlayCurve(study="early_exit", measure="exit_tradeoff", group="all", series=s.label,
                     x=_floats(res.tau_saved[gi]), y=_floats(res.tau_agreement[gi]), n=(n,) * len(res.taus),
                     n_total=n, note="thresholds " + ", ".join(f"{t:g}" for t in res.taus)),
    ]


def curves_of(s: Series, run: StudyRun) -> list[OverlayCurve]:
    """Every overlay curve of series ``s`` from its run's results (stages it lacks give none)."""
    out: list[OverlayCurve] = []
    for stage in run.stages:
        res = run.results.get(stage.name)
        if res is None or stage.lens != s.lens:
            continue
        key = stage.spec.key
        if key == "guess_refine":
            out += _guess_refine(res, s)
        elif key == "pos":
            out += _pos(res, s)
        elif key == "facts":
            out += _facts(res, s)
        elif key == "mc":
            out += _mc(res, s, stage.variant or res.task)
        elif key == "early_exit":
            out += _early_exit(res, s)
    return out


def headlines_of(s: Series, run: StudyRun) -> list[HeadlineRow]:
    """The series' headline numbers: each stage's summary rows (``key_rows``), as its report states them."""
    out = []
    for stage in run.stages:
        res = run.results.get(stage.name)
        if res is None or stage.lens != s.lens or not stage.spec.key_rows:
            continue
        rows = stage.spec.headlines(res)
        out += [HeadlineRow(s.label, stage.spec.title, stage.variant or "", rows[i][0], rows[i][1])
                for i in stage.spec.key_rows if i < len(rows)]
    return out
