"""The ``glt`` command line: inspect (table and JSON), study option handling, errors."""

import json
import sys

import pytest
import torch

import glt
from glt.cli._main import build_parser, format_inspect, inspect_text, main
from tests.helpers import run_bounded

TEXT = "the capital of france is"


@pytest.fixture(scope="module")
def tiny_folder(tiny_root):
    from tests.helpers import make_tiny_folder

    return make_tiny_folder("llama", tiny_root)


def test_parser_has_the_subcommands():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert {"inspect", "study"} <= set(sub.choices)
    import importlib.util

    if importlib.util.find_spec("glt.cli._lens") is not None:
        assert "lens" in sub.choices
    args = parser.parse_args(["study", "--quick", "--lens", "both", "--out", "d"])
    assert args.quick and args.lens == "both" and args.out == "d" and not args.resume
    args = parser.parse_args(["inspect", "hello", "--top-k", "3", "--json"])
    assert args.top_k == 3 and args.json and args.lens == "logit" and args.model == "default"


def test_inspect_json_ranks_match_the_readout(tiny_folder, capsys):
    assert main(["inspect", TEXT, "--model", str(tiny_folder), "--json", "--top-k", "3"]) == 0
    data = json.loads(capsys.readouterr().out)
    model = glt.load_model(str(tiny_folder))
    r = glt.readout(glt.capture_residuals(model, [TEXT]), glt.LogitLens.from_model(model), top_k=3)
    n_layer, n_pos = r.ranks.shape[0], r.n_rows
    assert len(data["ranks"]) == n_layer and all(len(row) == n_pos for row in data["ranks"])
    assert data["ranks"] == r.ranks[:, :, 0].tolist()
    assert data["ranks"][-1] == [0] * n_pos  # the final top-1 has rank 0 at the final layer
    assert data["layers"][0] == "embed" and data["layers"][-1] == "final"
    assert data["token_ids"] == glt.tokenize(model, TEXT)[0]
    assert data["position"] == n_pos - 1 and len(data["topk"]) == n_layer
    top = data["topk"][-1][0]
    assert top["id"] == data["final_top1_ids"][-1]
    assert top["prob"] == pytest.approx(float(r.max_prob[-1, -1]), rel=1e-5)


def test_inspect_table(tiny_folder, capsys):
    assert main(["inspect", TEXT, "--model", str(tiny_folder), "--position", "1"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert "position 1" in lines[0] and "logit lens" in lines[0]
    body = [ln for ln in lines if ln.startswith(("embed", "resid_pre", "final"))]
    assert len(body) == 4  # 3 blocks -> 4 residual indices
    assert body[-1].split()[1] == "0"  # final layer: rank 0


def test_format_inspect_handcrafted():
    data = {"model": "m", "lens": "logit", "tokens": ["a", "b"], "position": 1,
            "final_top1": ["x", "y"], "layers": ["embed", "final"],
            "ranks": [[3, 7], [0, 0]],
            "topk": [[{"token": "q", "id": 1, "prob": 0.5}], [{"token": "y", "id": 2, "prob": 0.9}]]}
    text = format_inspect(data)
    rows = [ln.split() for ln in text.splitlines() if ln.startswith(("embed", "final"))]
    assert rows[0][:2] == ["embed", "7"] and rows[1][:2] == ["final", "0"]
    assert "'y'" in text and "0.900" in text


@pytest.mark.parametrize("argv, match", [
    (["inspect", TEXT, "--top-k", "0"], "--top-k must be"),
    (["inspect", "   "], "TEXT must be non-empty"),
    (["inspect", TEXT, "--position", "99"], "--position must lie"),
    (["inspect", TEXT, "--lens", "tuned"], "tuned lens"),
])
def test_inspect_errors_exit_2(tiny_folder, capsys, argv, match):
    assert main(argv[:2] + ["--model", str(tiny_folder)] + argv[2:]) == 2
    err = capsys.readouterr().err
    assert "glt: error:" in err and match in err


def test_study_refuses_a_non_empty_folder(tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("x")
    assert main(["study", "--lens", "logit", "--out", str(tmp_path)]) == 2
    assert "not empty" in capsys.readouterr().err


def test_inspect_text_validates():
    lens = glt.LogitLens(glt.Unembed(torch.nn.Identity(), torch.eye(3), None), n_layers=1)
    with pytest.raises(glt.GltError, match="TEXT must be non-empty"):
        inspect_text("", model=None, lens=lens)


@pytest.mark.parametrize("module", ["glt", "glt.cli._main"])
def test_module_entry_point_help(module):
    out = run_bounded([sys.executable, "-m", module, "--help"], what=f"python -m {module} --help", timeout=300)
    assert out.returncode == 0 and "inspect" in out.stdout and "study" in out.stdout


def test_main_returns_int_for_console_script(tiny_folder, capsys):
    """The console script passes main's return value to sys.exit: an int, 0 or 2, never a bool or None."""
    ok = main(["inspect", TEXT, "--model", str(tiny_folder), "--json"])
    bad = main(["inspect", TEXT, "--model", str(tiny_folder), "--top-k", "0"])
    assert (type(ok), ok, type(bad), bad) == (int, 0, int, 2)
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0


@pytest.mark.integration
@pytest.mark.parametrize("lens_name", ["logit", "tuned"])
def test_inspect_default_model(default_model, lens_name):
    from glt.pipeline._context import default_lens_name, load_tuned_lens

    if lens_name == "tuned" and default_lens_name("default") != "tuned":
        pytest.skip("no tuned lens ships yet")
    lens = glt.LogitLens.from_model(default_model) if lens_name == "logit" else load_tuned_lens(default_model)
    data = inspect_text("The capital of France is", model=default_model, lens=lens, top_k=5)
    n_tok = len(glt.tokenize(default_model, "The capital of France is")[0])
    assert len(data["ranks"]) == default_model.cfg.n_layers + 1
    assert all(len(row) == n_tok for row in data["ranks"]) and data["ranks"][-1] == [0] * n_tok
    assert data["lens"] == lens_name and data["tokens"][0] == "<bos>"
    assert [t["token"] for t in data["topk"][-1]][:3] == [" the", " a", " Paris"]  # same final layer
    assert "rank" in format_inspect(data)
