"""``glt study --lens-path FOLDER`` with a Jacobian lens folder: the lens runs as ``jacobian``."""

import json

import matplotlib
import pytest

matplotlib.use("Agg")

import glt  # noqa: E402
from glt.core._assets import shipped_jacobian_dir  # noqa: E402
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


def test_lens_jacobian_without_a_folder_needs_a_shipped_one(folders):
    model_folder, _ = folders
    with pytest.raises(glt.GltError, match=r"no Jacobian lens ships for .*one ships for the default model only"):
        study_config(model=str(model_folder), lens="logit,jacobian")


@pytest.mark.integration
def test_the_shipped_jacobian_lens_serves_the_default_model(default_model):
    """``--lens jacobian`` on the default model needs no folder: the shipped lens (fitted on 24
    texts) loads, matches the model's unembedding and reads held-out text about as its report says."""
    from glt.pipeline._context import load_jacobian_lens

    assert study_config(model="default", lens="logit,jacobian", quick=True).lenses == ("logit", "jacobian")
    lens = glt.load_lens("default-jacobian", default_model)
    assert isinstance(lens, glt.JacobianLens) and lens.config["n_prompts"] == 24 and lens.residual_0 == "fitted"
    assert load_jacobian_lens(default_model, None).jacobian.equal(lens.jacobian)
    folder = shipped_jacobian_dir("default")
    want = json.loads((folder / "report.json").read_text())["heldout"]["kl_mean"]["jacobian"]
    texts = [" ".join(p.split()[:48]) for p in glt.wikipedia_paragraphs("heldout")[:16]]
    kl = glt.readout(glt.capture_residuals(default_model, texts), lens).kl_to_final.mean(-1).tolist()
    assert kl[-1] == 0 and all(0.5 * w <= k <= 2 * w for k, w in zip(kl[:-1], want[:-1], strict=True)), (kl, want)


@pytest.mark.integration
def test_glt_inspect_lens_jacobian_on_the_default_model(capsys):
    from glt.cli._main import main

    assert main(["inspect", "The capital of France is", "--lens", "jacobian", "--json", "--top-k", "2"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["lens"] == "jacobian" and len(out["layers"]) == 19
