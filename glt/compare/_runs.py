"""A ``glt study`` output folder read back through the pipeline's own loaders.

`load_study_run` reads the manifest (``study.json``, the pipeline's tagged format), expands the
saved config into the pipeline's stages (`glt.pipeline.plan_stages`) and loads every stage whose
result file exists with that stage's own ``load``; stages without a file are recorded as failed
(with the error from ``timings/summary.json``) or not run. The model name and block count come
from ``provenance.json`` and are checked against every loaded result's layer labels.

Config keys this glt does not know (a run from a newer glt) are kept and reported, not fatal;
keys the run lacks (an older glt) take this glt's defaults for planning and are reported too.
"""

import dataclasses
import os
from pathlib import Path
from typing import Any

from glt.core._check import checked
from glt.core._codec import read_tagged
from glt.core._errors import GltError
from glt.core._io import read_json
from glt.pipeline._plan import plan_stages
from glt.pipeline._run import _MANIFEST, _MANIFEST_FORMAT, StudyConfig
from glt.pipeline._stages import Stage

__all__ = ["StudyRun", "load_study_run"]

_FIELDS = {f.name for f in dataclasses.fields(StudyConfig)}


@dataclasses.dataclass(frozen=True, eq=False)
class StudyRun:
    """One loaded ``glt study`` folder.

    Attributes:
        path: the folder.
        glt_version: the glt that wrote the manifest.
        config: the manifest's config as saved (JSON values).
        unknown_keys: config keys this glt does not know (ignored for planning).
        missing_keys: `glt.pipeline.StudyConfig` fields the manifest lacks (defaults used).
        provenance: ``provenance.json`` (empty when the run wrote none).
        model: the model's name; n_layers: its block count (residual indices ``0 .. n_layers``).
        lenses: the lenses the run's config names, in order.
        stages: every stage the config plans, in the report's order.
        results: loaded results by stage name (only stages with a result file).
        failed: error text by stage name, for stages whose timing record says they failed.
    """

    path: Path
    glt_version: str
    config: dict[str, Any]
    unknown_keys: tuple[str, ...]
    missing_keys: tuple[str, ...]
    provenance: dict[str, Any]
    model: str
    n_layers: int
    lenses: tuple[str, ...]
    stages: tuple[Stage, ...]
    results: dict[str, Any]
    failed: dict[str, str]

    def stage_status(self, name: str) -> str:
        """``"ok"``, ``"failed: <error>"`` or ``"not run"`` for stage ``name``."""
        if name in self.results:
            return "ok"
        return f"failed: {self.failed[name]}" if name in self.failed else "not run"


def _layers_of(result: Any) -> int | None:
    labels = getattr(result, "layer_labels", None)
    if labels is None and hasattr(result, "readout"):  # the heatmap's TextReadout
        labels = result.readout.layer_labels
    if not labels:
        return None
    return len([x for x in labels if not str(x).startswith("resid_mid")]) - 1  # the sublayer stage's mid residuals


def _model_of(result: Any) -> str | None:
    for attr in ("model", "model_name"):
        v = getattr(result, attr, None)
        if isinstance(v, str) and v:
            return v
    return None


def _stage_records(folder: Path) -> dict[str, dict[str, Any]]:
    """The last run's timing record per stage (``timings/summary.json``; failed stages are only there)."""
    summary = folder / "timings" / "summary.json"
    data = read_json(summary, "study timing summary") if summary.is_file() else {}
    stages = data.get("stages") if isinstance(data, dict) else None
    return {k: v for k, v in stages.items() if isinstance(v, dict)} if isinstance(stages, dict) else {}


@checked
def load_study_run(path: str | os.PathLike) -> StudyRun:
    """Read a ``glt study`` output folder (``--out``) with the pipeline's loaders.

    Raises:
        GltError: ``path`` is not a folder, holds no ``study.json`` (not a study), its manifest
            or a result file is damaged, it holds no finished stage, or its results disagree on
            the model's layer count.

    Example:
        >>> # run = load_study_run("glt-study")
        >>> # run.model, run.n_layers, sorted(run.results)
    """
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise GltError(f"run folder {str(path)!r} is not a folder: pass the --out folder of a `glt study` run")
    if not (folder / _MANIFEST).is_file():
        raise GltError(f"run folder {folder} is not a glt study (it holds no {_MANIFEST}): pass the --out "
                       "folder of a `glt study` run")
    manifest = read_tagged(folder / _MANIFEST, _MANIFEST_FORMAT)
    saved = manifest.get("config")
    if not isinstance(saved, dict):
        raise GltError(f"study manifest {folder / _MANIFEST} holds no config object: rerun the study")
    known = {k: v for k, v in saved.items() if k in _FIELDS}
    try:
        config = StudyConfig.from_dict(known)
    except (GltError, TypeError) as e:
        raise GltError(f"study manifest {folder / _MANIFEST} holds a config glt cannot read ({e}): "
                       "rerun the study") from e
    prov_file = folder / "provenance.json"
    prov = read_json(prov_file, "study provenance") if prov_file.is_file() else {}
    prov = prov if isinstance(prov, dict) else {}
    stages = tuple(plan_stages(config))
    results: dict[str, Any] = {}
    records = _stage_records(folder)
    failed: dict[str, str] = {}
    for stage in stages:
        file = folder / "data" / f"{stage.name}.json"
        if file.is_file():
            try:
                results[stage.name] = stage.spec.load(file)
            except GltError as e:
                raise GltError(f"run {folder}: stage {stage.name}: {e}") from e
        elif records.get(stage.name, {}).get("status") == "failed":
            failed[stage.name] = str(records[stage.name].get("error", "no error recorded"))
    if not results:
        raise GltError(f"run folder {folder} holds no finished stage (data/<stage>.json): finish it with "
                       "`glt study --resume --out` or pass another run")
    layers = {name: n for name, n in ((k, _layers_of(r)) for k, r in results.items()) if n is not None}
    n_layers = prov.get("n_layers")
    if not isinstance(n_layers, int) or isinstance(n_layers, bool):
        n_layers = next(iter(layers.values()), None)
    bad = {k: n for k, n in layers.items() if n != n_layers}
    if n_layers is None or bad:
        raise GltError(f"run {folder}: the model has {n_layers} layers by provenance.json but stage results "
                       f"say {bad}: the folder mixes runs of different models; rerun the study into a new --out")
    models = [m for m in map(_model_of, results.values()) if m]
    model = str(prov.get("model") or (models[0] if models else config.model))
    return StudyRun(
        path=folder, glt_version=str(manifest.get("glt", "unknown")), config=dict(saved),
        unknown_keys=tuple(sorted(set(saved) - _FIELDS)), missing_keys=tuple(sorted(_FIELDS - set(saved))),
        provenance=prov, model=model, n_layers=int(n_layers), lenses=tuple(config.lenses),
        stages=stages, results=results, failed=failed,
    )
