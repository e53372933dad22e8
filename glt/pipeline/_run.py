"""``glt study``: every study on one model, resumable stage by stage, timed, with a report.

A study is a list of stages (``guess_refine_tuned``, ``pos_tuned``, ..., ``patching_tuned``; one
per study and lens, see `glt.pipeline._stages`). Each stage runs alone on the model and writes its
result atomically to ``DIR/data/<stage>.json`` (its completion marker) after its tables
(``DIR/data/<stage>*.csv``) and its timing (``DIR/timings/<stage>.json``). With ``resume=True`` a
stage whose result file exists and loads is never recomputed; results do not depend on the order
or the number of runs, so a killed and resumed study gives exactly the files of an uninterrupted
one. Figures (PNG and SVG) and ``report.md`` / ``report.html`` are rebuilt from the saved results
at the end of every run.

Timing: every stage's wall-clock time is split into the model's forward passes
(`glt.iter_residuals`' forward calls), the lens read-out (`glt.readout` calls) and the rest
("analysis"): those functions report to the `glt.core._meter` meter active while the stage runs
(nothing is patched); plotting and the report are timed as their own stages.

Example:
    >>> cfg = study_config(model="default", lens="logit", quick=True)
    >>> cfg.lenses, cfg.quick
    (('logit',), True)
"""

import dataclasses
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from tqdm.auto import tqdm

from glt._version import __version__
from glt.core._check import checked
from glt.core._codec import Format, read_tagged, write_tagged
from glt.core._errors import GltError
from glt.core._io import atomic_write_text, read_json, write_json, writing
from glt.core._meter import Meter
from glt.core._paths import folder_target
from glt.pipeline._context import StudyContext, default_lens_name, lens_folder_kind
from glt.pipeline._plan import plan_stages
from glt.pipeline._report import write_report
from glt.pipeline._timing import timing

__all__ = [
    "FULL",
    "QUICK",
    "StudyConfig",
    "run_study",
    "study_config",
]

_MANIFEST = "study.json"
_MANIFEST_FORMAT = Format("glt.study", "study manifest", "pass --force to recompute the study, or choose another --out",
                          source="glt study")


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    """What a study runs: the model, lenses and data sizes (every field changes the results).

    Attributes:
        model: model name or path (`glt.load_model`).
        lenses: ``("tuned",)``, ``("least_squares",)``, ``("logit",)`` or ``("tuned", "logit")``.
        lens_path: tuned-lens folder (None: the shipped lens of the model).
        quick: whether the sizes are the quick preset (informational).
        seed: data-sampling seed.
        batch_size: texts per forward pass.
        gtr_texts, gtr_max_tokens: guess-then-refine passages and tokens read per passage.
        pos_items: part-of-speech items (prefix, tag, next word) to read.
        fact_items: fact prompts (None: every shipped prompt).
        mc_tasks, mc_items, mc_shots: multiple-choice tasks, items per task and shots.
        patch_pairs, patch_shots: (MMLU target, SST-2 source) prompt pairs patched at every
            layer, and the shots in each prompt.
        heatmap_text: the text drawn as a layer x position heatmap.
        freq_paragraphs: Wikipedia paragraphs counted for a model without a shipped frequency
            table (None: all).
        text_split: Wikipedia split the studies read (``heldout``: not used to train the lens).
    """

    model: str = "default"
    lenses: tuple[str, ...] = ("logit",)
    lens_path: str | None = None
    quick: bool = False
    seed: int = 0
    batch_size: int = 8
    gtr_texts: int = 400
    gtr_max_tokens: int = 64
    pos_items: int = 600
    fact_items: int | None = None
    mc_tasks: tuple[str, ...] = ("mmlu", "sst2")
    mc_items: int = 200
    mc_shots: int = 4
    patch_pairs: int = 24
    patch_shots: int = 2
    heatmap_text: str = "The capital of France is Paris, and the capital of Germany is"
    freq_paragraphs: int | None = None
    text_split: str = "heldout"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "StudyConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise GltError(f"unknown study config keys {unknown}: use fields of StudyConfig {sorted(names)}")
        kw = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        return cls(**kw)


#: Sizes of ``glt study --quick`` (about 10 minutes on 2 CPU cores with the default model).
QUICK: dict[str, Any] = {
    "quick": True, "gtr_texts": 48, "gtr_max_tokens": 32, "pos_items": 60, "fact_items": 60,
    "mc_items": 24, "mc_shots": 2, "patch_pairs": 3, "patch_shots": 1,
}
#: Sizes of the full ``glt study``.
FULL: dict[str, Any] = {"quick": False}


@checked  # the CLI's values too: a wrong --lens is a GltError listing the lenses
def study_config(
    *,
    model: str = "default",
    lens: Literal["tuned", "least_squares", "logit", "both"] | None = None,
    quick: bool = False,
    config_file: str | None = None,
    lens_path: str | None = None,
) -> StudyConfig:
    """Resolve the CLI options into a `StudyConfig` (quick preset, then the JSON overrides).

    ``lens`` None picks the shipped tuned lens where one ships for ``model`` (or the one at
    ``lens_path``), else ``"least_squares"``: a lens fitted on the spot on the offline Wikipedia
    sample and cached (`glt.lenses.fit._cached`). ``"both"`` is the tuned and the logit lens. A
    ``lens_path`` holding a Jacobian lens (`glt.JacobianLens`) runs as the lens ``"jacobian"``.
    """
    if lens is None:
        lens = "tuned" if lens_path else default_lens_name(model)
    if lens_path is not None and lens in ("least_squares", "logit"):
        raise GltError(f"--lens-path is the tuned lens's folder, but --lens is {lens!r}: pass --lens "
                       "tuned (or both) with it, or drop --lens-path")
    lenses = ("tuned", "logit") if lens == "both" else (lens,)
    if lens_path is not None and lens_folder_kind(lens_path) == "jacobian":
        lenses = tuple("jacobian" if x == "tuned" else x for x in lenses)
    if "tuned" in lenses and lens_path is None:
        if model != "default":
            raise GltError(
                f"--lens {lens}: glt ships a tuned lens for the default model only, not for "
                f"{model!r}: pass --lens least_squares (fitted on the spot and cached), --lens "
                "logit, or --lens-path FOLDER with a lens trained for it (`glt lens train`)"
            )
        if default_lens_name(model) != "tuned":
            raise GltError(
                f"--lens {lens}: no tuned lens ships with this glt build yet "
                "(glt/assets/lenses/default is missing): pass --lens least_squares, --lens logit, "
                "or --lens-path FOLDER"
            )
    kw: dict[str, Any] = {"model": model, "lenses": lenses, "lens_path": lens_path}
    kw.update(QUICK if quick else FULL)
    if config_file is not None:
        extra = read_json(config_file, "study config")
        if not isinstance(extra, dict):
            raise GltError(f"study config {config_file} must hold a JSON object of StudyConfig fields")
        kw.update(extra)
    return StudyConfig.from_dict(kw)


def _check_out(out: Path, config: StudyConfig, resume: bool, force: bool) -> None:
    manifest = out / _MANIFEST
    if resume and force:
        raise GltError("pass either --resume (keep finished stages) or --force (recompute all), not both")
    if manifest.is_file():
        old = read_tagged(manifest, _MANIFEST_FORMAT) if resume else {}
        if resume and old.get("config") != json.loads(json.dumps(config.to_dict())):
            saved = old.get("config") if isinstance(old.get("config"), dict) else {}
            diff = sorted(k for k, v in config.to_dict().items() if json.loads(json.dumps(v)) != saved.get(k))
            raise GltError(
                f"--resume: {out} holds a study with different settings ({', '.join(diff)}): "
                "rerun with the same options, or pick a new --out, or pass --force to recompute"
            )
        if not resume and not force:
            raise GltError(
                f"--out {out} already holds a study: pass --resume to finish it, --force to "
                "recompute it, or choose another --out"
            )
    elif out.is_dir() and any(out.iterdir()) and not force:
        raise GltError(
            f"--out {out} is not empty and holds no glt study: choose an empty or new folder, or "
            "pass --force to write into it anyway"
        )


@checked
def run_study(
    config: StudyConfig,
    out: str | Path,
    *,
    resume: bool = False,
    force: bool = False,
    stages: Sequence[str] | None = None,
    progress: bool = True,
) -> Path:
    """Run (or finish) a study into ``out`` and write its figures, data and report.

    Args:
        config: what to run (`study_config` builds one from the CLI options).
        out: output folder; must be new or empty unless ``resume`` or ``force``.
        resume: keep every stage whose ``data/<stage>.json`` exists and loads; run the rest.
        force: recompute every stage, overwriting what ``out`` holds.
        stages: run only these stage names (or study keys such as ``"pos"``); default all.
        progress: show progress bars.

    Returns:
        ``out`` as a Path.
    """
    out = folder_target(out, "study output folder")
    _check_out(out, config, resume, force)
    plan = plan_stages(config, stages)
    with writing(out, "study output folder"):
        (out / "data").mkdir(parents=True, exist_ok=True)
    for folder in ("data", "timings", "figures", "."):  # temp files of a killed run
        for tmp in (out / folder).glob(".*.tmp"):
            tmp.unlink()
    write_tagged(out / _MANIFEST, _MANIFEST_FORMAT, {"glt": __version__, "config": config.to_dict()})
    ctx = StudyContext(config, progress=progress)
    records: dict[str, dict[str, Any]] = {}
    results: dict[str, Any] = {}
    t_start = time.perf_counter()
    for stage in tqdm(plan, desc="glt study", disable=not progress, unit="stage"):
        path = out / "data" / f"{stage.name}.json"
        if path.is_file() and resume:
            try:
                results[stage.name] = stage.spec.load(path)
                old = out / "timings" / f"{stage.name}.json"
                rec = read_json(old, "stage timing") if old.is_file() else timing(stage.name, "computed", float("nan"))
                records[stage.name] = {**rec, "status": "resumed"}
                ctx.results[stage.name] = results[stage.name]
                continue
            except GltError as e:
                tqdm.write(f"glt study: {path} is unreadable ({e}); recomputing {stage.name}")
        setup_s = ctx.prepare(stage)
        meter = Meter()
        t0 = time.perf_counter()
        try:
            with meter.installed():
                result = stage.spec.run(ctx, stage)
        except GltError as e:
            records[stage.name] = timing(stage.name, "failed", time.perf_counter() - t0, meter,
                                         error=str(e), setup_s=setup_s)
            tqdm.write(f"glt study: stage {stage.name} failed: {e}")
            continue
        wall = time.perf_counter() - t0
        rec = timing(stage.name, "computed", wall, meter, setup_s=setup_s)
        for suffix, df in stage.spec.tables(result).items():
            atomic_write_text(out / "data" / f"{stage.name}{suffix}.csv", df.to_csv(index=False))
        write_json(out / "timings" / f"{stage.name}.json", rec)
        stage.spec.save(result, path)
        records[stage.name] = rec
        results[stage.name] = ctx.results[stage.name] = result
    compute_s = time.perf_counter() - t_start
    write_report(out, config=config, plan=plan, results=results, records=records, ctx=ctx,
                 compute_s=compute_s, progress=progress)
    return out
