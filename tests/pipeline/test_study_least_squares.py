"""``glt study --lens least_squares``: the lens is fitted on the spot, named in the results, and the
report's provenance says how the run came by it."""

import json

import matplotlib

matplotlib.use("Agg")

from glt.pipeline._run import StudyConfig, run_study  # noqa: E402
from glt.studies.guess_then_refine import GuessRefineResult  # noqa: E402
from tests.helpers import make_tiny_folder  # noqa: E402

TINY_SIZES = {"gtr_texts": 4, "gtr_max_tokens": 12, "freq_paragraphs": 20}


def test_study_with_a_least_squares_lens(tiny_root, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GLT_CACHE", str(tmp_path / "cache"))
    cfg = StudyConfig(model=str(make_tiny_folder("llama", tiny_root)), lenses=("least_squares",), **TINY_SIZES)
    out = run_study(cfg, tmp_path / "first", stages=["guess_refine"], progress=False)
    assert "fitting a least-squares lens for" in capsys.readouterr().err
    res = GuessRefineResult.load(out / "data" / "guess_refine_least_squares.json")
    assert res.lens == "least_squares"
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["lens choice"].startswith("least_squares: a least-squares lens on 16384 positions")
    assert "fitted on the spot this run" in prov["lens choice"] and "on_the_spot" in prov["least_squares lens"]
    assert "lens choice" in (out / "report.md").read_text()
    second = run_study(cfg, tmp_path / "second", stages=["guess_refine"], progress=False)
    assert "using the least-squares lens cached" in capsys.readouterr().err
    assert "reused from the cache" in json.loads((second / "provenance.json").read_text())["lens choice"]
    assert (second / "data" / "guess_refine_least_squares.json").read_bytes() == \
        (out / "data" / "guess_refine_least_squares.json").read_bytes()


def test_default_lens_without_a_shipped_lens_is_least_squares(monkeypatch, tmp_path):
    import glt.core._assets as assets
    import glt.pipeline._context as context

    assert context.default_lens_name("smollm2-135m") == context.default_lens_name("default") == "tuned"
    assert context.default_lens_name("/some/model") == context.default_lens_name("gpt2") == "least_squares"
    monkeypatch.setattr(assets, "ASSETS_ROOT", tmp_path / "no-assets")
    assert context.default_lens_name("default") == context.default_lens_name("smollm2") == "least_squares"
