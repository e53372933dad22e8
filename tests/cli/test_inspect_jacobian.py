"""``glt inspect --lens jacobian --lens-path FOLDER``: the read-out of a Jacobian lens folder, and its errors."""

import json

import pytest

import glt
from glt.cli._main import main

TEXT = "the capital of france is"


@pytest.fixture(scope="module")
def folders(tiny_root, tmp_path_factory):
    """The tiny llama's folder, a random Jacobian lens folder and a tuned lens folder for it."""
    from tests.helpers import make_tiny_folder, save_tiny_jacobian_lens

    model_folder = make_tiny_folder("llama", tiny_root)
    model = glt.load_model(str(model_folder))
    out = tmp_path_factory.mktemp("lenses")
    save_tiny_jacobian_lens(model, out / "jacobian")
    glt.TunedLens.from_model(model).save(out / "tuned")
    return model_folder, out / "jacobian", out / "tuned"


@pytest.mark.parametrize("lens_option", ["jacobian", "tuned"])
def test_inspect_reads_a_jacobian_lens_folder(folders, capsys, lens_option):
    """``--lens jacobian`` reads the folder; so does ``--lens tuned``, whose loader dispatches on the folder."""
    model_folder, jacobian, _ = folders
    argv = ["inspect", TEXT, "--model", str(model_folder), "--lens", lens_option, "--lens-path", str(jacobian)]
    assert main(argv + ["--json", "--top-k", "3"]) == 0
    data = json.loads(capsys.readouterr().out)
    model = glt.load_model(str(model_folder))
    lens = glt.load_lens(jacobian, model)
    r = glt.readout(glt.capture_residuals(model, [TEXT]), lens, top_k=3)
    assert data["lens"] == "jacobian" and data["ranks"] == r.ranks[:, :, 0].tolist()
    logit = glt.readout(glt.capture_residuals(model, [TEXT]), glt.LogitLens.from_model(model), top_k=3)
    assert data["ranks"] != logit.ranks[:, :, 0].tolist()  # the lens was applied
    assert main(argv) == 0 and "jacobian lens" in capsys.readouterr().out


@pytest.mark.parametrize("extra,match", [
    ([], "--lens jacobian needs --lens-path FOLDER"),
    (["--lens-path", "TUNED"], "needs a Jacobian lens folder, but .* holds a tuned lens: pass --lens tuned"),
])
def test_inspect_jacobian_errors_exit_2(folders, capsys, extra, match):
    model_folder, _, tuned = folders
    extra = [str(tuned) if x == "TUNED" else x for x in extra]
    assert main(["inspect", TEXT, "--model", str(model_folder), "--lens", "jacobian", *extra]) == 2
    err = capsys.readouterr().err
    assert "glt: error:" in err
    assert __import__("re").search(match, err), err
