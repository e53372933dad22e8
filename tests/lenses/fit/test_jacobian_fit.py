"""fit_jacobian_lens: both estimators against autograd and finite-difference Jacobians on tiny models.

The definition checked (`glt.lenses.fit._jacobian`): ``J_i = mean over texts of 1/|V| sum_{t in V}
sum_{t' in V} d h_final[t'] / d h_i[t]``, V = positions ``skip .. seq_len - 2``. The references
below compute it two independent ways: the full ``[seq, d, seq, d]`` Jacobian from
``torch.autograd.functional.jacobian``, and central differences of the final residual summed over
V when residual ``i`` moves by ``eps`` along one coordinate at every source position of V. The
file also runs under TransformerLens 2.x (HookedTransformer; ``tests/core/test_tl2_compat.py``),
where the TransformerLens estimator does not exist and glt's is the one used.
"""

import pytest
import torch

import glt
from glt.core._models import tl_major_version
from glt.lenses.fit._jacobian import fit_jacobian_lens, merge_jacobian_lenses, prompt_jacobian
from tests.helpers import load_tiny, make_tiny_folder

TEXTS = [
    "the capital of france is paris and the river is in the city of paris",
    "she was in the city and he was not , but they had a river that was not in france",
]
SKIP = 2
TL4 = tl_major_version() >= 4
needs_tl4 = pytest.mark.skipif(not TL4, reason="TransformerLens's JacobianLens needs TransformerLens >= 4.3")


@pytest.fixture(scope="module", params=["gpt2", "llama", "gemma3"])
def model64(request, tiny_root):
    """A tiny model of each norm family in float64 (float32 HookedTransformer on TransformerLens 2.x)."""
    if not TL4:
        return load_tiny(request.param, tiny_root)
    return glt.load_model(str(make_tiny_folder(request.param, tiny_root)), dtype=torch.float64)


def _names(n):
    return [f"blocks.{i}.hook_resid_pre" for i in range(n)] + [f"blocks.{n - 1}.hook_resid_post"]


def _final_given(model, tokens, i, h):
    """The final residual ``[seq, d_model]`` when residual ``i`` is replaced by ``h``."""
    n, out = model.cfg.n_layers, {}

    def put(act, hook):
        return h.unsqueeze(0).to(act.dtype)

    def grab(act, hook):
        out["final"] = act
        return act

    model.run_with_hooks(tokens, return_type=None, fwd_hooks=[(_names(n)[i], put), (_names(n)[n], grab)])
    return out["final"][0]


def _residual(model, tokens, i):
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens)
    return cache[_names(model.cfg.n_layers)[i]][0].detach().clone()


def autograd_reference(model, ids, i, skip=SKIP):
    tokens = torch.tensor([ids])
    full = torch.autograd.functional.jacobian(lambda h: _final_given(model, tokens, i, h),
                                              _residual(model, tokens, i), vectorize=True)  # [t', out, t, in]
    valid = list(range(skip, len(ids) - 1))
    return full[valid][:, :, valid].sum(0).mean(1)  # sum over targets t', mean over sources t


def finite_difference_reference(model, ids, i, columns, skip=SKIP, eps=1e-3):
    """Columns ``columns`` of the per-text Jacobian by central differences: ``[d_model, len(columns)]``.

    eps 1e-3: Hugging Face's RMSNorm computes in float32 even in a float64 model, so a smaller step
    drowns in rounding (1e-4 gives 1e-3 relative error on llama, 1e-3 gives 1e-4).
    """
    tokens = torch.tensor([ids])
    base = _residual(model, tokens, i)
    valid = list(range(skip, len(ids) - 1))
    cols = []
    with torch.no_grad():
        for j in columns:
            sums = []
            for e in (eps, -eps):
                h = base.clone()
                h[valid, j] += e
                sums.append(_final_given(model, tokens, i, h)[valid].sum(0))
            cols.append((sums[0] - sums[1]) / (2 * eps * len(valid)))
    return torch.stack(cols, 1)


def test_glt_estimator_equals_autograd_jacobian_at_every_residual(model64):
    ids = glt.tokenize(model64, TEXTS[:1])[0]
    n = model64.cfg.n_layers
    got = prompt_jacobian(model64, ids, list(range(n)), dim_batch=8, skip_first_positions=SKIP)
    for i in range(n):
        ref = autograd_reference(model64, ids, i).float()
        torch.testing.assert_close(got[i], ref, rtol=1e-4, atol=1e-5)
        assert not torch.allclose(got[i], torch.eye(got.shape[-1]), atol=1e-2)  # not trivially the identity


def test_glt_estimator_equals_finite_differences(model64):
    if model64.W_U.dtype != torch.float64:
        pytest.skip("central differences need a float64 model")
    lens = fit_jacobian_lens(model64, TEXTS[:1], estimator="glt", skip_first_positions=SKIP, progress=False)
    ids = glt.tokenize(model64, TEXTS[:1])[0]
    columns = [0, 5, 13, 27]  # every column costs two forward passes
    for i in (0, model64.cfg.n_layers - 1):
        ref = finite_difference_reference(model64, ids, i, columns)
        err = (lens.jacobian[i][:, columns].double() - ref).abs().max()
        assert err <= 3e-4 * ref.abs().max(), (i, float(err), float(ref.abs().max()))


@needs_tl4
def test_transformer_lens_estimator_equals_autograd_jacobian(model64):
    lens = fit_jacobian_lens(model64, TEXTS, estimator="transformer_lens", residual_0="identity",
                             skip_first_positions=SKIP, progress=False)
    assert lens.config["fit"]["estimator"] == "transformer_lens" and lens.residual_0 == "identity"
    assert torch.equal(lens.jacobian[0], torch.eye(lens.d_model))
    seqs = [model64.to_tokens(t)[0].tolist() for t in TEXTS]  # TransformerLens tokenises itself
    for i in range(1, model64.cfg.n_layers):
        ref = sum(autograd_reference(model64, ids, i) for ids in seqs) / len(seqs)
        torch.testing.assert_close(lens.jacobian[i], ref.float(), rtol=1e-4, atol=1e-5)


@needs_tl4
def test_auto_takes_transformer_lens_for_identity_and_glt_for_fit_and_they_agree(tiny_llama):
    tl = fit_jacobian_lens(tiny_llama, TEXTS, residual_0="identity", skip_first_positions=SKIP, progress=False)
    ours = fit_jacobian_lens(tiny_llama, TEXTS, skip_first_positions=SKIP, progress=False)
    assert tl.config["fit"]["estimator"] == "transformer_lens" and ours.config["fit"]["estimator"] == "glt"
    assert ours.residual_0 == "fitted" and not torch.allclose(ours.jacobian[0], torch.eye(28), atol=1e-2)
    torch.testing.assert_close(ours.jacobian[1:], tl.jacobian[1:], rtol=1e-5, atol=1e-6)


@needs_tl4
def test_auto_takes_glt_where_transformer_lens_refuses(tiny_root):
    """A bridge in compatibility mode (processed weights): TransformerLens refuses, glt's fits."""
    model = glt.load_model(str(make_tiny_folder("gpt2", tiny_root)))
    model.enable_compatibility_mode(disable_warnings=True)
    with pytest.raises(glt.GltError, match="raw Hugging Face weights.*estimator='glt'"):
        fit_jacobian_lens(model, TEXTS, estimator="transformer_lens", residual_0="identity", progress=False)
    lens = fit_jacobian_lens(model, TEXTS, residual_0="identity", skip_first_positions=SKIP, progress=False)
    assert lens.config["fit"]["estimator"] == "glt"
    ids = glt.tokenize(model, TEXTS)
    ref = sum(autograd_reference(model, s, 1) for s in ids) / len(ids)
    torch.testing.assert_close(lens.jacobian[1], ref, rtol=1e-4, atol=2e-5)


@pytest.mark.parametrize("dim_batch", [1, 5, 64])
def test_dim_batch_does_not_change_the_lens(tiny_llama, dim_batch):
    a = fit_jacobian_lens(tiny_llama, TEXTS, dim_batch=8, skip_first_positions=SKIP, progress=False)
    b = fit_jacobian_lens(tiny_llama, TEXTS, dim_batch=dim_batch, skip_first_positions=SKIP, progress=False)
    torch.testing.assert_close(a.jacobian, b.jacobian, rtol=1e-5, atol=1e-6)


def test_fit_records_provenance_skips_short_texts_and_restores_parameters(tiny_llama):
    flags = [p.requires_grad for p in tiny_llama.parameters()]
    lens = fit_jacobian_lens(tiny_llama, TEXTS + ["the city"], max_seq_len=12, skip_first_positions=SKIP,
                             progress=False)
    assert [p.requires_grad for p in tiny_llama.parameters()] == flags
    fit = lens.config["fit"]
    assert lens.config["n_prompts"] == 2 and fit["texts"] == 3 and fit["texts_too_short"] == 1
    assert fit["tokens"] == 24 and fit["max_seq_len"] == 12 and fit["skip_first_positions"] == SKIP
    assert fit["seconds"] > 0 and lens.name == "jacobian"


def test_merging_shards_equals_one_fit(tiny_llama):
    whole = fit_jacobian_lens(tiny_llama, TEXTS + TEXTS[:1], skip_first_positions=SKIP, progress=False)
    a = fit_jacobian_lens(tiny_llama, TEXTS, skip_first_positions=SKIP, progress=False)
    b = fit_jacobian_lens(tiny_llama, TEXTS[:1], skip_first_positions=SKIP, progress=False)
    a.config["shard"], b.config["shard"] = {"texts": [0, 2]}, {"texts": [2, 3]}
    merged = merge_jacobian_lenses([a, b])
    assert merged.config["n_prompts"] == 3 and merged.config["fit"]["merged_shards"] == 2
    assert "shard" not in merged.config and merged.config["shards"] == [{"texts": [0, 2]}, {"texts": [2, 3]}]
    torch.testing.assert_close(merged.jacobian, whole.jacobian, rtol=1e-5, atol=1e-6)


def test_merge_refuses_mismatched_shards(tiny_llama):
    a = fit_jacobian_lens(tiny_llama, TEXTS[:1], skip_first_positions=SKIP, progress=False)
    b = glt.JacobianLens.from_model(tiny_llama, {"n_prompts": 1})
    with pytest.raises(glt.GltError, match="does not match"):
        merge_jacobian_lenses([a, b])
    with pytest.raises(glt.GltError, match="n_prompts=0"):
        merge_jacobian_lenses([a, glt.JacobianLens.from_model(tiny_llama)])
    with pytest.raises(glt.GltError, match="empty"):
        merge_jacobian_lenses([])


@pytest.mark.parametrize("kwargs,match", [
    ({"dim_batch": 0}, "dim_batch must be an int >= 1"),
    ({"skip_first_positions": -1}, "skip_first_positions must be an int >= 0"),
    ({"max_seq_len": 3}, "max_seq_len must be an int >= 4"),
    ({"max_seq_len": 68}, "n_ctx=67"),
    ({"estimator": "sgd"}, "estimator"),
    ({"residual_0": "zero"}, "residual_0"),
    ({"texts": ["the city", "a river"]}, "more than skip_first_positions \\+ 1 = 3 tokens"),
    ({"texts": []}, "non-empty"),
    ({"texts": [3]}, "texts"),
])
def test_bad_arguments_raise(tiny_llama, kwargs, match):
    kw = {"texts": TEXTS, "skip_first_positions": SKIP, "progress": False, **kwargs}
    with pytest.raises(glt.GltError, match=match):
        fit_jacobian_lens(tiny_llama, kw.pop("texts"), **kw)


def test_transformer_lens_estimator_cannot_fit_the_embeddings(tiny_llama):
    with pytest.raises(glt.GltError, match="residual 0.*residual_0='identity'|TransformerLens"):
        fit_jacobian_lens(tiny_llama, TEXTS, estimator="transformer_lens", progress=False)


def test_model_in_training_mode_raises(tiny_root):
    model = load_tiny("llama", tiny_root)
    model.train()
    try:
        with pytest.raises(glt.GltError, match="training mode.*model.eval"):
            fit_jacobian_lens(model, TEXTS, progress=False)
    finally:
        model.eval()


def test_rows_computes_those_rows_only(tiny_llama):
    ids = glt.tokenize(tiny_llama, TEXTS[:1])[0]
    full = prompt_jacobian(tiny_llama, ids, [0, 2], dim_batch=2, skip_first_positions=SKIP)
    some = prompt_jacobian(tiny_llama, ids, [0, 2], dim_batch=2, skip_first_positions=SKIP, rows=[17, 3, 5])
    torch.testing.assert_close(some[:, [17, 3, 5]], full[:, [17, 3, 5]], rtol=1e-5, atol=1e-6)
    rest = [r for r in range(28) if r not in (17, 3, 5)]
    assert torch.equal(some[:, rest], torch.zeros_like(some[:, rest]))
