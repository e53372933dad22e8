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
from typing import Any

from tqdm.auto import tqdm

from glt._version import __version__
from glt.core._assets import shipped_jacobian_dir
from glt.core._check import checked
from glt.core._codec import Format, read_tagged, write_tagged
from glt.core._errors import GltError
from glt.core._io import atomic_write_text, read_json, write_json, writing
from glt.core._meter import Meter
from glt.core._paths import folder_target
from glt.pipeline._context import StudyContext, default_lens_name, lens_folder_kind, no_shipped_lens
from glt.pipeline._plan import plan_stages
from glt.pipeline._report import write_report
from glt.pipeline._stages import Stage
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
        lenses: the lenses every study is read with, from ``"tuned"``, ``"least_squares"``,
            ``"logit"`` and ``"jacobian"`` (e.g. ``("tuned", "logit", "jacobian")``); each study's
            forward passes run once and every lens decodes them.
        lens_path: tuned-lens folder (None: the shipped lens of the model), or a Jacobian lens
            folder for ``"jacobian"``.
        lens_folders: further lens folders, each read as the lens it holds (``"tuned"`` or
            ``"jacobian"``, `glt.pipeline._context.lens_folder_kind`), e.g. a Jacobian lens
            beside the shipped tuned lens.
        quick: whether the sizes are the quick preset (informational).
        seed: data-sampling seed.
        batch_size: texts per forward pass.
        gtr_texts, gtr_max_tokens: guess-then-refine passages and tokens read per passage.
        sublayer_positions: positions of those passages read inside every block (attention vs
            MLP, `glt.sublayer_split`; None: all).
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
    lens_folders: tuple[str, ...] = ()
    quick: bool = False
    seed: int = 0
    batch_size: int = 8
    gtr_texts: int = 400
    gtr_max_tokens: int = 64
    sublayer_positions: int | None = 4096
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
    "mc_items": 24, "mc_shots": 2, "patch_pairs": 3, "patch_shots": 1, "sublayer_positions": 512,
}
#: Sizes of the full ``glt study``.
FULL: dict[str, Any] = {"quick": False}


_LENS_NAMES = ("tuned", "least_squares", "logit", "jacobian", "both")


def _parse_lenses(lens: str | Sequence[str]) -> tuple[list[str], list[str]]:
    """``(lens names, lens folders)`` from ``--lens`` items (names, ``both``, or lens folders)."""
    items = lens.split(",") if isinstance(lens, str) else list(lens)
    names: list[str] = []
    folders: list[str] = []
    for raw in items:
        item = str(raw).strip()
        if item == "both":
            names += ["tuned", "logit"]
        elif item in _LENS_NAMES:
            names.append(item)
        elif item and Path(item).expanduser().is_dir():
            names.append(lens_folder_kind(item))
            folders.append(item)
        else:
            raise GltError(f"--lens item {item!r} is neither a lens name ({', '.join(_LENS_NAMES)}) nor a lens "
                           "folder: pass e.g. --lens logit,tuned,jacobian (comma-separated) or a folder "
                           "written by TunedLens.save / JacobianLens.save")
    if not names:
        raise GltError("--lens is empty: pass one or more of " + ", ".join(_LENS_NAMES))
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise GltError(f"--lens names the lens {twice} more than once (a folder counts as the lens it holds): "
                       "each lens can be read once per study; drop the repeat")
    return names, folders


@checked  # the CLI's values too: a wrong --lens is a GltError listing the lenses
def study_config(
    *,
    model: str = "default",
    lens: str | Sequence[str] | None = None,
    quick: bool = False,
    config_file: str | None = None,
    lens_path: str | None = None,
) -> StudyConfig:
    """Resolve the CLI options into a `StudyConfig` (quick preset, then the JSON overrides).

    ``lens`` None picks the shipped tuned lens where one ships for ``model`` (or the one at
    ``lens_path``), else ``"least_squares"``: a lens fitted on the spot on the offline Wikipedia
    sample and cached (`glt.lenses.fit._cached`). Otherwise ``lens`` lists lenses, comma-separated
    or as a sequence: ``"tuned"``, ``"least_squares"``, ``"logit"``, ``"jacobian"`` (the lens
    shipped for the default model, else a Jacobian lens folder), ``"both"`` (tuned and logit) or a
    lens folder (read as the lens it holds); every study runs its forward passes once and decodes
    them with each lens. A ``lens_path`` holding a Jacobian lens (`glt.JacobianLens`) runs as the lens ``"jacobian"``.
    """
    if lens is None:
        lens = "tuned" if lens_path else default_lens_name(model)
    names, folders = _parse_lenses(lens)
    path_kind = lens_folder_kind(lens_path) if lens_path is not None else None  # read config.json once
    if lens_path is not None and not {"tuned", "jacobian"} & set(names):
        raise GltError(f"--lens-path is the tuned lens's folder, but --lens is {lens!r}: pass --lens "
                       "tuned (or both) with it, or drop --lens-path")
    if path_kind == "jacobian" and "jacobian" not in names:
        names = ["jacobian" if x == "tuned" else x for x in names]
    lenses = tuple(names)
    folder_kinds = {lens_folder_kind(f) for f in folders}
    if path_kind in folder_kinds:
        raise GltError(f"--lens-path {lens_path} and a --lens folder both hold a {path_kind} lens: "
                       "pass that lens once")
    if ("jacobian" in lenses and "jacobian" not in folder_kinds and path_kind != "jacobian"
            and shipped_jacobian_dir(model) is None):
        raise GltError(f"--lens jacobian needs a Jacobian lens folder: no Jacobian lens ships for {model!r} (one "
                       "ships for the default model only); pass the folder in --lens (e.g. --lens logit,tuned,FOLDER) "
                       "or as --lens-path, after fitting one with glt.fit_jacobian_lens(model, texts).save(FOLDER) "
                       "or benchmarks/fit_jacobian_lens.py")
    tuned_path = lens_path if path_kind == "tuned" else None
    if "tuned" in lenses and tuned_path is None and "tuned" not in folder_kinds and default_lens_name(model) != "tuned":
        raise no_shipped_lens(model, f"--lens {lens}")
    kw: dict[str, Any] = {"model": model, "lenses": lenses, "lens_path": lens_path, "lens_folders": tuple(folders)}
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
        saved = old.get("config") if isinstance(old.get("config"), dict) else {}
        current = json.loads(json.dumps(config.to_dict()))
        # a manifest written before a field existed cannot disagree on it: the field's stage (or
        # option) did not exist then, and a missing stage is simply run now
        saved = {**current, **saved}
        if resume and saved != current:
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
    pending: list[Stage] = []
    for stage in plan:
        path = out / "data" / f"{stage.name}.json"
        if path.is_file() and resume:
            try:
                results[stage.name] = ctx.results[stage.name] = stage.spec.load(path)
                old = out / "timings" / f"{stage.name}.json"
                rec = read_json(old, "stage timing") if old.is_file() else timing(stage.name, "computed", float("nan"))
                records[stage.name] = {**rec, "status": "resumed"}
                continue
            except GltError as e:
                tqdm.write(f"glt study: {path} is unreadable ({e}); recomputing {stage.name}")
        pending.append(stage)
    groups: dict[tuple[str, str | None], list[Stage]] = {}
    for stage in pending:  # the lenses of one study and variant share its forward passes
        groups.setdefault((stage.spec.key, stage.variant), []).append(stage)
    with tqdm(total=len(pending), desc="glt study", disable=not progress, unit="stage") as bar:
        for group in groups.values():
            _run_group(ctx, group, out, records, results)
            bar.update(len(group))
    compute_s = time.perf_counter() - t_start
    write_report(out, config=config, plan=plan, results=results, records=records, ctx=ctx,
                 compute_s=compute_s, progress=progress)
    return out


def _run_group(ctx: StudyContext, group: list[Stage], out: Path, records: dict[str, dict[str, Any]],
               results: dict[str, Any]) -> None:
    """Run stages that differ only by lens in one go, then write each stage's tables, timing and
    result. Their wall time, forward passes and read-outs are measured together and split evenly
    between them (``shared_with`` in the timing record names the others)."""
    setup_s = sum(ctx.prepare(stage) for stage in group)
    meter = Meter()
    t0 = time.perf_counter()
    names = [s.name for s in group]
    n = len(group)
    extra = lambda s: {"shared_with": [x for x in names if x != s.name]} if n > 1 else {}  # noqa: E731
    try:
        with meter.installed():
            produced = group[0].spec.run(ctx, group)
    except GltError as e:
        wall = time.perf_counter() - t0
        for stage in group:
            records[stage.name] = timing(stage.name, "failed", wall / n, meter.scaled(1 / n), error=str(e),
                                         setup_s=setup_s / n, **extra(stage))
        tqdm.write(f"glt study: stage{'s' if n > 1 else ''} {', '.join(names)} failed: {e}")
        return
    wall = time.perf_counter() - t0
    share = meter.scaled(1 / n)
    for stage in group:
        result = produced[stage.name]
        rec = timing(stage.name, "computed", wall / n, share, setup_s=setup_s / n, **extra(stage))
        for suffix, df in stage.spec.tables(result).items():
            atomic_write_text(out / "data" / f"{stage.name}{suffix}.csv", df.to_csv(index=False))
        write_json(out / "timings" / f"{stage.name}.json", rec)
        stage.spec.save(result, out / "data" / f"{stage.name}.json")
        records[stage.name] = rec
        results[stage.name] = ctx.results[stage.name] = result
