"""What differs between compared runs besides the model and the lens, said in sentences.

Listed: glt versions; every study setting (`glt.pipeline.StudyConfig` field other than
``model``, ``lenses`` and ``lens_path``, which are what a comparison compares) whose values
differ, including keys a run does not record (an older glt) or this glt does not know (a newer
one); the frequency table behind the buckets; each study a series lacks (not run, or failed with
its error); part-of-speech or fact-recall runs that analyse different subsets (correct or all
items, correct or incorrect answer tokens); guess-then-refine runs with different bucket labels.
`study_differences` maps each study to the differing settings that concern it, so every section
of the report can say so where it draws the overlay.
"""

from typing import Any

from glt.compare._data import Series
from glt.compare._extract import fact_outcome, pos_subset
from glt.compare._runs import StudyRun

__all__ = ["differences", "study_differences"]

_COMPARED = ("model", "lenses", "lens_path")
_ALL = ("guess_refine", "pos", "facts", "mc", "early_exit", "patching", "heatmap")
#: The studies each setting concerns (settings not listed concern every study).
_CONCERNS = {
    "gtr_texts": ("guess_refine", "early_exit"), "gtr_max_tokens": ("guess_refine", "early_exit"),
    "freq_paragraphs": ("guess_refine", "early_exit"), "pos_items": ("pos",), "fact_items": ("facts",),
    "mc_tasks": ("mc",), "mc_items": ("mc",), "mc_shots": ("mc",), "patch_pairs": ("patching",),
    "patch_shots": ("patching",), "heatmap_text": ("heatmap",), "quick": (),
}
_MISSING = object()


def _name(run: StudyRun, runs: list[StudyRun]) -> str:
    names = [r.path.name for r in runs]
    return run.path.name if names.count(run.path.name) == 1 else str(run.path)


def _show(v: Any) -> str:
    if v is _MISSING:
        return "(not recorded)"
    return "null" if v is None else ",".join(map(str, v)) if isinstance(v, list) else str(v)


def _setting_diffs(runs: list[StudyRun]) -> dict[str, str]:
    keys = sorted({k for r in runs for k in r.config} - set(_COMPARED))
    out = {}
    for k in keys:
        vals = [r.config.get(k, _MISSING) for r in runs]
        if any(v != vals[0] for v in vals[1:]):
            unknown = [_name(r, runs) for r in runs if k in r.unknown_keys]
            extra = f" (unknown to this glt in {', '.join(unknown)}: ignored)" if unknown else ""
            out[k] = f"setting {k}: " + "; ".join(f"{_name(r, runs)} {_show(v)}" for r, v in zip(runs, vals,
                                                                                                strict=True)) + extra
    return out


def study_differences(runs: list[StudyRun]) -> dict[str, tuple[str, ...]]:
    """Per study key, the sentences of the differing settings that concern it."""
    diffs = _setting_diffs(runs)
    return {study: tuple(text for k, text in diffs.items() if study in _CONCERNS.get(k, _ALL))
            for study in _ALL}


def differences(runs: list[StudyRun], series: list[tuple[Series, StudyRun]]) -> list[str]:
    """Every difference between the runs besides the model and lens, one sentence each."""
    out = []
    versions = {r.glt_version for r in runs}
    if len(versions) > 1:
        out.append("glt version: " + "; ".join(f"{_name(r, runs)} {r.glt_version}" for r in runs))
    out += list(_setting_diffs(runs).values())
    freq = [str(r.provenance.get("frequency table", "")) for r in runs]
    if len(set(freq)) > 1:
        out.append("frequency table (defines the guess-then-refine buckets): " + "; ".join(
            f"{_name(r, runs)} {f or '(not recorded)'}" for r, f in zip(runs, freq, strict=True)))
    for key in dict.fromkeys(st.spec.key for r in runs for st in r.stages if st.spec.key != "heatmap"):
        missing = []
        for s, run in series:
            names = [st.name for st in run.stages if st.spec.key == key and st.lens == s.lens]
            lacking = [f"{n} {run.stage_status(n)}" for n in names if n not in run.results]
            if lacking and len(lacking) == len(names):
                missing.append(f"{s.label}: " + "; ".join(lacking))
            elif lacking:
                missing.append(f"{s.label}: " + "; ".join(lacking) + " (its other tasks are drawn)")
        if missing:
            title = next(st.spec.title for r in runs for st in r.stages if st.spec.key == key)
            out.append(f"{title} is missing from " + " | ".join(missing))
    for key, pick, what in (("pos", pos_subset, "part-of-speech items"),
                            ("facts", fact_outcome, "fact-recall answer tokens")):
        kept = {s.label: pick(run.results[st.name]) for s, run in series for st in run.stages
                if st.spec.key == key and st.lens == s.lens and st.name in run.results}
        if len(set(kept.values())) > 1:
            out.append(f"{what}: " + "; ".join(f"{k} uses {v} ones" for k, v in kept.items()))
    buckets = {s.label: tuple(run.results[st.name].bucket_labels) for s, run in series for st in run.stages
               if st.spec.key == "guess_refine" and st.lens == s.lens and st.name in run.results}
    if len(set(buckets.values())) > 1:
        out.append("frequency buckets: " + "; ".join(f"{k} {', '.join(v)}" for k, v in buckets.items()))
    return out
