"""The logit lens reproduces the model's own logits at the last layer and follows the contract."""

import pytest
import torch

import glt


def test_final_layer_reproduces_model_logits(tiny_model):
    stack = glt.capture_residuals(tiny_model, [[1, 5, 6, 7, 8, 9], [1, 4, 5]])
    lens = glt.LogitLens.from_model(tiny_model)
    with torch.no_grad():
        logits = tiny_model(stack.tokens, attention_mask=stack.mask.long())
        mine = lens(stack.resid[-1], stack.n_layers)
    assert mine.shape == logits.shape
    torch.testing.assert_close(mine[stack.mask], logits[stack.mask], atol=1e-5, rtol=1e-5)


def test_norm_is_recomputed_per_layer(tiny_model):
    """Each layer gets its own final-norm scale: decoding a scaled residual is scale-invariant."""
    stack = glt.capture_residuals(tiny_model, [[1, 5, 6, 7]])
    lens = glt.LogitLens.from_model(tiny_model)
    h = stack.resid[1]
    with torch.no_grad():
        a, b = lens(h, 1), lens(7.0 * h, 1)
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_logit_lens_contract(tiny_llama):
    lens = glt.LogitLens.from_model(tiny_llama)
    h = torch.randn(2, 3, lens.d_model)
    assert torch.equal(lens.transform_hidden(h, 2), h)
    stack = torch.randn(lens.n_layers + 1, 2, 3, lens.d_model)
    assert torch.equal(lens.transform_stack(stack), stack)
    with pytest.raises(glt.GltError, match="idx"):
        lens(h, lens.n_layers + 1)


def test_unembed_fingerprint_is_stable_and_distinguishes(tiny_root):
    from tests.helpers import load_tiny

    a = glt.LogitLens.from_model(load_tiny("llama", tiny_root))
    b = glt.LogitLens.from_model(load_tiny("llama", tiny_root))
    c = glt.LogitLens.from_model(load_tiny("gpt2", tiny_root))
    assert a.unembed.fingerprint() == b.unembed.fingerprint()
    assert a.unembed.fingerprint() != c.unembed.fingerprint()


def test_softcap_is_applied(tiny_root):
    from tests.helpers import load_tiny

    model = load_tiny("gemma3", tiny_root)
    lens = glt.LogitLens.from_model(model)
    assert lens.unembed.softcap == 30.0
    x = torch.randn(4, lens.d_model, generator=torch.Generator().manual_seed(0)) * 50
    z = lens.unembed.logits_of_normed(x)
    raw = x @ lens.unembed.W.T + (0 if lens.unembed.b is None else lens.unembed.b)
    assert float(raw.abs().max()) > 60  # the cap matters here
    torch.testing.assert_close(z, 30.0 * torch.tanh(raw / 30.0))
    assert float(z.abs().max()) <= 30.0  # tanh saturates to exactly 30 in float32 for large logits
