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


# ----------------------------------------------------------------------------- resid_mid
MID_LABELS_3 = ("embed", "resid_mid 0", "resid_pre 1", "resid_mid 1", "resid_pre 2", "resid_mid 2", "final")
#: the Hugging Face module whose input is a block's mid residual (the pre-MLP norm)
PRE_MLP_NORM = {"GPT2LMHeadModel": "transformer.h.{i}.ln_2",
                "LlamaForCausalLM": "model.layers.{i}.post_attention_layernorm",
                "Gemma3ForCausalLM": "model.layers.{i}.pre_feedforward_layernorm"}


def test_resid_mid_labels_and_hooks(tiny_model):
    tokens = torch.tensor([[1, 5, 6, 7, 8], [1, 9, 10, 0, 0]])
    mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])
    seqs = [t[m].tolist() for t, m in zip(tokens, mask, strict=True)]
    stack = glt.capture_residuals(tiny_model, seqs, resid_mid=True)
    n = tiny_model.cfg.n_layers
    assert n == 3 and stack.labels == MID_LABELS_3
    assert glt.core._capture.layer_labels(n, resid_mid=True) == MID_LABELS_3
    assert stack.resid.shape == (2 * n + 1, 2, 5, tiny_model.cfg.d_model)
    assert stack.n_layers == n and stack.has_resid_mid
    assert [tuple(s) for s in stack.sites] == [(0, False), (0, True), (1, False), (1, True), (2, False), (2, True),
                                               (3, False)]
    hooks = [f"blocks.{i}.hook_resid_{k}" for i in range(n) for k in ("pre", "mid")]
    hooks.append(f"blocks.{n - 1}.hook_resid_post")
    for b, seq in enumerate(seqs):
        _, cache = tiny_model.run_with_cache(torch.tensor([seq]))
        for layer, hook in enumerate(hooks):
            torch.testing.assert_close(stack.resid[layer, b, : len(seq)], cache[hook][0], atol=1e-5, rtol=1e-5)
    plain = glt.capture_residuals(tiny_model, seqs)
    assert not plain.has_resid_mid
    assert torch.equal(stack.resid[[0, 2, 4, 6]], plain.resid)  # the block boundaries are unchanged


def test_resid_mid_is_the_input_of_the_models_pre_mlp_norm(tiny_model):
    """Independent of TransformerLens's hook aliases: the Hugging Face model's own tensors."""
    hf = getattr(tiny_model, "original_model", None)
    if hf is None:
        pytest.skip("a HookedTransformer built from a config has no Hugging Face model")
    seen = {}
    handles = [hf.get_submodule(PRE_MLP_NORM[type(hf).__name__].format(i=i)).register_forward_pre_hook(
        lambda _m, args, i=i: seen.__setitem__(i, args[0].detach())) for i in range(tiny_model.cfg.n_layers)]
    try:
        with torch.no_grad():
            hf(torch.tensor([[1, 5, 6, 7, 8]]))
    finally:
        for h in handles:
            h.remove()
    stack = glt.capture_residuals(tiny_model, [[1, 5, 6, 7, 8]], resid_mid=True)
    for i in range(tiny_model.cfg.n_layers):
        torch.testing.assert_close(stack.resid[2 * i + 1, 0], seen[i][0], atol=1e-5, rtol=1e-5)


def test_resid_mid_from_cache_equals_capture(tiny_llama):
    tokens = torch.tensor([[1, 5, 6, 7, 8], [1, 9, 10, 11, 12]])
    _, cache = tiny_llama.run_with_cache(tokens)
    a = glt.ResidualStack.from_cache(tiny_llama, cache, tokens=tokens, resid_mid=True)
    b = glt.capture_residuals(tiny_llama, tokens, resid_mid=True)
    assert a.labels == b.labels == MID_LABELS_3
    torch.testing.assert_close(a.resid, b.resid, atol=1e-5, rtol=1e-5)
    _, partial = tiny_llama.run_with_cache(tokens, names_filter=lambda n: "resid_pre" in n or "resid_post" in n)
    with pytest.raises(glt.GltError, match="hook_resid_mid"):
        glt.ResidualStack.from_cache(tiny_llama, partial, resid_mid=True)


@pytest.mark.parametrize("flag", ["parallel_attn_mlp", "attn_only"])
def test_resid_mid_on_a_model_without_one_raises(tiny_llama, monkeypatch, flag):
    monkeypatch.setattr(tiny_llama.cfg, flag, True)
    with pytest.raises(glt.GltError, match=r"resid_mid=True: .*no residual sits between .*resid_mid=False"):
        glt.capture_residuals(tiny_llama, [[1, 5, 6]], resid_mid=True)


@pytest.mark.parametrize("labels", [
    ("embed", "resid_mid 1", "resid_pre 1", "final"),  # mid of block 1 before block 1's input
    ("embed", "resid_mid 0", "resid_mid 0", "final"),  # twice
    ("embed", "resid_pre 1", "resid_mid 1"),  # no residual after it
])
def test_misplaced_resid_mid_labels_raise(labels):
    with pytest.raises(glt.GltError, match="labels: 'resid_mid"):
        glt.core._capture.label_sites(labels)
    with pytest.raises(glt.GltError, match="labels: 'resid_mid"):
        glt.ResidualStack(torch.zeros(len(labels), 1, 1, 2), torch.zeros(1, 1, dtype=torch.long),
                          torch.ones(1, 1, dtype=torch.bool), labels)
