"""``glt study --lens-path FOLDER`` with a Jacobian lens folder: the lens runs as ``jacobian``."""

import json

import matplotlib
import pytest

matplotlib.use("Agg")

import glt  # noqa: E402
from glt.pipeline._run import run_study, study_config  # noqa: E402

TINY_SIZES = {"gtr_texts": 4, "gtr_max_tokens": 12, "fact_items": 8, "freq_paragraphs": 20,
              "heatmap_text": "the capital of france is paris"}


@pytest.fixture(scope="module")
def folders(tiny_root, tmp_path_factory):
    from tests.helpers import make_tiny_folder, save_tiny_jacobian_lens

    model_folder = make_tiny_folder("llama", tiny_root)
    model = glt.load_model(str(model_folder))
    out = tmp_path_factory.mktemp("lenses")
    save_tiny_jacobian_lens(model, out / "jacobian")
    return model_folder, out / "jacobian"


@pytest.mark.parametrize("lens,want", [(None, ("jacobian",)), ("tuned", ("jacobian",)),
                                       ("both", ("jacobian", "logit"))])
def test_a_jacobian_lens_path_is_the_lens_jacobian(folders, lens, want):
    model_folder, jacobian = folders
    assert study_config(model=str(model_folder), lens=lens, lens_path=str(jacobian)).lenses == want


def test_study_runs_with_a_jacobian_lens_folder(folders, tmp_path):
    model_folder, jacobian = folders
    cfg = study_config(model=str(model_folder), lens_path=str(jacobian))
    cfg = type(cfg).from_dict({**cfg.to_dict(), **TINY_SIZES})
    out = run_study(cfg, tmp_path / "study", stages=["guess_refine", "early_exit"], progress=False)
    names = {p.name for p in (out / "data").iterdir()}
    assert {"guess_refine_jacobian.json", "early_exit_jacobian.json"} <= names
    prov = json.loads((out / "provenance.json").read_text())
    text = json.dumps(prov)
    assert "jacobian: --lens-path" in text and str(jacobian) in text
