"""What ships for which model: `glt.core._assets` maps load names and loaded models to asset folders."""

import json
import re
import zlib

import pytest
import torch

import glt
import glt.core._assets as assets


@pytest.mark.parametrize(("name", "key"), [
    ("default", "default"), ("DEFAULT", None),  # load_model reads "default" exactly
    ("smollm2-135m", "smollm2-135m"), ("SmolLM2", "smollm2-135m"),
    ("gemma-3-270m", None),  # a hub name: other weights than the embedded quantised model
    ("gpt2", None), ("/some/folder", None), ("", None),
])
def test_shipped_key_of_a_load_name(name, key):
    assert assets.shipped_key(name) == key


def test_shipped_key_of_a_loaded_model(tiny_llama, monkeypatch):
    assert assets.shipped_key(tiny_llama) is None
    monkeypatch.setattr(tiny_llama, "_glt_name", "smollm2-135m", raising=False)  # as glt.load_model("smollm2")
    assert assets.shipped_key(tiny_llama) == "smollm2-135m"


def test_every_shipped_model_has_its_lens_and_table():
    for name in assets.SHIPPED_NAMES:
        key = assets.shipped_key(name)
        assert assets.shipped_lens_dir(name) == assets.asset_dir("lenses", key)
        assert assets.shipped_frequency_dir(name) == assets.asset_dir("frequency", key)
        for f in ("config.json", "params.safetensors", "report.md", "eval.json"):
            assert (assets.asset_dir("lenses", key) / f).is_file(), (name, f)
        assert (assets.asset_dir("frequency", key) / "frequency.json").is_file(), name
    jacobians = [f"{key}-jacobian" for key in assets.SHIPPED_JACOBIAN]
    assert sorted(p.name for p in (assets.ASSETS_ROOT / "lenses").iterdir()) == sorted([*assets.SHIPPED.values(),
                                                                                         *jacobians])


def test_the_shipped_jacobian_lens_and_its_report():
    """The default model's Jacobian lens: float16 [18, 640, 640] (J_0 fitted), its fit provenance,
    and a report whose two disjoint halves agree within the 5% tolerance at every residual."""
    from safetensors import safe_open

    folder = assets.shipped_jacobian_dir("default")
    assert folder == assets.asset_dir("lenses", "default-jacobian") and assets.shipped_jacobian_dir("gpt2") is None
    assert assets.shipped_jacobian_dir("smollm2-135m") is None
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["format"] == "glt-jacobian-lens" and cfg["dtype"] == "float16" and cfg["residual_0"] == "fitted"
    assert (cfg["n_layers"], cfg["d_model"], cfg["n_prompts"]) == (18, 640, 24)
    assert cfg["fit"]["max_seq_len"] == 128 and cfg["fit"]["tokens"] == 24 * 128
    with safe_open(str(folder / "params.safetensors"), "pt") as f:
        J = f.get_tensor("jacobian")
    assert J.dtype == torch.float16 and tuple(J.shape) == (18, 640, 640) and bool(torch.isfinite(J).all())
    report = json.loads((folder / "report.json").read_text())
    assert report["n_prompts"] == 24 and report["half_prompts"] == [12, 12] and report["stable"] is True
    assert max(report["stability_relative_kl_difference"]) < report["tolerance"] == 0.05
    assert report["stability_curve"][-1]["texts_per_half"] == 12
    kl = report["heldout"]["kl_mean"]
    assert set(kl) >= {"logit", "least_squares", "tuned", "jacobian"} and len(kl["jacobian"]) == 19
    assert "| texts per half | max rel. diff |" in (folder / "report.md").read_text()
    with pytest.raises(glt.GltError, match=r"is not a folder: pass .*default-jacobian for a Jacobian lens"):
        glt.load_lens("smollm2-135m-jacobian")  # none ships for SmolLM2


def test_a_build_without_assets_has_no_shipped_lens(monkeypatch, tmp_path):
    monkeypatch.setattr(assets, "ASSETS_ROOT", tmp_path)
    assert assets.shipped_lens_dir("default") is None and assets.shipped_lens_dir("gpt2") is None
    assert assets.shipped_frequency_dir("default") is None and assets.shipped_frequency_dir("gpt2") is None
    assert assets.shipped_jacobian_dir("default") is None
    with pytest.raises(glt.GltError, match=r"the shipped 'smollm2-135m' lens is missing from this installation"):
        glt.load_lens("smollm2-135m")


def test_the_shipped_assets_keep_the_wheel_under_pypi_s_100_mb_file_limit():
    """The wheel stores the assets deflated: both float32 tuned lenses (29.5 MB + 39.9 MB, they
    barely compress), the float16 Jacobian lens (14.7 MB) and the JSON reports and tables come to
    ~83 MB compressed, under PyPI's 100 MB file limit with room for the code; a further lens would
    need another home (an extra package)."""
    files = [f for f in assets.ASSETS_ROOT.rglob("*") if f.is_file()]
    deflated = sum(len(zlib.compress(f.read_bytes(), 6)) for f in files)
    assert deflated < 90_000_000, f"glt/assets deflates to {deflated / 1e6:.1f} MB"


def test_the_default_frequency_table_of_a_build_without_it_is_a_glt_error(tiny_llama, monkeypatch, tmp_path):
    """`glt.run_guess_then_refine(..., frequency=None)` says the table is missing, and what to pass."""
    from glt.studies.guess_then_refine._inputs import resolve_frequency

    monkeypatch.setattr(tiny_llama, "_glt_name", "smollm2-135m", raising=False)
    assert resolve_frequency(tiny_llama, None, 49152).tokenizer == "smollm2-135m"
    monkeypatch.setattr(assets, "ASSETS_ROOT", tmp_path)
    missing = re.escape(str(tmp_path / "frequency" / "smollm2-135m"))
    with pytest.raises(glt.GltError, match=r"lacks the table shipped for 'smollm2-135m' \(" + missing
                       + r" is missing\).*TokenFrequency.from_texts"):
        resolve_frequency(tiny_llama, None, 49152)
    monkeypatch.setattr(tiny_llama, "_glt_name", "gpt2", raising=False)
    with pytest.raises(glt.GltError, match=r"ships tables for default and smollm2-135m only, not for 'gpt2'"):
        resolve_frequency(tiny_llama, None, 49152)
