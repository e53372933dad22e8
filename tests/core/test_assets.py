"""What ships for which model: `glt.core._assets` maps load names and loaded models to asset folders."""

import re

import pytest

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
    assert sorted(p.name for p in (assets.ASSETS_ROOT / "lenses").iterdir()) == sorted(assets.SHIPPED.values())


def test_a_build_without_assets_has_no_shipped_lens(monkeypatch, tmp_path):
    monkeypatch.setattr(assets, "ASSETS_ROOT", tmp_path)
    assert assets.shipped_lens_dir("default") is None and assets.shipped_lens_dir("gpt2") is None
    assert assets.shipped_frequency_dir("default") is None and assets.shipped_frequency_dir("gpt2") is None
    with pytest.raises(glt.GltError, match=r"the shipped 'smollm2-135m' lens is missing from this installation"):
        glt.load_lens("smollm2-135m")


def test_the_shipped_assets_keep_the_wheel_under_pypi_s_100_mb_file_limit():
    """Both float32 lenses (29.5 MB + 39.9 MB) and the tables make the wheel ~68 MB (lenses barely
    compress); a third lens or a larger model's would need another home (an extra package)."""
    total = sum(f.stat().st_size for f in assets.ASSETS_ROOT.rglob("*") if f.is_file())
    assert total < 85_000_000, f"glt/assets holds {total / 1e6:.1f} MB"


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
