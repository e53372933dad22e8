"""Security: nothing glt loads is unpickled or executed, and damaged files fail loudly and helpfully.

* source scan: no pickle-family module anywhere in ``glt/``; every ``torch.load`` passes
  ``weights_only=True``; no ``eval``/``exec``, ``numpy.load(allow_pickle=True)`` or
  ``trust_remote_code=True``;
* what glt writes (lenses, frequency tables, training checkpoints, results, shipped assets) is
  safetensors or JSON only;
* a truncated, garbled or field-mangled lens, frequency table, checkpoint, result file or cached
  model raises `GltError` naming the file and the fix (delete / rebuild / re-run);
* pickle payloads in a tuned-lens ``params.pt`` or a model's ``pytorch_model.bin`` are refused
  and never run (a marker file the payload would create stays absent).
"""

import ast
import builtins
import json
import pickle
import random
import re
import shutil
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from jaxtyping import TypeCheckError

import glt
from glt.data._frequency import TokenFrequency
from glt.lenses._tuned import TunedLens, export_tuned_lens, import_tuned_lens, load_lens
from glt.lenses.fit._evaluate import LensEvaluation, evaluate_lens
from glt.lenses.fit._train import train_tuned_lens
from glt.studies.early_exit._run import EarlyExitResult, early_exit
from glt.studies.fact_recall._run import FactRecallResult, run_fact_recall
from glt.studies.guess_then_refine._result import GuessRefineResult
from glt.studies.guess_then_refine._run import run_guess_then_refine
from glt.studies.multiple_choice._prompts import MCPrompt
from glt.studies.multiple_choice._result import MultipleChoiceResult
from glt.studies.multiple_choice._run import run_multiple_choice
from glt.studies.part_of_speech._run import PosResult, run_pos_study
from glt.studies.patching._run import PatchingResult, patch_layers
from tests.helpers import WORDS, make_tiny_folder

GLT_DIR = Path(glt.__file__).parent
FUZZ = settings(max_examples=30, deadline=None, derandomize=True, phases=[Phase.explicit, Phase.generate],
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
FIX = re.compile(r"delete|rebuild|re-?run|retrain|save\b.*\bagain|export\b.*\bagain|re-?export|"
                 r"train\b.*\bagain", re.I)


# ------------------------------------------------------------------------------ source scan
def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node, ast.unparse(node.func)


def _sources():
    files = sorted(GLT_DIR.rglob("*.py"))
    assert len(files) > 20
    return [(f.relative_to(GLT_DIR.parent), ast.parse(f.read_text(encoding="utf-8"))) for f in files]


def test_no_pickle_family_module_is_imported():
    banned = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal", "jsonpickle"}
    bad = []
    for path, tree in _sources():
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            bad += [f"{path}:{node.lineno} imports {n}" for n in names if n.split(".")[0] in banned]
    assert not bad, bad


def test_every_torch_load_is_weights_only():
    found, bad = [], []
    for path, tree in _sources():
        for node in ast.walk(tree):  # `from torch import load` would hide calls from the scan
            if isinstance(node, ast.ImportFrom) and node.module in ("torch", "torch.serialization"):
                bad += [f"{path}:{node.lineno} imports torch's load by name"
                        for a in node.names if a.name == "load"]
        for node, name in _calls(tree):
            if name.endswith("torch.load"):
                found.append(f"{path}:{node.lineno}")
                kw = {k.arg: k.value for k in node.keywords}
                ok = isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True
                if not ok:
                    bad.append(f"{path}:{node.lineno}: {ast.unparse(node)}")
    assert not bad, f"torch.load without weights_only=True: {bad}"
    assert found, "expected the tuned-lens import to call torch.load(weights_only=True)"


def test_no_eval_exec_pickled_numpy_or_remote_code():
    bad = []
    for path, tree in _sources():
        for node, name in _calls(tree):
            kw = {k.arg: k.value for k in node.keywords}
            where = f"{path}:{node.lineno}: {ast.unparse(node)[:80]}"
            if name in ("eval", "exec", "builtins.eval", "builtins.exec", "compile"):
                bad.append(where)
            if name.endswith((".read_pickle", "pickle.load", "pickle.loads", "torch.jit.load")):
                bad.append(where)
            for key in ("allow_pickle", "trust_remote_code"):
                v = kw.get(key)
                if v is not None and not (isinstance(v, ast.Constant) and v.value is False):
                    bad.append(where)
    assert not bad, bad


# ------------------------------------------------------------------------------ saved artefacts
def _texts(n: int, seed: int = 0, words: int = 20) -> list[str]:
    g = torch.Generator().manual_seed(seed)
    return [" ".join(WORDS[i] for i in torch.randint(0, len(WORDS), (words,), generator=g).tolist())
            for _ in range(n)]


def _tag(texts):
    table = {"the": "DET", "a": "DET", "of": "ADP", "in": "ADP", "city": "NOUN", "capital": "NOUN"}
    out = []
    for t in texts:
        words, pos = [], 0
        for w in t.split(" "):
            words.append((pos, w, table.get(w, "X")))
            pos += len(w) + 1
        out.append(words)
    return out


@pytest.fixture(scope="module")
def saved(tiny_llama, tmp_path_factory):
    """One saved file or folder of every kind glt writes, made with the tiny llama."""
    root = tmp_path_factory.mktemp("saved")
    model, lens = tiny_llama, glt.LogitLens.from_model(tiny_llama)
    freq = TokenFrequency.from_counts(torch.arange(101) % 13 + 1, edges=(3, 10))
    texts = _texts(4)
    stack = glt.capture_residuals(model, texts[:2])
    r = glt.readout(stack, lens)
    out = {}
    out["early_exit"] = (early_exit(r, gold=torch.randint(0, 101, (r.n_rows,))).save(root / "ee.json"),
                         EarlyExitResult.load)
    out["guess_refine"] = (run_guess_then_refine(model, lens, texts, frequency=freq, progress=False)
                           .save(root / "gtr.json"), GuessRefineResult.load)
    out["facts"] = (run_fact_recall(model, lens, [("the capital of france is", "paris city"),
                                                  ("he was in the", "river")], ks=(1, 5), progress=False)
                    .save(root / "facts.json"), FactRecallResult.load)
    out["pos"] = (run_pos_study(model, lens, texts, tagger=_tag, tags=("DET", "NOUN"), min_prefix_chars=0,
                                construction="every", progress=False).save(root / "pos.json"), PosResult.load)
    mc = [MCPrompt("the capital of france is", ("a", "the"), ("paris", "city"), 0, id="q0"),
          MCPrompt("she was in the city", ("a", "the"), ("river", "country"), 1, id="q1")]
    out["mc"] = (run_multiple_choice(model, lens, mc, shots=0, progress=False).save(root / "mc.json"),
                 MultipleChoiceResult.load)
    out["patching"] = (patch_layers(model, ["the capital of france is"], ["she was in the city"],
                                    target_options=[5, 6], source_options=[20, 21], progress=False)
                       .save(root / "patch.json"), PatchingResult.load)
    ev = evaluate_lens(model, {"logit": lens}, texts, max_rows=20, progress=False)
    ev.save(root / "eval.json")
    out["lens_eval"] = (root / "eval.json", LensEvaluation.load)
    out["frequency"] = (freq.save(root / "freq"), TokenFrequency.load)
    tuned = TunedLens.from_model(model)
    with torch.no_grad():
        tuned.weight.normal_(0, 0.01)
    out["lens"] = (tuned.save(root / "lens"), lambda p: load_lens(p, model))
    for key, (path, _) in out.items():
        assert Path(path).exists(), key
    return out


RESULTS = ["early_exit", "guess_refine", "facts", "pos", "mc", "patching", "lens_eval"]


def test_lens_and_frequency_folders_hold_only_safetensors_and_json(saved):
    assert sorted(p.name for p in Path(saved["lens"][0]).iterdir()) == ["config.json", "params.safetensors"]
    assert sorted(p.name for p in Path(saved["frequency"][0]).iterdir()) == ["counts.safetensors", "frequency.json"]


@pytest.mark.parametrize("kind", RESULTS)
def test_result_files_are_strict_json(saved, kind):
    def refuse(token):
        raise AssertionError(f"non-standard JSON constant {token} in {kind}")

    path = Path(saved[kind][0])
    json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)


def test_training_checkpoints_hold_only_safetensors_and_json(tiny_llama, tmp_path):
    train_tuned_lens(tiny_llama, _texts(12, words=24), checkpoint_dir=tmp_path / "ck", checkpoint_every=1,
                     max_tokens=200, tokens_per_step=100, least_squares_tokens=200, row_chunk=32,
                     heldout_texts=_texts(3, seed=1), out=tmp_path / "lens", progress=False)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert files and all(p.suffix in (".json", ".safetensors") for p in files), files


def test_shipped_assets_and_model_cache_hold_no_pickles():
    exts = {p.suffix for p in (GLT_DIR / "assets").rglob("*") if p.is_file()}
    assert exts <= {".json", ".jsonl", ".safetensors", ".txt", ".md"}, exts
    cache = glt.cache_dir() / "models"
    risky = [p for p in cache.rglob("*") if p.suffix in (".bin", ".pt", ".pth", ".pkl", ".pickle", ".npy")]
    assert not risky, risky


# ------------------------------------------------------------------------------ damaged files
def _main_file(kind: str, path: Path) -> list[Path]:
    """The file(s) of an artefact that damage is applied to."""
    if kind == "lens":
        return [path / "params.safetensors", path / "config.json"]
    if kind == "frequency":
        return [path / "counts.safetensors", path / "frequency.json"]
    return [path]


def _expect_named_error(load, where, damaged: Path):
    with pytest.raises(glt.GltError) as info:
        load(where)
    msg = str(info.value)
    assert damaged.name in msg or str(damaged.parent) in msg, f"error does not name {damaged}: {msg}"
    assert FIX.search(msg), f"error gives no fix (delete / rebuild / re-run): {msg}"
    return msg


ARTEFACTS = RESULTS + ["frequency", "lens"]

@FUZZ
@given(kind=st.sampled_from(ARTEFACTS), which=st.integers(0, 1), cut=st.floats(0.0, 0.999))
def test_truncated_files_raise_glt_error_naming_the_file(saved, tmp_path_factory, kind, which, cut):
    src, load = saved[kind]
    where = tmp_path_factory.mktemp("cut") / Path(src).name
    (shutil.copytree if Path(src).is_dir() else shutil.copy)(src, where)
    files = _main_file(kind, where)
    damaged = files[which % len(files)]
    data = damaged.read_bytes()
    damaged.write_bytes(data[: int(len(data) * cut)])
    _expect_named_error(load, where, damaged)


@pytest.mark.parametrize("kind", ARTEFACTS)
@settings(FUZZ, max_examples=10)
@given(seed=st.integers(0, 2**16))
def test_garbled_bytes_raise_glt_error_naming_the_file(saved, tmp_path_factory, kind, seed):
    src, load = saved[kind]
    where = tmp_path_factory.mktemp("garble") / Path(src).name
    (shutil.copytree if Path(src).is_dir() else shutil.copy)(src, where)
    rng = random.Random(seed)
    damaged = rng.choice(_main_file(kind, where))
    data = bytearray(damaged.read_bytes())
    for _ in range(rng.randint(1, 8)):  # overwrite a few bytes of the header / first records
        i = rng.randrange(min(len(data), 200))
        data[i] = rng.choice(b"\x00\xff{}[]\",:9x")
    damaged.write_bytes(bytes(data))
    try:
        load(where)  # a few changed bytes may still be a valid file (e.g. inside a number)
    except glt.GltError as e:
        assert FIX.search(str(e)) or "not a" in str(e), str(e)


json_junk = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-5, 10**6), st.floats(allow_nan=False), st.text(max_size=5)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=3), inner, max_size=3)),
    max_leaves=6,
)


@pytest.mark.parametrize("kind", RESULTS)
@settings(FUZZ, max_examples=15)
@given(data=st.data())
def test_mangled_result_fields_raise_only_glt_error(saved, tmp_path_factory, kind, data):
    """A result file whose fields were edited or removed: GltError (or a valid result), nothing else."""
    src, load = saved[kind]
    d = json.loads(Path(src).read_text())
    key = data.draw(st.sampled_from(sorted(d)))
    if data.draw(st.booleans()):
        del d[key]
    else:
        d[key] = data.draw(json_junk)
    where = tmp_path_factory.mktemp("mangle") / Path(src).name
    where.write_text(json.dumps(d))
    try:
        load(where)
    except glt.GltError as e:
        assert where.name in str(e) or "not a" in str(e), str(e)
    except TypeCheckError:
        pass  # pytest-only: jaxtyping rejected the loaded arrays' shapes (glt itself does not check)


def test_corrupted_checkpoint_state_json_raises(tiny_llama, tmp_path):
    kw = dict(max_tokens=200, tokens_per_step=100, least_squares_tokens=200, row_chunk=32, progress=False)
    texts = _texts(12, words=24)
    train_tuned_lens(tiny_llama, texts, checkpoint_dir=tmp_path / "ck", **kw)
    state = tmp_path / "ck" / "latest" / "state.json"
    state.write_text(state.read_text()[:40])
    with pytest.raises(glt.GltError, match="state.json") as info:
        train_tuned_lens(tiny_llama, texts, checkpoint_dir=tmp_path / "ck", **kw)
    assert FIX.search(str(info.value))


@pytest.mark.parametrize("damage", ["truncate_weights", "garble_config", "drop_weights"])
def test_corrupted_model_cache_raises_naming_the_folder(tiny_root, tmp_path, monkeypatch, damage):
    """A damaged model folder inside glt's cache: GltError naming the folder and 'delete'."""
    monkeypatch.setenv("GLT_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "cache" / "models" / "tiny-llama"
    shutil.copytree(make_tiny_folder("llama", tiny_root), folder)
    weights = folder / "model.safetensors"
    if damage == "truncate_weights":
        weights.write_bytes(weights.read_bytes()[:1000])
    elif damage == "garble_config":
        (folder / "config.json").write_text('{"model_type": "llama", "hidden_size": ')
    else:
        weights.unlink()
    with pytest.raises(glt.GltError) as info:
        glt.load_model(str(folder))
    msg = str(info.value)
    assert str(folder) in msg and "delete" in msg, msg


# ------------------------------------------------------------------------------ pickle payloads
class _Payload:
    """Unpickling this calls ``open(marker, "w")``, creating the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (builtins.open, (self.marker, "w"))


def _write_payload(path: Path, marker: Path, style: str) -> None:
    state = {f"{i}.weight": torch.zeros(28, 28) for i in range(3)}
    state.update({f"{i}.bias": torch.zeros(28) for i in range(3)})
    state["1.bias"] = _Payload(marker)
    if style == "raw_pickle":
        path.write_bytes(pickle.dumps(state, protocol=4))
    else:  # torch.save's zip container with the payload in data.pkl
        torch.save(state, path)


def test_payload_is_live(tmp_path):
    """Control: the payload does run under a plain unpickler, so its absence below means refusal."""
    marker = tmp_path / "ran"
    _write_payload(tmp_path / "p.pt", marker, "raw_pickle")
    state = pickle.loads((tmp_path / "p.pt").read_bytes())
    state["1.bias"].close()  # the payload returned the file it opened
    assert marker.exists()


@pytest.mark.parametrize("style", ["raw_pickle", "torch_zip"])
@pytest.mark.parametrize("entry", ["import_tuned_lens", "load_lens", "cli"])
def test_malicious_params_pt_is_refused_and_never_runs(tiny_root, tiny_llama, tmp_path, capsys, style,
                                                       entry):
    marker = tmp_path / "PWNED"
    src = tmp_path / "tl"
    export_tuned_lens(TunedLens.from_model(tiny_llama), src)
    _write_payload(src / "params.pt", marker, style)
    if entry == "cli":
        from glt.cli._main import main

        folder = make_tiny_folder("llama", tiny_root)
        rc = main(["lens", "import", str(src), str(tmp_path / "dest"), "--model", str(folder)])
        assert rc == 2 and "params.pt" in capsys.readouterr().err
    else:
        fn = import_tuned_lens if entry == "import_tuned_lens" else load_lens
        with pytest.raises(glt.GltError, match="params.pt") as info:
            fn(src, tiny_llama)
        assert FIX.search(str(info.value)) or "export it again" in str(info.value)
    assert not marker.exists(), "the pickle payload ran"
    assert not (tmp_path / "dest").exists()


def _evil_model(tiny_root, tmp_path):
    """A tiny model folder whose only weights file is a malicious ``pytorch_model.bin``."""
    marker = tmp_path / "PWNED"
    folder = tmp_path / "evil-model"
    shutil.copytree(make_tiny_folder("llama", tiny_root), folder)
    from safetensors.torch import load_file

    state = load_file(str(folder / "model.safetensors"))
    (folder / "model.safetensors").unlink()
    state["lm_head.weight"] = _Payload(marker)
    torch.save(state, folder / "pytorch_model.bin")
    return folder, marker


def test_pickled_model_weights_never_run(tiny_root, tmp_path):
    folder, marker = _evil_model(tiny_root, tmp_path)
    with pytest.raises(Exception):  # noqa: B017 - which exception is the next test's business
        glt.load_model(str(folder))
    assert not marker.exists(), "the pickle payload in pytorch_model.bin ran"


# ------------------------------------------------------------------------------ regressions
# Minimal repros of bugs the fuzz tests above once found (loaders letting KeyError / TypeError /
# AttributeError escape from a parsed but malformed file).
def test_pickled_model_weights_raise_glt_error(tiny_root, tmp_path):
    folder, _ = _evil_model(tiny_root, tmp_path)
    with pytest.raises(glt.GltError):
        glt.load_model(str(folder))


def _mangle(saved, tmp_path, kind, change):
    src, load = saved[kind]
    d = json.loads(Path(src).read_text())
    change(d)
    where = tmp_path / Path(src).name
    where.write_text(json.dumps(d))
    return load, where


def test_regression_mc_result_missing_field(saved, tmp_path):
    load, where = _mangle(saved, tmp_path, "mc", lambda d: d.pop("gold"))
    with pytest.raises(glt.GltError):
        load(where)


def test_regression_lens_evaluation_missing_field(saved, tmp_path):
    load, where = _mangle(saved, tmp_path, "lens_eval", lambda d: d.pop("kl"))
    with pytest.raises(glt.GltError):
        load(where)


def test_regression_early_exit_result_groups_not_a_list(saved, tmp_path):
    load, where = _mangle(saved, tmp_path, "early_exit", lambda d: d.update(groups=3))
    with pytest.raises(glt.GltError):
        load(where)


def test_regression_pos_result_curve_not_a_dict(saved, tmp_path):
    load, where = _mangle(saved, tmp_path, "pos", lambda d: d.update(curves=["x"]))
    with pytest.raises(glt.GltError, match=r"malformed .*curves\[0\] must be a JSON object, got str"):
        load(where)
