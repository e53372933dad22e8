"""``glt compare`` and ``--lens least_squares`` on the command line: options, output, exit status 2."""

import json

import pytest

import glt
from glt.cli._main import build_parser, main
from glt.pipeline._run import study_config
from tests.helpers import make_tiny_folder

TEXT = "the capital of france is"


def test_parser_has_compare_and_least_squares():
    parser = build_parser()
    args = parser.parse_args(["compare", "a", "b", "c", "--out", "cmp"])
    assert args.runs == ["a", "b", "c"] and args.out == "cmp" and not args.force
    assert parser.parse_args(["study", "--lens", "least_squares"]).lens == "least_squares"
    assert parser.parse_args(["inspect", "x", "--lens", "least_squares"]).lens == "least_squares"


@pytest.mark.parametrize("runs, match", [
    (["EMPTY", "EMPTY2"], "is not a glt study (it holds no study.json)"),
    (["MISSING", "EMPTY"], "is not a folder"),
    (["FILE", "EMPTY"], "is not a folder"),
    (["EMPTY"], "two or more"),
])
def test_compare_bad_dirs_exit_2(tmp_path, capsys, runs, match):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty2").mkdir()
    (tmp_path / "file.txt").write_text("x")
    where = {"EMPTY": tmp_path / "empty", "EMPTY2": tmp_path / "empty2", "MISSING": tmp_path / "missing",
             "FILE": tmp_path / "file.txt"}
    assert main(["compare", *[str(where[r]) for r in runs], "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("glt: error:") and match in err
    assert not (tmp_path / "out").exists()  # nothing written for a bad comparison


def test_study_lens_choice():
    assert study_config(model="/some/model").lenses == ("least_squares",)  # no lens ships: fitted on the spot
    assert study_config(model="/some/model", lens="least_squares").lenses == ("least_squares",)
    with pytest.raises(glt.GltError, match="pass --lens least_squares"):
        study_config(model="/some/model", lens="tuned")
    with pytest.raises(glt.GltError, match="--lens-path is the tuned lens's folder"):
        study_config(model="/some/model", lens="least_squares", lens_path="/my/lens")


def test_inspect_least_squares_json_on_stdout_messages_on_stderr(tiny_root, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GLT_CACHE", str(tmp_path / "cache"))
    folder = make_tiny_folder("llama", tiny_root)
    argv = ["inspect", TEXT, "--model", str(folder), "--lens", "least_squares", "--json"]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    data = json.loads(out)  # stdout holds the JSON only
    assert data["lens"] == "least_squares"
    assert "fitting a least-squares lens for" in err and "glt lens train --model " + str(folder) in err
    assert main(argv) == 0
    again, err = capsys.readouterr()
    assert json.loads(again) == data and "using the least-squares lens cached" in err
    assert main([*argv, "--lens-path", str(tmp_path)]) == 2
    assert "--lens-path is the tuned lens's folder" in capsys.readouterr().err
