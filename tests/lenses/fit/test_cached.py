"""`least_squares_lens`: fitted on the spot, cached by the model's fingerprint and settings, reused,
and refitted (never trusted) when the cache entry is damaged or belongs to other settings."""

import json

import pytest
import torch

import glt
from glt.lenses.fit._cached import LeastSquaresLens, least_squares_key, least_squares_lens
from glt.lenses.fit._data import plan_sequences
from tests.helpers import make_tiny_folder

TOKENS = 600  # read positions of the tiny fits: more than d_model = 28, quick


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GLT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "lenses" / "least_squares"


def fit(model, log, **kw):
    return least_squares_lens(model, max_tokens=TOKENS, log=log.append, progress=False, **kw)


def test_fit_cache_and_reuse(tiny_llama, cache):
    first, log = [], []
    lens = fit(tiny_llama, first)
    assert isinstance(lens, LeastSquaresLens) and lens.name == "least_squares" and not lens.origin["reused"]
    assert "fitting a least-squares lens for" in first[0] and "cached at" in first[1]
    assert "would take about" in first[2] and "positions/s" in first[2] and "glt lens train" in first[2]
    folder = cache / least_squares_key(tiny_llama, lens.origin["settings"])
    assert (folder / "params.safetensors").is_file() and lens.origin["folder"] == str(folder)
    assert lens.config["least_squares"]["tokens"] == TOKENS
    # the lens is glt.fit_least_squares on the shuffled train split: refitting by hand gives the same
    with pytest.warns(UserWarning):  # the tiny model's context cuts long paragraphs
        seqs, _ = plan_sequences(tiny_llama, glt.wikipedia_paragraphs("train"), seq_len=256)
    seqs = [seqs[i] for i in torch.randperm(len(seqs), generator=torch.Generator().manual_seed(0)).tolist()]
    ref = glt.fit_least_squares(tiny_llama, seqs, max_tokens=TOKENS, progress=False)
    assert torch.equal(ref.weight, lens.weight) and torch.equal(ref.bias, lens.bias)
    again = fit(tiny_llama, log)
    assert again.origin["reused"] and "using the least-squares lens cached" in log[0]
    assert torch.equal(again.weight, lens.weight) and torch.equal(again.bias, lens.bias)
    assert any(torch.count_nonzero(w) for w in lens.weight)  # not the zero (logit) lens
    r = glt.readout(glt.capture_residuals(tiny_llama, ["the city of paris"]), again)
    assert r.lens == "least_squares"


def test_the_key_follows_model_and_settings(tiny_llama, tiny_root):
    other = glt.load_model(str(make_tiny_folder("llama", tiny_root, n_layers=2)))
    s = {"max_tokens": TOKENS, "ridge": 1e-4, "seq_len": 256, "seed": 0, "data": "x", "format": 1}
    keys = {least_squares_key(tiny_llama, s), least_squares_key(other, s),
            least_squares_key(tiny_llama, {**s, "max_tokens": TOKENS + 1}),
            least_squares_key(tiny_llama, {**s, "seed": 1})}
    assert len(keys) == 4 and least_squares_key(tiny_llama, dict(s)) in keys


@pytest.mark.parametrize("damage", ["truncated", "wrong_key", "no_config"])
def test_a_damaged_entry_is_refitted_never_used(tiny_llama, cache, damage):
    lens = fit(tiny_llama, [])
    folder = cache / least_squares_key(tiny_llama, lens.origin["settings"])
    if damage == "truncated":
        f = folder / "params.safetensors"
        f.write_bytes(f.read_bytes()[:100])
    elif damage == "wrong_key":
        cfg = json.loads((folder / "config.json").read_text())
        cfg["on_the_spot"]["cache_key"] = "someone-else"
        (folder / "config.json").write_text(json.dumps(cfg))
    else:
        (folder / "config.json").unlink()
    log: list[str] = []
    again = fit(tiny_llama, log)
    assert not again.origin["reused"] and "fitting it again" in log[0]
    assert torch.equal(again.weight, lens.weight)  # the same fit, written back in place
    assert fit(tiny_llama, []).origin["reused"]


def test_cache_false_writes_nothing(tiny_llama, cache):
    lens = fit(tiny_llama, [], cache=False)
    assert lens.origin["folder"] is None and not cache.exists()


@pytest.mark.parametrize("kw, match", [({"max_tokens": 1}, "max_tokens must be"), ({"seq_len": 1.5}, "seq_len")])
def test_bad_settings_raise(tiny_llama, cache, kw, match):
    with pytest.raises(glt.GltError, match=match):
        least_squares_lens(tiny_llama, progress=False, log=lambda m: None, **kw)


def test_resid_mid_refits_an_entry_without_mid_translators_and_that_entry_serves_both(tiny_llama, cache):
    log: list[str] = []
    plain = fit(tiny_llama, log)
    assert not plain.reads_resid_mid
    log.clear()
    mid = fit(tiny_llama, log, resid_mid=True)
    assert not mid.origin["reused"] and "has no resid_mid translators" in log[0] and mid.reads_resid_mid
    assert torch.equal(mid.weight, plain.weight) and torch.equal(mid.bias, plain.bias)  # same rows, same fit
    assert mid.origin["folder"] == plain.origin["folder"]  # one entry, now with the mid translators
    for resid_mid in (True, False):
        again = fit(tiny_llama, [], resid_mid=resid_mid)
        assert again.origin["reused"] and again.reads_resid_mid
        assert torch.equal(again.mid_weight, mid.mid_weight) and torch.equal(again.mid_bias, mid.mid_bias)


def test_the_advice_points_a_model_with_a_shipped_tuned_lens_to_it(tiny_llama, cache):
    """For the default model and SmolLM2-135M the KL-trained lens ships: no `glt lens train` estimate."""
    log = []
    fit(tiny_llama, log, model_arg="smollm2-135m")  # the name as the user typed it: a shipped model
    assert "a KL-trained tuned lens ships for 'smollm2-135m'" in log[-1] and "--lens tuned" in log[-1]
    assert "glt lens train" not in log[-1]
