"""``glt study``: config, output-folder rules, timing meter, stages, resume, and a real kill."""

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import matplotlib
import pytest
import torch

matplotlib.use("Agg")

import glt  # noqa: E402
import glt.core._assets  # noqa: E402
import glt.pipeline._context as _context  # noqa: E402
import glt.pipeline._provenance as _provenance  # noqa: E402
import glt.pipeline._run as _study  # noqa: E402
from glt.core._meter import Meter, forward_timer  # noqa: E402
from glt.pipeline._plan import plan_stages  # noqa: E402
from glt.pipeline._run import StudyConfig, run_study, study_config  # noqa: E402
from tests.helpers import run_bounded, wait_bounded  # noqa: E402

TINY_SIZES = {"gtr_texts": 4, "gtr_max_tokens": 12, "fact_items": 8, "freq_paragraphs": 20,
              "heatmap_text": "the capital of france is paris"}
TINY_STAGES = ["heatmap", "guess_refine", "facts", "early_exit"]


@pytest.fixture(scope="module")
def tiny_folder(tiny_root):
    from tests.helpers import make_tiny_folder

    return make_tiny_folder("llama", tiny_root)


def tiny_config(folder, **kw) -> StudyConfig:
    return StudyConfig(model=str(folder), lenses=("logit",), **{**TINY_SIZES, **kw})


def result_files(out: Path) -> dict[str, bytes]:
    """Every stage result and table, by name (timings and the report are excluded)."""
    return {p.name: p.read_bytes() for p in sorted((out / "data").iterdir()) if not p.name.startswith(".")}


# ------------------------------------------------------------------ config
def test_study_config_presets_and_overrides(tmp_path):
    quick = study_config(lens="logit", quick=True)
    assert quick.quick and quick.lenses == ("logit",) and quick.gtr_texts == _study.QUICK["gtr_texts"]
    cfg_file = tmp_path / "c.json"
    cfg_file.write_text(json.dumps({"gtr_texts": 3, "mc_tasks": ["sst2"]}))
    cfg = study_config(lens="logit", quick=True, config_file=str(cfg_file))
    assert cfg.gtr_texts == 3 and cfg.mc_tasks == ("sst2",) and cfg.pos_items == _study.QUICK["pos_items"]
    assert StudyConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


@pytest.mark.parametrize("kw, match", [
    ({"lens": "kaleidoscope"}, "'kaleidoscope' is neither a lens name"),
    ({"lens": "logit,logit"}, r"names the lens \['logit'\] more than once"),
    ({"lens": "both,tuned"}, r"names the lens \['tuned'\] more than once"),
    ({"lens": ""}, "is neither a lens name"),
    ({"lens": "logit,jacobian", "model": "smollm2-135m"}, "needs a Jacobian lens folder: no Jacobian lens ships for"),
    ({"lens": "logit", "lens_path": "."}, "--lens-path is the tuned lens's folder"),
    ({"config_file": "/nonexistent/cfg.json"}, "does not exist"),
])
def test_study_config_errors(kw, match):
    with pytest.raises(glt.GltError, match=match):
        study_config(**kw)


def test_study_config_unknown_key(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"gtr_textz": 3}))
    with pytest.raises(glt.GltError, match="unknown study config keys"):
        study_config(lens="logit", config_file=str(bad))


def test_tuned_lens_missing_is_a_glt_error(tmp_path, monkeypatch):
    monkeypatch.setattr(glt.core._assets, "ASSETS_ROOT", tmp_path / "no-assets")
    assert _context.default_lens_name("default") == "least_squares"  # no lens ships: fitted on the spot
    assert _context.default_lens_name("smollm2-135m") == "least_squares"
    missing = re.escape(str(tmp_path / "no-assets" / "lenses" / "default")) + " is missing"
    with pytest.raises(glt.GltError, match=r"--lens tuned: this glt build lacks it \(" + missing):
        study_config(lens="tuned")
    with pytest.raises(glt.GltError, match="this glt build lacks it"):
        study_config(lens="both")
    with pytest.raises(glt.GltError, match="this glt build lacks it"):
        study_config(model="smollm2", lens="tuned")
    with pytest.raises(glt.GltError, match="ships tuned lenses for 'default' and 'smollm2-135m' only, not for "
                                           "'/some/model'.*--lens least_squares"):
        study_config(model="/some/model", lens="tuned")
    assert study_config(model="/some/model", lens="tuned", lens_path="/my/lens").lenses == ("tuned",)


def test_plan_stages_names_and_filter():
    cfg = StudyConfig(lenses=("tuned", "logit"), mc_tasks=("mmlu", "sst2"))
    names = [s.name for s in plan_stages(cfg)]
    assert names[:3] == ["heatmap_tuned", "heatmap_logit", "guess_refine_tuned"]
    assert {"mc_mmlu_tuned", "mc_sst2_logit", "early_exit_logit", "patching_tuned", "sublayers"} <= set(names)
    assert len(names) == len(set(names))
    only = [s.name for s in plan_stages(cfg, ["pos", "mc_sst2_logit"])]
    assert only == ["pos_tuned", "pos_logit", "mc_sst2_logit"]
    with pytest.raises(glt.GltError, match="unknown"):
        plan_stages(cfg, ["posh"])


# ------------------------------------------------------------------ output folder rules
def test_out_folder_rules(tmp_path):
    cfg = StudyConfig()
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(glt.GltError, match="not empty"):
        _study._check_out(other, cfg, resume=False, force=False)
    done = tmp_path / "done"
    done.mkdir()
    glt.core._io.write_json(done / "study.json", {"format": "glt.study", "version": 1, "config": cfg.to_dict()})
    with pytest.raises(glt.GltError, match="already holds a study"):
        _study._check_out(done, cfg, resume=False, force=False)
    _study._check_out(done, cfg, resume=True, force=False)  # same settings: fine
    with pytest.raises(glt.GltError, match="different settings.*gtr_texts"):
        _study._check_out(done, StudyConfig(gtr_texts=1), resume=True, force=False)
    with pytest.raises(glt.GltError, match="either --resume"):
        _study._check_out(done, cfg, resume=True, force=True)
    _study._check_out(done, StudyConfig(gtr_texts=1), resume=False, force=True)


# ------------------------------------------------------------------ timing meter
def test_meter_patches_nothing_and_reports_through_the_context():
    """The meter is a context variable that capture and read-out report to: no name is rebound."""
    import glt.core._capture as cap
    import glt.decoding._readout as ro

    before = (cap._forward_residuals, ro.readout, glt.readout)
    assert glt.readout is ro.readout  # the public name is the function itself, not a wrapper
    meter, inner = Meter(), Meter()
    with meter.installed():
        with forward_timer(tokens=3):
            pass
        with inner.installed():  # nested: the inner meter takes the reports while installed
            with forward_timer(tokens=5):
                pass
        with forward_timer(tokens=7):
            pass
        assert (cap._forward_residuals, ro.readout, glt.readout) == before
    with forward_timer(tokens=11):  # no meter installed: nothing is recorded anywhere
        pass
    assert (meter.forward_tokens, inner.forward_tokens) == (10, 5)
    assert (cap._forward_residuals, ro.readout, glt.readout) == before


def test_meter_times_forward_and_readout_and_restores(tiny_llama):
    import glt.core._capture as cap
    import glt.decoding._readout as ro

    orig = (cap._forward_residuals, ro.readout, glt.readout)
    meter = Meter()
    with meter.installed():
        stack = glt.capture_residuals(tiny_llama, ["the city of paris", "a river"])
        r = glt.readout(stack, glt.LogitLens.from_model(tiny_llama))
    assert (cap._forward_residuals, ro.readout, glt.readout) == orig
    assert meter.forward_tokens == int(stack.mask.sum()) and meter.readout_rows == r.n_rows
    assert meter.forward_s > 0 and meter.readout_s > 0

    from glt.studies.patching._run import _patched_final, patch_layers

    meter = Meter()
    with meter.installed():
        patch_layers(tiny_llama, "the city", "a river", target_options=[5, 6], source_options=[7, 8],
                     layers=[0, 2], progress=False)
    import glt.studies.patching._run as pa

    assert pa._patched_final is _patched_final
    ids = glt.tokenize(tiny_llama, ["the city", "a river"])
    captured = sum(len(i) for i in ids)  # each prompt's residuals once
    assert meter.forward_tokens == captured + 2 * len(ids[0])  # 2 patched copies of the target


# ------------------------------------------------------------------ a whole (tiny) study
def test_run_study_writes_everything_and_resumes(tiny_folder, tmp_path):
    out = tmp_path / "study"
    cfg = tiny_config(tiny_folder)
    run_study(cfg, out, stages=TINY_STAGES, progress=False)
    data = result_files(out)
    for stage in ("heatmap_logit", "guess_refine_logit", "facts_logit", "early_exit_logit"):
        assert f"{stage}.json" in data and f"{stage}.csv" in data, stage
        assert (out / "timings" / f"{stage}.json").is_file()
    figs = {p.name for p in (out / "figures").iterdir()}
    for name in ("heatmap_logit", "bucket_share_logit", "flip_rate_logit", "early_exit_logit",
                 "fact_onsets_logit"):
        assert {f"{name}.png", f"{name}.svg"} <= figs, name
    md = (out / "report.md").read_text()
    page = (out / "report.html").read_text()
    assert "## Guess-then-refine" in md and "## Time" in md and "## Headline numbers" in md and "N=" in md
    assert page.count("data:image/png;base64,") == len([f for f in figs if f.endswith(".png")])
    assert "src='figures" not in page and 'src="http' not in page  # self-contained
    timing = json.loads((out / "timings" / "guess_refine_logit.json").read_text())
    assert timing["forward_tokens"] > 0 and timing["readout_rows"] > 0
    assert timing["wall_s"] >= timing["forward_s"] + timing["readout_s"] - 1e-6

    # a second run without --resume refuses; with it nothing is recomputed
    with pytest.raises(glt.GltError, match="already holds a study"):
        run_study(cfg, out, stages=TINY_STAGES, progress=False)
    mtimes = {p: p.stat().st_mtime_ns for p in (out / "data").iterdir()}
    run_study(cfg, out, stages=TINY_STAGES, resume=True, progress=False)
    assert {p: p.stat().st_mtime_ns for p in (out / "data").iterdir()} == mtimes
    summary = json.loads((out / "timings" / "summary.json").read_text())
    assert {r["status"] for r in summary["stages"].values()} == {"resumed"}
    assert summary["setup"] == {}  # the model was not even loaded

    # a truncated result file is recomputed (only that one), giving the same bytes
    path = out / "data" / "facts_logit.json"
    path.write_bytes(data["facts_logit.json"][:100])
    run_study(cfg, out, stages=TINY_STAGES, resume=True, progress=False)
    assert result_files(out) == data
    summary = json.loads((out / "timings" / "summary.json").read_text())
    assert summary["stages"]["facts_logit"]["status"] == "computed"
    assert summary["stages"]["guess_refine_logit"]["status"] == "resumed"
    # that run loaded the model but not the frequency table: the resumed stages' provenance stays
    prov = json.loads((out / "provenance.json").read_text())
    assert "frequency table" in prov and prov["model"]


def test_failed_stage_is_reported_not_fatal(tiny_folder, tmp_path):
    out = tmp_path / "study"
    # the tiny word-level tokenizer maps " A" and " negative" to <unk>: patching must fail cleanly
    run_study(tiny_config(tiny_folder, patch_pairs=1, mc_shots=0), out,
              stages=["heatmap", "patching"], progress=False)
    summary = json.loads((out / "timings" / "summary.json").read_text())
    assert summary["stages"]["patching_logit"]["status"] == "failed"
    assert not (out / "data" / "patching_logit.json").exists()
    assert "Failed stages" in (out / "report.md").read_text()


# ------------------------------------------------------------------ a real kill
def _study_cmd(folder: Path, cfg_file: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "glt.cli._main", "study", "--model", str(folder), "--lens", "logit",
            "--config", str(cfg_file), "--out", str(out), "--stages", ",".join(TINY_STAGES),
            "--no-progress", *extra]


def test_kill_and_resume_gives_the_uninterrupted_results(tiny_folder, tmp_path):
    """SIGKILL a running `glt study` at a random moment, resume it, compare every result byte."""
    cfg_file = tmp_path / "cfg.json"
    cfg_file.write_text(json.dumps(TINY_SIZES))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg", "GLT_CACHE": str(tmp_path / "cache")}
    ref = tmp_path / "ref"
    t0 = time.perf_counter()
    run_bounded(_study_cmd(tiny_folder, cfg_file, ref), what="the uninterrupted reference study", timeout=900,
                env=env, check=True)
    duration = time.perf_counter() - t0
    expected = result_files(ref)
    assert len(expected) >= 8

    seed = int(os.environ.get("GLT_KILL_SEED", random.randrange(10**6)))
    rng = random.Random(seed)
    out = tmp_path / "killed"
    killed_with = []
    for attempt in range(2):  # kill twice (the second time inside the resumed run)
        extra = ("--resume",) if attempt else ()
        proc = subprocess.Popen(_study_cmd(tiny_folder, cfg_file, out, *extra), env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        delay = rng.uniform(0.2, 0.9) * duration
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            wait_bounded(proc, what="the killed study to exit", timeout=60)
            killed_with.append(round(delay, 2))
    assert killed_with, f"no run was killed (seed={seed}): the study finished too early"
    done = run_bounded(_study_cmd(tiny_folder, cfg_file, out, "--resume"), what="the resumed study",
                       timeout=900, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    got = result_files(out)
    assert sorted(got) == sorted(expected), f"seed={seed} kills at {killed_with} s"
    for name in expected:
        assert got[name] == expected[name], f"{name} differs (seed={seed}, kills at {killed_with} s)"
    assert not [p for p in (out / "data").iterdir() if p.name.endswith(".tmp")]


def test_environment_provenance():
    env = _provenance.environment()
    assert env["torch"] == torch.__version__ and env["glt"] == glt.__version__


def test_both_lenses_with_a_lens_folder(tiny_folder, tmp_path):
    """--lens both with --lens-path: every stage per lens, plus logit-vs-tuned figures."""
    from glt.lenses._tuned import TunedLens

    model = glt.load_model(str(tiny_folder))
    lens = TunedLens.from_model(model)
    with torch.no_grad():
        lens.bias.normal_(0.0, 0.5)  # differ from the logit lens
    lens.save(tmp_path / "lens")
    cfg = study_config(model=str(tiny_folder), lens="both", lens_path=str(tmp_path / "lens"))
    cfg = StudyConfig.from_dict({**cfg.to_dict(), **TINY_SIZES})
    out = tmp_path / "both"
    run_study(cfg, out, stages=["heatmap", "guess_refine"], progress=False)
    data = result_files(out)
    assert {"guess_refine_tuned.json", "guess_refine_logit.json", "heatmap_tuned.json"} <= set(data)
    assert data["guess_refine_tuned.json"] != data["guess_refine_logit.json"]
    assert (out / "figures" / "bucket_share_logit_vs_tuned.png").is_file()
    prov = json.loads((out / "provenance.json").read_text())
    assert "tuned lens" in prov and "logit lens" in prov


@pytest.mark.integration
def test_study_on_the_default_model_small(tmp_path):
    """The real model, default lens, a few positions: stages, figures and report come out."""
    cfg = study_config(quick=True)
    cfg = StudyConfig.from_dict({**cfg.to_dict(), "gtr_texts": 2, "gtr_max_tokens": 8})
    out = tmp_path / "study"
    run_study(cfg, out, stages=["heatmap", "guess_refine", "early_exit"], progress=False)
    summary = json.loads((out / "timings" / "summary.json").read_text())
    assert {r["status"] for r in summary["stages"].values()} == {"computed"}
    from glt.studies.guess_then_refine._result import GuessRefineResult

    res = GuessRefineResult.load(out / "data" / f"guess_refine_{cfg.lenses[0]}.json")
    assert res.n_positions == 2 * 7 and res.model == "gemma-3-270m"  # BOS-only prefix not read
    md = (out / "report.md").read_text()
    assert "gemma-3-270m" in md and "## Headline numbers" in md
