"""``benchmarks/fit_jacobian_lens.py``, the shipped fitting command: shards, resume, merge and report."""

import importlib.util
import json
from pathlib import Path

import torch

import glt
from glt.lenses.fit._jacobian import fit_jacobian_lens

SCRIPT = Path(__file__).resolve().parents[3] / "benchmarks" / "fit_jacobian_lens.py"


def _script():
    spec = importlib.util.spec_from_file_location("fit_jacobian_lens_script", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_fit_in_shards_resume_and_report(tiny_root, tmp_path, monkeypatch):
    from tests.helpers import make_tiny_folder

    monkeypatch.setenv("GLT_CACHE", str(tmp_path / "cache"))
    folder = str(make_tiny_folder("llama", tiny_root))
    script, work, out = _script(), tmp_path / "work", tmp_path / "lens"
    common = ["--work", str(work), "--model", folder, "--seq", "24", "--skip", "2", "--no-progress"]
    assert script.main(["fit", *common, "--texts", "4", "--shard", "1", "--max-hours", "0"]) == 0
    assert sorted(p.name for p in (work / "shards").iterdir()) == ["000"]  # stopped after one shard
    assert script.main(["fit", *common, "--texts", "4", "--shard", "1"]) == 0  # resumes
    assert sorted(p.name for p in (work / "shards").iterdir()) == ["000", "001", "002", "003"]
    assert script.main(["report", *common, "--out", str(out), "--eval-paras", "6", "--eval-rows", "24"]) == 0
    model = glt.load_model(folder)
    lens = glt.load_lens(out, model)
    report = json.loads((out / "report.json").read_text())
    assert lens.config["n_prompts"] == 4 and report["half_prompts"] == [2, 2]
    assert len(report["stability_relative_kl_difference"]) == 3 and "| embed |" in (out / "report.md").read_text()
    assert set(report["heldout"]["kl_mean"]) == {"logit", "least_squares", "jacobian", "jacobian_a", "jacobian_b"}
    # the stability curve: 1 text per half (shard 0 vs shard 1), then the halves (2 texts each)
    curve = report["stability_curve"]
    assert [c["texts_per_half"] for c in curve] == [1, 2]
    assert curve[-1]["max"] == max(report["stability_relative_kl_difference"])
    ev = glt.evaluate_lens(model, {"jacobian": lens, "a": glt.load_lens(work / "shards" / "000", model),
                                   "b": glt.load_lens(work / "shards" / "001", model)},
                           [" ".join(p.split()[:48]) for p in glt.wikipedia_paragraphs("heldout")[:6]],
                           max_rows=24, seed=0, progress=False)
    kl = ev.kl.mean(-1)[:, :3]
    one = ((kl[1] - kl[2]).abs() / kl[0].clamp_min(1e-9)).tolist()
    assert abs(curve[0]["max"] - max(one)) < 1e-4 and abs(curve[0]["mean"] - sum(one) / 3) < 1e-4
    assert report["texts_per_half_for_tolerance_if_1_over_sqrt"] >= 2 or curve[-1]["max"] < 0.05
    assert (report["curve_log_log_slope"], report["texts_per_half_for_tolerance_fitted_power_law"]) == \
        script.power_law(curve, 0.05)
    assert "| texts per half | max rel. diff |" in (out / "report.md").read_text()
    texts = script.corpus(model, 4, 24)  # the merged shards equal one fit on every text
    whole = fit_jacobian_lens(model, texts, max_seq_len=24, skip_first_positions=2, progress=False)
    torch.testing.assert_close(lens.jacobian, whole.jacobian, rtol=1e-5, atol=1e-6)


def test_power_law_extrapolation():
    script = _script()
    curve = [{"texts_per_half": k, "max": 0.4 * k**-0.5} for k in (1, 2, 4, 8)]
    slope, needed = script.power_law(curve, 0.05)
    assert abs(slope + 0.5) < 1e-12 and needed == 64  # 0.4 / sqrt(64) = 0.05
    slope, needed = script.power_law([{"texts_per_half": k, "max": 0.2 * k**-1.0} for k in (1, 3)], 0.05)
    assert abs(slope + 1.0) < 1e-12 and needed == 4
    assert script.power_law([{"texts_per_half": 1, "max": 0.3}, {"texts_per_half": 2, "max": 0.4}], 0.05)[1] is None
    assert script.power_law([{"texts_per_half": 2, "max": 0.3}], 0.05) == (None, None)
