"""Residual capture: layer convention, padding, batch invariance, caches, BOS policy."""

import pytest
import torch

import glt


def test_layer_convention_matches_hooks(tiny_model):
    tokens = torch.tensor([[1, 5, 6, 7, 8]])
    stack = glt.capture_residuals(tiny_model, tokens)
    n = tiny_model.cfg.n_layers
    assert stack.resid.shape == (n + 1, 1, 5, tiny_model.cfg.d_model)
    assert stack.labels[0] == "embed" and stack.labels[-1] == "final"
    _, cache = tiny_model.run_with_cache(tokens)
    for i in range(n):
        torch.testing.assert_close(stack.resid[i], cache[f"blocks.{i}.hook_resid_pre"])
    torch.testing.assert_close(stack.resid[n], cache[f"blocks.{n - 1}.hook_resid_post"])


def test_from_cache_equals_capture(tiny_model):
    tokens = torch.tensor([[1, 5, 6, 7, 8], [1, 9, 10, 11, 12]])
    _, cache = tiny_model.run_with_cache(tokens)
    a = glt.ResidualStack.from_cache(tiny_model, cache, tokens=tokens)
    b = glt.capture_residuals(tiny_model, tokens)
    torch.testing.assert_close(a.resid, b.resid, atol=1e-5, rtol=1e-5)


def test_from_cache_without_residual_hooks_raises(tiny_llama):
    _, cache = tiny_llama.run_with_cache(torch.tensor([[1, 5, 6]]), names_filter=lambda n: n.endswith("hook_resid_mid"))
    with pytest.raises(glt.GltError, match="residual hooks"):
        glt.ResidualStack.from_cache(tiny_llama, cache)


@pytest.mark.parametrize("batch_size", [1, 2, 3])
def test_batch_invariance(tiny_model, batch_size):
    seqs = [[1, 5, 6, 7, 8, 9, 10], [1, 4], [1, 11, 12, 13]]
    alone = [glt.capture_residuals(tiny_model, [s]) for s in seqs]
    together = glt.capture_residuals(tiny_model, seqs, batch_size=batch_size)
    lens = glt.LogitLens.from_model(tiny_model)
    joint = glt.readout(together, lens)
    for i, s in enumerate(seqs):
        n = len(s)
        torch.testing.assert_close(together.resid[:, i, :n], alone[i].resid[:, 0], atol=1e-5, rtol=1e-5)
        assert not together.mask[i, n:].any()
        single = glt.readout(alone[i], lens)
        rows = joint.batch_index == i
        assert torch.equal(joint.ranks[:, rows], single.ranks)
        torch.testing.assert_close(joint.entropy[:, rows], single.entropy, atol=1e-5, rtol=1e-5)


def test_text_uses_models_own_tokenizer(tiny_llama):
    stack = glt.capture_residuals(tiny_llama, "the capital of france is paris")
    expected = tiny_llama.tokenizer("the capital of france is paris")["input_ids"]
    assert stack.tokens[0].tolist() == expected
    assert expected[0] == tiny_llama.tokenizer.bos_token_id


def test_bos_policy_override(tiny_llama):
    with_bos = glt.tokenize(tiny_llama, "the city", prepend_bos=True)[0]
    without = glt.tokenize(tiny_llama, "the city", prepend_bos=False)[0]
    assert with_bos[0] == tiny_llama.tokenizer.bos_token_id
    assert with_bos[1:] == without


def test_truncate_warns_and_keeps_context(tiny_llama):
    n_ctx = tiny_llama.cfg.n_ctx
    ids = [[1] + [5] * (n_ctx + 5)]
    with pytest.raises(glt.GltError, match="context"):
        glt.capture_residuals(tiny_llama, ids)
    with pytest.warns(UserWarning, match="truncated"):
        stack = glt.capture_residuals(tiny_llama, ids, truncate=True)
    assert stack.tokens.shape[1] == n_ctx


def test_iter_residuals_streams_batches(tiny_llama):
    parts = list(glt.iter_residuals(tiny_llama, [[1, 5]] * 5, batch_size=2))
    assert [p.resid.shape[1] for p in parts] == [2, 2, 1]
