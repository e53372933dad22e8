"""Files saved by glt 0.1.0 still load, through the public API only, with the same content.

The fixtures in ``tests/fixtures/v0_1_0/`` were written by ``tests/fixtures/make_v0_1_0.py``
with glt 0.1.0 (see the README there); ``expected.json`` holds values recorded when they were
written. Each test loads one kind of file, compares it with those values, then saves the loaded
object again and checks that loading that copy gives the same values. Nothing here writes into
the fixture folder.
"""

import dataclasses
import hashlib
import json
import math
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch

import glt
from tests.helpers import run_bounded


def fixtures_dir(version: str = "v0_1_0") -> Path:
    """``tests/fixtures/<version>``, found by walking up from this file (it may move into a subfolder)."""
    here = Path(__file__).resolve().parent
    for folder in (here, *here.parents):
        candidate = folder / "fixtures" / version
        if (candidate / "expected.json").is_file():
            return candidate
        if folder.name == "tests":  # do not wander out of the test tree
            break
    raise FileNotFoundError(f"no fixtures/{version}/expected.json above {here}")


F = fixtures_dir()
EXPECTED = json.loads((F / "expected.json").read_text(encoding="utf-8"))


# ------------------------------------------------------------------------------ helpers
def tsum(t: torch.Tensor) -> float:
    """Sum over the finite entries in float64 (as the generator recorded it)."""
    t = t.detach().double()
    return float(t[torch.isfinite(t)].sum())


def nan_positions(t: torch.Tensor) -> list[list[int]]:
    return torch.isnan(t).nonzero().tolist()


def nullable(values) -> list:
    """Floats as expected.json stores them: NaN becomes None."""
    return [None if math.isnan(float(v)) else float(v) for v in values]


def approx(x: float):
    return pytest.approx(x, rel=1e-6, abs=1e-9)


def assert_same(a, b, where: str = "") -> None:
    """Deep equality of loaded results: dataclass fields, tensors (dtype, shape, values, NaN = NaN),
    containers and floats (NaN = NaN)."""
    if dataclasses.is_dataclass(a) and not isinstance(a, type):
        assert type(a) is type(b), where
        for f in dataclasses.fields(a):
            if f.init:
                assert_same(getattr(a, f.name), getattr(b, f.name), f"{where}.{f.name}")
    elif isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor), where
        same_kind = a.dtype == b.dtype and a.shape == b.shape
        assert same_kind, f"{where}: {a.dtype}{tuple(a.shape)} vs {b.dtype}{tuple(b.shape)}"
        if a.is_floating_point():
            assert bool(torch.isclose(a, b, rtol=0, atol=0, equal_nan=True).all()), where
        else:
            assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for k in a:
            assert_same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b), where
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def resave(obj, cls, path: Path):
    """Save ``obj`` at ``path`` and load it back with ``cls.load``; it must equal ``obj``."""
    obj.save(path)
    back = cls.load(path)
    assert_same(obj, back, cls.__name__)
    return back


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def model():
    """The tiny random Llama the fixtures were computed on (saved beside them)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return glt.load_model(str(F / EXPECTED["model"]["folder"]))


@pytest.fixture(scope="module", autouse=True)
def fixtures_untouched():
    """Loading must never write into the fixture folder."""
    before = digest(F)
    yield
    assert digest(F) == before, "a loader wrote into tests/fixtures"


# ------------------------------------------------------------------------------ results
def test_readout(tmp_path):
    e = EXPECTED["readout"]
    r = glt.Readout.load(F / "readout.safetensors")
    assert list(r.layer_labels) == e["layer_labels"] and r.lens == e["lens"] and r.n_rows == e["n_rows"]
    for k, shape in e["shapes"].items():
        assert list(getattr(r, k).shape) == shape, k
    for k, dtype in e["dtypes"].items():
        assert str(getattr(r, k).dtype) == dtype, k
    for k in ("batch_index", "pos_index", "input_ids", "targets"):
        assert getattr(r, k).tolist() == e[k], k
    assert r.ranks[0, :, 0].tolist() == e["ranks_layer0"] and r.top1[0].tolist() == e["top1_layer0"]
    assert tsum(r.target_logprobs) == approx(e["sum_target_logprobs"])
    assert tsum(r.entropy) == approx(e["sum_entropy"]) and tsum(r.kl_to_final) == approx(e["sum_kl_to_final"])
    assert float(r.entropy[0, 0]) == approx(e["entropy_0_0"])
    assert bool((r.kl_to_final[-1] == 0).all())  # KL(final || final) = 0 by definition
    resave(r, glt.Readout, tmp_path / "readout.safetensors")


def test_guess_refine(tmp_path):
    e = EXPECTED["guess_refine"]
    r = glt.GuessRefineResult.load(F / "guess_refine.json")
    for k in ("model", "lens", "cuts", "seed", "counts"):
        assert getattr(r, k) == e[k], k
    for k in ("layer_labels", "bucket_labels", "early_layers"):
        assert list(getattr(r, k)) == e[k], k
    assert r.n_positions == e["n_positions"]
    assert r.gold.tolist() == e["gold"] and r.text_index.tolist() == e["text_index"]
    assert r.final_top1.tolist() == e["final_top1"] and r.rank_final[0].tolist() == e["rank_final_layer0"]
    assert r.bucket_counts.tolist() == e["bucket_counts"]
    assert tsum(r.max_prob) == approx(e["sum_max_prob"])
    assert nan_positions(r.flip_rate) == e["flip_rate_nan_positions"]  # empty buckets: NaN rates
    head = r.headline()
    for k, v in e["headline"].items():
        got = head[k]
        assert (math.isnan(got) if v is None else got == (approx(v) if isinstance(v, float) else v)), k
    resave(r, glt.GuessRefineResult, tmp_path / "guess_refine.json")


def test_pos(tmp_path):
    e = EXPECTED["pos"]
    r = glt.PosResult.load(F / "pos.json")
    for k in ("model", "lens", "construction", "n_items"):
        assert getattr(r, k) == e[k], k
    for k in ("tags", "ks", "layer_labels"):
        assert list(getattr(r, k)) == e[k], k
    assert len(r.texts) == e["n_texts"] and list(r.ranks.shape) == e["ranks_shape"]
    assert r.ranks[-1].tolist() == e["final_ranks"] and r.correct.tolist() == e["correct"]
    assert r.correct.dtype == torch.bool and r.ranks.dtype == torch.long
    assert tsum(r.logprobs) == approx(e["sum_logprobs"])
    assert list(r.items[0]) == e["first_item"]
    assert len(r.curves) == e["n_curves"] and len(r.candidates) == e["n_candidates"] and len(r.churn) == e["n_churn"]
    c = r.curves[0]
    assert (c.group, c.kind, c.n, list(c.n_crossed)) == (e["curve0"]["group"], e["curve0"]["kind"],
                                                          e["curve0"]["n"], e["curve0"]["n_crossed"])
    assert nullable(c.mean) == e["curve0"]["mean"]
    # statistics of curves no item crossed are NaN (stored as null): they must come back as NaN
    nan_curves = sorted(f"{c.group}|{c.kind}|{i}" for c in r.curves for i, m in enumerate(c.mean) if math.isnan(m))
    assert nan_curves == e["nan_mean_curves"] and nan_curves
    assert [list(s) for s in r.skipped] == e["skipped"]
    subset, label = e["curve0"]["group"].split("/", 1)
    assert r.curve(label, subset=subset, kind=e["curve0"]["kind"]).n == e["curve0"]["n"]
    resave(r, glt.PosResult, tmp_path / "pos.json")


def test_fact_recall(tmp_path):
    e = EXPECTED["fact_recall"]
    r = glt.FactRecallResult.load(F / "fact_recall.json")
    for k in ("model", "lens", "n_input"):
        assert getattr(r, k) == e[k], k
    for k in ("sources", "ks", "layer_labels", "fact_index"):
        assert list(getattr(r, k)) == e[k], k
    assert [list(s) for s in r.skipped] == e["skipped"]
    assert [list(a) for a in r.answer_tokens] == e["answer_tokens"]
    assert [f.to_dict() for f in r.facts] == e["facts"] and all(isinstance(f, glt.Fact) for f in r.facts)
    for k in ("row_fact", "row_position", "gold", "tracked", "correct"):
        assert getattr(r, k).tolist() == e[k], k
    assert list(r.ranks.shape) == e["ranks_shape"] and r.ranks[-1].tolist() == e["final_ranks"]
    assert r.top1[-1].tolist() == e["top1_final"]
    assert tsum(r.logprobs) == approx(e["sum_logprobs"]) and tsum(r.max_prob) == approx(e["sum_max_prob"])
    assert len(r.curves) == e["n_curves"]
    resave(r, glt.FactRecallResult, tmp_path / "fact_recall.json")


def test_multiple_choice(tmp_path):
    e = EXPECTED["multiple_choice"]
    r = glt.MultipleChoiceResult.load(F / "multiple_choice.json")
    for k in ("task", "model", "lens", "source", "n_shots", "top_k_format", "symbols_mode"):
        assert getattr(r, k) == e[k], k
    assert list(r.layer_labels) == e["layer_labels"] and list(r.item_ids) == e["item_ids"]
    assert [list(s) for s in r.symbols] == e["symbols"] and [list(s) for s in r.skipped] == e["skipped"]
    for k in ("option_tokens", "content_tokens", "gold", "final_top1", "choice"):
        assert getattr(r, k).tolist() == e[k], k
    assert list(r.option_ranks.shape) == e["option_ranks_shape"]
    assert r.option_ranks[-1].tolist() == e["option_ranks_final"]
    assert tsum(r.option_logprobs) == approx(e["sum_option_logprobs"])
    assert tsum(r.content_logprobs) == approx(e["sum_content_logprobs"])
    assert r.accuracy == approx(e["accuracy"])
    c, ec = r.control, e["control"]
    assert isinstance(c, glt.MultipleChoiceResult) and (c.control is not None) == ec["has_control"]
    assert c.symbols_mode == ec["symbols_mode"] and [list(s) for s in c.symbols] == ec["symbols"]
    assert c.option_tokens.tolist() == ec["option_tokens"] and c.gold.tolist() == ec["gold"]
    assert tsum(c.option_logprobs) == approx(ec["sum_option_logprobs"])
    assert set(r.summary()["run"]) == {"main", "control"}
    resave(r, glt.MultipleChoiceResult, tmp_path / "multiple_choice.json")


def test_early_exit(tmp_path):
    e = EXPECTED["early_exit"]
    r = glt.EarlyExitResult.load(F / "early_exit.json")
    for k in ("lens", "model_name", "data_source", "n_layers", "min_exit_layer"):
        assert getattr(r, k) == e[k], k
    for k in ("layer_labels", "groups", "n", "n_gold", "row_group", "exit_layers", "taus"):
        assert list(getattr(r, k)) == e[k], k
    assert r.row_onset.tolist() == e["row_onset"] and r.onset_hist.tolist() == e["onset_hist"]
    assert nullable(r.onset_mean) == [approx(x) if x is not None else None for x in e["onset_mean"]]
    # the group without gold tokens has NaN accuracies (stored as null): NaN again after loading
    assert nan_positions(r.final_accuracy) == e["final_accuracy_nan"] and e["final_accuracy_nan"]
    assert nan_positions(r.fixed_accuracy) == e["fixed_accuracy_nan"]
    assert nan_positions(r.tau_accuracy) == e["tau_accuracy_nan"]
    assert nullable(r.final_accuracy) == [approx(x) if x is not None else None for x in e["final_accuracy"]]
    assert tsum(r.tau_saved) == approx(e["sum_tau_saved"])
    assert tsum(r.fixed_agreement) == approx(e["sum_fixed_agreement"])
    assert len(r.to_dataframe("policies")) > 0
    resave(r, glt.EarlyExitResult, tmp_path / "early_exit.json")


def test_patching(tmp_path):
    e = EXPECTED["patching"]
    r = glt.PatchingResult.load(F / "patching.json")
    for k in ("model_name", "lens", "n_layers", "position"):
        assert getattr(r, k) == e[k], k
    for k in ("layer_labels", "layers", "target_texts", "source_texts", "target_options", "source_options",
              "target_option_labels", "source_option_labels"):
        assert list(getattr(r, k)) == e[k], k
    assert list(r.p_target.shape) == e["p_target_shape"]
    assert tsum(r.p_target) == approx(e["sum_p_target"]) and tsum(r.p_source) == approx(e["sum_p_source"])
    assert tsum(r.lens_p_source) == approx(e["sum_lens_p_source"])
    for k in ("lands_on_source", "top1", "transition_first", "transition_stable", "lens_top1", "lens_settle", "valid"):
        assert getattr(r, k).tolist() == e[k], k
    assert [list(t) for t in r.top1_tokens] == e["top1_tokens"]
    assert len(r.to_dataframe("pairs")) == len(e["target_texts"])
    resave(r, glt.PatchingResult, tmp_path / "patching.json")


def test_lens_evaluation(tmp_path):
    e = EXPECTED["lens_eval"]
    r = glt.LensEvaluation.load(F / "lens_eval.json")
    assert list(r.lenses) == e["lenses"] and list(r.layer_labels) == e["layer_labels"]
    assert list(r.kl.shape) == e["kl_shape"] and r.ce.shape == r.kl.shape
    for k in ("model", "data", "skipped", "compute_dtype"):
        assert getattr(r, k) == e[k], k
    assert tsum(r.kl) == approx(e["sum_kl"]) and tsum(r.ce) == approx(e["sum_ce"])
    assert r.mean_kl("logit").tolist() == [approx(x) for x in e["mean_kl_logit"]]
    assert bool((r.kl[:, -1] == 0).all()) == e["kl_final_layer_zero"]
    resave(r, glt.LensEvaluation, tmp_path / "lens_eval.json")
    # the held-out evaluation saved inside the trained lens folder is the same format
    ev = glt.LensEvaluation.load(F / "tuned_lens" / "eval.json")
    ee = EXPECTED["tuned_lens"]["eval"]
    assert list(ev.lenses) == ee["lenses"] and ev.n_rows == ee["n_rows"]
    assert ev.mean_kl("tuned").tolist() == [approx(x) for x in ee["mean_kl_tuned"]]


def test_token_frequency(tmp_path):
    e = EXPECTED["frequency"]
    for freq in (glt.TokenFrequency.load(F / "frequency"), glt.load_frequency(str(F / "frequency"))):
        for k in ("d_vocab", "n_tokens", "n_texts", "exclude_special", "corpus", "tokenizer"):
            assert getattr(freq, k) == e[k], k
        assert list(freq.edges) == e["edges"] and list(freq.labels) == e["labels"]
        assert list(freq.special_ids) == e["special_ids"]
        assert {str(i): int(freq.counts[int(i)]) for i in e["counts_nonzero"]} == e["counts_nonzero"]
        assert freq.rank[:10].tolist() == e["rank_first_10"]
        assert freq.bucket_token_counts().tolist() == e["bucket_token_counts"]
    out = tmp_path / "frequency"
    freq.save(out)
    back = glt.TokenFrequency.load(out)
    assert_same(freq, back, "TokenFrequency")
    assert torch.equal(back.rank, freq.rank)


# ------------------------------------------------------------------------------ lenses and training
def _params(lens) -> tuple[torch.Tensor, torch.Tensor]:
    return lens.weight.detach().clone(), lens.bias.detach().clone()


def test_tuned_lens_folder(model, tmp_path):
    e = EXPECTED["tuned_lens"]
    cfg = json.loads((F / "tuned_lens" / "config.json").read_text())
    keys = ("format", "format_version", "glt_version")
    assert tuple(cfg[k] for k in keys) == tuple(e[k] for k in keys)
    lens = glt.load_lens(F / "tuned_lens", model)
    assert isinstance(lens, glt.TunedLens)
    assert lens.n_layers == e["n_layers"] and lens.d_model == e["d_model"]
    assert list(lens.weight.shape) == e["weight_shape"] and list(lens.bias.shape) == e["bias_shape"]
    w, b = _params(lens)
    assert tsum(w) == approx(e["sum_weight"]) and tsum(w.abs()) == approx(e["sum_abs_weight"])
    assert tsum(b) == approx(e["sum_bias"])
    assert float(w[0, 0, 0]) == approx(e["weight_0_0_0"]) and float(b[2, 5]) == approx(e["bias_2_5"])
    assert lens.config.get("model_name") == e["model_name"]
    assert lens.config["training"]["steps"] == e["training_steps"]
    assert lens.config["training"]["optimizer"] == e["optimizer"]
    assert sorted(lens.config) == e["config_keys"]
    lens.save(tmp_path / "again")
    back = glt.load_lens(tmp_path / "again", model)
    assert torch.equal(back.weight, lens.weight) and torch.equal(back.bias, lens.bias)
    assert back.config == lens.config
    # it reads residuals: the translators move every layer but the last
    stack = glt.capture_residuals(model, ["the capital of france is"])
    moved = lens.transform_stack(stack.resid.float())
    assert torch.equal(moved[-1], stack.resid[-1].float()) and not torch.equal(moved[0], stack.resid[0].float())


def test_tuned_lens_export(model, tmp_path):
    ref = glt.load_lens(F / "tuned_lens", model)
    for lens in (glt.load_lens(F / "tuned_lens_export", model), glt.import_tuned_lens(F / "tuned_lens_export", model)):
        assert isinstance(lens, glt.TunedLens)
        assert torch.equal(lens.weight, ref.weight) and torch.equal(lens.bias, ref.bias)
    glt.export_tuned_lens(lens, tmp_path / "export")
    back = glt.load_lens(tmp_path / "export", model)
    assert torch.equal(back.weight, ref.weight) and torch.equal(back.bias, ref.bias)


def test_training_checkpoint_resumes(model, tmp_path):
    """A run interrupted after step 2 of 4 resumes from its 0.1.0 checkpoint and ends where an
    uninterrupted run ended (the lens saved in tuned_lens/)."""
    e = EXPECTED["train_checkpoint"]
    state = json.loads((F / "train_checkpoint" / "latest" / "state.json").read_text())
    assert state["step"] == e["step"] and state["fingerprint"] == e["fingerprint"]
    ck = tmp_path / "checkpoint"
    shutil.copytree(F / "train_checkpoint", ck)
    done: list[int] = []
    lens = glt.train_tuned_lens(model, e["texts"], checkpoint_dir=ck, callback=lambda s, t, lens: done.append(s),
                                **e["train_args"])
    assert done == e["resumed_steps"]
    ref = glt.load_lens(F / "tuned_lens", model)
    torch.testing.assert_close(lens.weight.detach(), ref.weight.detach(), rtol=0, atol=1e-5)
    torch.testing.assert_close(lens.bias.detach(), ref.bias.detach(), rtol=0, atol=1e-5)
    assert [h["step"] for h in lens.config["training"]["history"]] == [1, 2, 3, 4]


# ------------------------------------------------------------------------------ a study folder
def test_study_folder_resumes(tmp_path):
    """``glt study --resume`` on a 0.1.0 study folder loads every stage instead of recomputing it.

    The copy holds no model, so a stage that failed to load could not be recomputed: it would
    be reported as failed, not resumed.
    """
    e = EXPECTED["study"]
    manifest = json.loads((F / "study" / "study.json").read_text())
    assert (manifest["format"], manifest["version"]) == (e["manifest_format"], e["manifest_version"])
    assert manifest["config"] == e["config"]
    shutil.copytree(F / "study", tmp_path / "study")
    shutil.copy(F / "study_config.json", tmp_path / "study_config.json")
    before = digest(tmp_path / "study" / "data")
    env = dict(os.environ, HF_HUB_OFFLINE="1", MPLBACKEND="Agg",
               PYTHONPATH=os.pathsep.join([str(Path(glt.__file__).resolve().parents[1]),
                                           os.environ.get("PYTHONPATH", "")]))
    argv = [sys.executable, "-m", "glt", *e["argv"], "--out", "study", "--resume"]
    run = run_bounded(argv, what="glt study --resume on the 0.1.0 study folder", timeout=600, cwd=tmp_path, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads((tmp_path / "study" / "timings" / "summary.json").read_text())
    assert {k: v["status"] for k, v in summary["stages"].items()} == {s: "resumed" for s in e["stages"]}
    assert digest(tmp_path / "study" / "data") == before  # nothing recomputed or rewritten
    assert (tmp_path / "study" / "report.md").is_file()
    # the early-exit stage's file is a plain EarlyExitResult
    r = glt.EarlyExitResult.load(F / "study" / "data" / "early_exit_logit.json")
    assert r.lens == "logit" and r.groups[-1] == "all"
    heat = json.loads((F / "study" / "data" / "heatmap_logit.json").read_text())
    assert heat["text"] == e["heatmap_text"] and heat["readout"]["layer_labels"] == e["heatmap_layer_labels"]
