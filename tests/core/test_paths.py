"""Every path argument: wrong kind, parent a file, unwritable folder, full disk, spaces and non-ASCII.

One table of artefacts (every save/load pair, from the glt 0.1.0 fixture files) crossed with one
table of path problems, for Python (GltError naming the path, nothing half-written left where a
later load would trust it) and one table of command lines (exit status 2, ``glt: error:`` naming
the path on stderr, no traceback). Unwritable folders and full disks are simulated (the suite runs
as root, so permissions do not stop it): ``tempfile.mkstemp`` / ``mkdtemp`` / ``os.mkdir`` raise
PermissionError, ``os.fsync`` raises ENOSPC.
"""

import errno
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

import glt
from glt.cli._main import main
from glt.lenses.fit._checkpoints import load_checkpoint, save_checkpoint

F = Path(__file__).resolve().parents[1] / "fixtures" / "v0_1_0"
ODD = "dossier résumé 📁 x"  # spaces, accents, an emoji


@pytest.fixture(scope="module")
def model():
    return glt.load_model(str(F / "model_tiny_llama"))


def _checkpoint_save(lens, path):
    save_checkpoint(path, "fp", lens, None, 1, [])
    return path


def _checkpoint_load(model, path):
    lens = glt.TunedLens.from_model(model)
    if load_checkpoint(path, "fp", lens, None) is None:
        raise glt.GltError(f"no checkpoint in {path}")
    return lens


# name: (kind of path, load the fixture, save(obj, path), load(path))
ARTEFACTS = {
    "Readout": ("file", lambda m: glt.Readout.load(F / "readout.safetensors"),
                lambda o, p: o.save(p), lambda m, p: glt.Readout.load(p)),
    "GuessRefineResult": ("file", lambda m: glt.GuessRefineResult.load(F / "guess_refine.json"),
                          lambda o, p: o.save(p), lambda m, p: glt.GuessRefineResult.load(p)),
    "PosResult": ("file", lambda m: glt.PosResult.load(F / "pos.json"),
                  lambda o, p: o.save(p), lambda m, p: glt.PosResult.load(p)),
    "FactRecallResult": ("file", lambda m: glt.FactRecallResult.load(F / "fact_recall.json"),
                         lambda o, p: o.save(p), lambda m, p: glt.FactRecallResult.load(p)),
    "MultipleChoiceResult": ("file", lambda m: glt.MultipleChoiceResult.load(F / "multiple_choice.json"),
                             lambda o, p: o.save(p), lambda m, p: glt.MultipleChoiceResult.load(p)),
    "EarlyExitResult": ("file", lambda m: glt.EarlyExitResult.load(F / "early_exit.json"),
                        lambda o, p: o.save(p), lambda m, p: glt.EarlyExitResult.load(p)),
    "PatchingResult": ("file", lambda m: glt.PatchingResult.load(F / "patching.json"),
                       lambda o, p: o.save(p), lambda m, p: glt.PatchingResult.load(p)),
    "LensEvaluation": ("file", lambda m: glt.LensEvaluation.load(F / "lens_eval.json"),
                       lambda o, p: o.save(p), lambda m, p: glt.LensEvaluation.load(p)),
    "TokenFrequency": ("folder", lambda m: glt.TokenFrequency.load(F / "frequency"),
                       lambda o, p: o.save(p), lambda m, p: glt.TokenFrequency.load(p)),
    "TunedLens": ("folder", lambda m: glt.load_lens(F / "tuned_lens", m),
                  lambda o, p: o.save(p), lambda m, p: glt.load_lens(p, m)),
    "tuned-lens export": ("folder", lambda m: glt.load_lens(F / "tuned_lens", m),
                          lambda o, p: glt.export_tuned_lens(o, p), lambda m, p: glt.import_tuned_lens(p, m)),
    "checkpoint": ("folder", lambda m: glt.load_lens(F / "tuned_lens", m), _checkpoint_save, _checkpoint_load),
}


def _deny(*args, **kwargs):
    raise PermissionError(errno.EACCES, "Permission denied", kwargs.get("dir") or (args[0] if args else None))


def _full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def read_only(mp):
    for mod, name in ((tempfile, "mkstemp"), (tempfile, "mkdtemp"), (os, "mkdir")):
        mp.setattr(mod, name, _deny)


def disk_full(mp):
    mp.setattr(os, "fsync", _full)


def listing(root: Path) -> list[str]:
    """Every file under ``root`` (parent folders a failed save created may stay, empty)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if not p.is_dir())


# problem: (where the path points, how the OS misbehaves, what the GltError says; None = must work)
PROBLEMS = {
    "spaces, non-ASCII, missing parents": (lambda t, kind: t / ODD / "neu ü" / "out", None, None),
    "wrong kind": (lambda t, kind: _wrong_kind(t, kind), None, r"is a (file, not a folder|folder, not a file)"),
    "parent is a file": (lambda t, kind: _a_file(t) / "out", None, r"is a file, not a folder"),
    "read-only folder": (lambda t, kind: t / "ro" / "out", read_only, r"permission denied"),
    "full disk": (lambda t, kind: t / "full" / "out", disk_full, r"no space left on the device"),
}


def _a_file(t: Path) -> Path:
    f = t / "plain file.txt"
    f.write_text("keep me")
    return f


def _wrong_kind(t: Path, kind: str) -> Path:
    if kind == "folder":
        return _a_file(t)
    (t / "a folder").mkdir()
    return t / "a folder"


@pytest.mark.parametrize("problem", list(PROBLEMS))
@pytest.mark.parametrize("artefact", list(ARTEFACTS))
def test_python_save_and_load_paths(model, tmp_path, monkeypatch, artefact, problem):
    kind, make, save, load = ARTEFACTS[artefact]
    where, misbehave, message = PROBLEMS[problem]
    obj = make(model)
    path = where(tmp_path, kind)
    if message is None:
        assert Path(save(obj, path)) == path
        load(model, path)  # round-trips
        assert not [p for p in listing(tmp_path) if ".tmp" in p]
        return
    before = listing(tmp_path)
    if misbehave is not None:
        misbehave(monkeypatch)
    with pytest.raises(glt.GltError, match=message) as info:
        save(obj, path)
    monkeypatch.undo()
    assert str(path) in str(info.value) or str(path.parent) in str(info.value), str(info.value)
    assert listing(tmp_path) == before  # nothing half-written, no temporary left behind
    assert problem == "wrong kind" or not path.is_file()
    if problem in ("wrong kind", "parent is a file"):  # and the loader refuses the same path
        with pytest.raises(glt.GltError) as info:
            load(model, path)
        assert str(path) in str(info.value) or str(path.parent) in str(info.value), str(info.value)


@pytest.mark.parametrize("artefact", ["Readout", "GuessRefineResult", "TunedLens", "checkpoint"])
def test_full_disk_keeps_the_old_result(model, tmp_path, monkeypatch, artefact):
    """A failed overwrite leaves the earlier result whole and loadable."""
    kind, make, save, load = ARTEFACTS[artefact]
    obj = make(model)
    path = tmp_path / ODD / "r"
    save(obj, path)
    before = listing(tmp_path)
    disk_full(monkeypatch)
    with pytest.raises(glt.GltError, match="no space left"):
        save(obj, path)
    monkeypatch.undo()
    assert listing(tmp_path) == before
    load(model, path)


def test_training_and_study_refuse_a_bad_out_before_working(model, tmp_path):
    f = _a_file(tmp_path)
    for kw in ("out", "checkpoint_dir"):
        with pytest.raises(glt.GltError, match=f"{kw} {f} is a file"):
            glt.train_tuned_lens(model, ["the capital of france is paris"], **{kw: f})
    config = glt.pipeline.study_config(model=str(F / "model_tiny_llama"), lens="logit", quick=True)
    with pytest.raises(glt.GltError, match=f"{f} is a file, not a folder"):
        glt.run_study(config, f, progress=False)
    assert f.read_text() == "keep me"


# ----------------------------------------------------------------------------- command line
def _cli_cases(t: Path) -> list[tuple[list[str], str]]:
    f, d = _a_file(t), t / "a folder"
    d.mkdir()
    texts = t / "texts.txt"
    texts.write_text("the capital of france is paris")
    lens = str(F / "tuned_lens")
    return [
        (["study", "--quick", "--out", str(f)], f"--out {f} is a file"),
        (["study", "--quick", "--out", str(f / "sub")], f"{f} is a file, not a folder"),
        (["study", "--quick", "--config", str(d)], f"--config {d} is a folder"),
        (["study", "--quick", "--config", str(t / "missing.json")], "does not exist"),
        (["study", "--quick", "--lens-path", str(f)], f"--lens-path {f} is a file"),
        (["inspect", "x", "--lens", "tuned", "--lens-path", str(f)], f"--lens-path {f} is a file"),
        (["lens", "train", "--texts", str(texts), "--out", str(f)], f"--out {f} is a file"),
        (["lens", "train", "--texts", str(texts), "--out", str(d), "--checkpoint-dir", str(f)],
         f"--checkpoint-dir {f} is a file"),
        (["lens", "train", "--texts", str(d), "--out", str(t / "o")], f"--texts {d} is a folder"),
        (["lens", "train", "--texts", str(texts), "--out", str(t / "o"), "--frequency-counts", str(d)],
         f"--frequency-counts {d} is a folder"),
        (["lens", "eval", str(f), "--texts", str(texts)], f"lens {f} is a file"),
        (["lens", "eval", lens, "--texts", str(texts), "--out", str(d)], f"--out {d} is a folder"),
        (["lens", "import", str(f), str(t / "o")], f"source {f} is a file"),
        (["lens", "import", lens, str(f)], f"dest {f} is a file"),
        (["lens", "export", lens, str(f / "x")], f"{f} is a file, not a folder"),
    ]


def test_cli_path_errors_exit_2_without_traceback(tmp_path, capsys):
    for argv, message in _cli_cases(tmp_path):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("glt: error: ") and message in err and "Traceback" not in err, (argv, err)


@pytest.mark.parametrize("problem", ["read-only folder", "full disk"])
def test_cli_unwritable_output_exits_2(tmp_path, capsys, monkeypatch, problem):
    model = str(F / "model_tiny_llama")
    out = tmp_path / ODD / "exported"
    argvs = [["lens", "export", str(F / "tuned_lens"), str(out), "--model", model],
             ["study", "--model", model, "--lens", "logit", "--quick", "--out", str(out), "--no-progress"]]
    PROBLEMS[problem][1](monkeypatch)
    for argv in argvs:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        last = err.strip().splitlines()[-1]  # above it: the model loader's progress bar
        assert last.startswith("glt: error: ") and str(out) in last and PROBLEMS[problem][2] in last, err
        assert "Traceback" not in err
    monkeypatch.undo()
    assert not out.exists() or listing(out) == []  # at most the empty folders a study starts with


def test_cli_paths_with_spaces_and_non_ascii_work(tmp_path, capsys):
    model = str(F / "model_tiny_llama")
    out, back = tmp_path / ODD / "exported lens", tmp_path / ODD / "ré-importé"
    assert main(["lens", "export", str(F / "tuned_lens"), str(out), "--model", model]) == 0
    assert main(["lens", "import", str(out), str(back), "--model", model]) == 0
    assert json.loads((back / "config.json").read_text())["d_model"] > 0
    shutil.rmtree(tmp_path / ODD)
    capsys.readouterr()
