"""The streamed read-out equals a naive float64 materialise-everything reference, exactly.

Ranks, top-k ids and default targets must equal the reference bit for bit (including deliberate
ties from duplicated unembedding rows and near-ties below float32 resolution); floats agree to
1e-5. Results do not depend on row chunks, vocabulary tiles, worker threads or padding. No test
here measures time (speed lives in benchmarks/bench_readout.py).
"""

import json
import math
from dataclasses import fields

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from jaxtyping import TypeCheckError

import glt
from glt.core._capture import ResidualStack, layer_labels
from glt.decoding._tiled import BAND_MEMBERS
from glt.lenses._logit import LogitLens, Unembed

FLOATS = ("target_logprobs", "topk_logprobs", "entropy", "kl_to_final")
EXACT = ("targets", "ranks", "topk_ids", "batch_index", "pos_index", "input_ids")


# ----------------------------------------------------------------------------- helpers
def synthetic(n_layers=3, d_model=29, d_vocab=211, *, batch=3, pos=7, bias=False, softcap=None,
              norm="ln", seed=0, scale=2.0, W=None):
    """A lens over a hand-made unembedding and a right-padded random residual stack."""
    g = torch.Generator().manual_seed(seed)
    if W is None:
        W = torch.randn(d_vocab, d_model, generator=g) * 0.3
    b = torch.randn(W.shape[0], generator=g) * 0.5 if bias else None
    layer = torch.nn.LayerNorm(d_model) if norm == "ln" else torch.nn.RMSNorm(d_model, eps=1e-6)
    with torch.no_grad():
        layer.weight.copy_(1 + 0.2 * torch.randn(d_model, generator=g))
    lens = LogitLens(Unembed(layer, W.T, b, softcap), n_layers)
    resid = torch.randn(n_layers + 1, batch, pos, d_model, generator=g) * scale
    lengths = torch.randint(1, pos + 1, (batch,), generator=g)
    lengths[0] = pos
    mask = torch.arange(pos)[None] < lengths[:, None]
    tokens = torch.randint(0, W.shape[0], (batch, pos), generator=g)
    return ResidualStack(resid, tokens, mask, layer_labels(n_layers)), lens


def naive_rows(stack, positions=None):
    """The rows ``positions`` selects, resolved by hand (one Python loop, not `select_rows`)."""
    lengths = [int(n) for n in stack.mask.sum(-1)]
    if positions is None:
        rows = [(b, p) for b, n in enumerate(lengths) for p in range(n)]
    elif isinstance(positions, str):  # "last"
        rows = [(b, n - 1) for b, n in enumerate(lengths)]
    elif positions.dtype == torch.bool:
        rows = [(b, p) for b in range(positions.shape[0]) for p in range(positions.shape[1]) if positions[b, p]]
    else:  # one position per sequence, negative from the sequence's end
        rows = [(b, int(q) if int(q) >= 0 else lengths[b] + int(q)) for b, q in enumerate(positions)]
    b_idx, p_idx = zip(*rows, strict=True)
    return torch.tensor(b_idx), torch.tensor(p_idx)


def naive(stack, lens, *, targets=None, top_k=5, positions=None, operand=None, gemm=False):
    """Materialise every logit in float64: the reference the streamed read-out must equal.

    Logits are elementwise products summed along d_model, so identical unembedding rows give
    identical logits (a float64 GEMM does not promise that: its blocking depends on the column);
    ``gemm=True`` uses a matmul instead, for real-model sizes.
    """
    u = lens.unembed
    b_idx, p_idx = naive_rows(stack, positions)
    with torch.no_grad():
        x = u.normalize(lens.transform_stack(stack.resid[:, b_idx, p_idx].float()))
    W = u.W
    if operand is not None:
        x, W = x.to(operand), W.to(operand)
    x, W = x.double(), W.double()
    y = x @ W.T if gemm else (x[..., None, :] * W).sum(-1)  # pre-cap logits [layer, row, vocab]
    if u.b is not None:
        y = y + u.b.double()
    z = y if u.softcap is None else torch.tanh(y / u.softcap) * u.softcap
    if targets is None:
        targets = torch.sort(-y[-1], stable=True).indices[:, :1]
    targets = torch.as_tensor(targets)
    targets = targets[:, None] if targets.ndim == 1 else targets
    tg = targets[None].expand(y.shape[0], -1, -1)
    ranks = (y[:, :, None, :] > y.gather(-1, tg)[..., None]).sum(-1)
    logp = torch.log_softmax(z, -1)
    k = min(top_k, y.shape[-1])
    order = torch.sort(-y, stable=True).indices[..., :k]
    p = logp.exp()
    return {
        "targets": targets, "ranks": ranks, "target_logprobs": logp.gather(-1, tg),
        "topk_ids": order, "topk_logprobs": logp.gather(-1, order),
        "entropy": -(p * logp).sum(-1), "kl_to_final": (p[-1:] * (logp[-1:] - logp)).sum(-1),
        "batch_index": b_idx, "pos_index": p_idx, "input_ids": stack.tokens[b_idx, p_idx],
    }


def assert_matches(r, ref, atol=1e-5):
    for name in EXACT:
        got, want = getattr(r, name), ref[name]
        assert torch.equal(got.cpu(), want.cpu()), (name, got, want)
    for name in FLOATS:
        got, want = getattr(r, name).double(), ref[name]
        assert not torch.isnan(got).any(), name
        torch.testing.assert_close(got, want, atol=atol, rtol=1e-5, msg=name)


def assert_same(a, b, atol=1e-6):
    for name in EXACT:
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    for name in FLOATS:
        torch.testing.assert_close(getattr(a, name), getattr(b, name), atol=atol, rtol=1e-6)


# ----------------------------------------------------------------------------- equivalence
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("softcap", [None, 7.0])
@pytest.mark.parametrize("norm", ["ln", "rms"])
@pytest.mark.parametrize("n_targets", [None, 1, 3])
def test_matches_naive_reference(bias, softcap, norm, n_targets):
    stack, lens = synthetic(bias=bias, softcap=softcap, norm=norm)
    n = int(stack.mask.sum())
    targets = None if n_targets is None else torch.randint(0, 211, (n, n_targets))
    r = glt.readout(stack, lens, targets=targets, top_k=6, vocab_tile=37, threads=2)
    assert_matches(r, naive(stack, lens, targets=targets, top_k=6))


@pytest.mark.parametrize("positions", ["last", "int", "bool"])
def test_positions_match_naive_reference(positions):
    stack, lens = synthetic()
    if positions == "int":
        positions = torch.tensor([-1, 0, -2])
    elif positions == "bool":
        positions = stack.mask & (torch.arange(7)[None] % 2 == 0)
    r = glt.readout(stack, lens, positions=positions, vocab_tile=50)
    assert_matches(r, naive(stack, lens, positions=positions))


def test_matches_reference_on_every_tiny_model_family(tiny_model):
    stack = glt.capture_residuals(tiny_model, ["the capital of france is paris", "a river"])
    lens = glt.LogitLens.from_model(tiny_model)
    assert_matches(glt.readout(stack, lens, vocab_tile=16, row_chunk=3), naive(stack, lens))


def test_final_layer_reproduces_the_models_own_top1(tiny_model):
    tokens = torch.tensor([[1, 5, 6, 7, 8, 9]])
    stack = glt.capture_residuals(tiny_model, tokens)
    r = glt.readout(stack, glt.LogitLens.from_model(tiny_model))
    with torch.no_grad():
        logits = tiny_model(tokens).float()[0]
    assert torch.equal(r.targets[:, 0], logits.argmax(-1))
    assert (r.ranks[-1] == 0).all() and (r.kl_to_final[-1] == 0).all()


# ----------------------------------------------------------------------------- ties
def test_duplicated_unembedding_rows_tie_and_break_by_lowest_id():
    g = torch.Generator().manual_seed(3)
    W = torch.randn(97, 23, generator=g) * 0.3
    for dup in (5, 40, 96):  # copies of row 11, across vocabulary tiles
        W[dup] = W[11]
    for dup in (60, 61):
        W[dup] = W[2]
    stack, lens = synthetic(d_model=23, W=W, n_layers=2)
    n = int(stack.mask.sum())
    targets = torch.tensor([[11, 96, 2]]).expand(n, 3)
    for tile in (7, 32, 97):
        r = glt.readout(stack, lens, targets=targets, top_k=8, vocab_tile=tile)
        ref = naive(stack, lens, targets=targets, top_k=8)
        assert_matches(r, ref)
        assert torch.equal(r.ranks[..., 0], r.ranks[..., 1])  # 11 and its copy 96 share a rank


def test_many_tied_maxima_force_the_exact_fallback():
    """More tied best tokens than float32 candidates: the exact fallback must pick lowest ids."""
    g = torch.Generator().manual_seed(4)
    W = torch.randn(61, 13, generator=g) * 0.3
    stack, lens = synthetic(d_model=13, W=W, n_layers=1, batch=1, pos=3)
    with torch.no_grad():
        x = lens.unembed.normalize(stack.resid[-1, 0, 0])
    best = int((W @ x).argmax())
    copies = [3, 9, 17, 29, 33, 41, 50, 58]
    W[copies] = W[best].clone()
    r = glt.readout(stack, lens, top_k=5, vocab_tile=8)
    ref = naive(stack, lens, top_k=5)
    assert_matches(r, ref)
    ids = sorted([best] + copies)
    assert r.topk_ids[-1, 0].tolist() == ids[:5]
    assert r.targets[0, 0] == ids[0]


def test_near_ties_below_float32_resolution_are_ranked_exactly():
    """Rows differing by ~1e-8 relative: float32 logits cannot order them, float64 can."""
    g = torch.Generator().manual_seed(5)
    base = torch.randn(40, 31, generator=g) * 0.3
    eps = torch.randn(40, 31, generator=g) * 1e-7
    W = torch.cat([base, base + eps * base.abs(), base - eps * base.abs()])
    stack, lens = synthetic(d_model=31, W=W, n_layers=2)
    n = int(stack.mask.sum())
    targets = torch.randint(0, 40, (n, 2), generator=g)
    before = BAND_MEMBERS[0]
    r = glt.readout(stack, lens, targets=targets, vocab_tile=19)
    assert BAND_MEMBERS[0] > before  # the exact re-check really ran
    assert_matches(r, naive(stack, lens, targets=targets))


def test_softcap_ranks_use_precap_order_where_float32_saturates():
    """Logits ~100 under a cap of 3: float32 tanh gives equal capped values, ranks stay distinct."""
    g = torch.Generator().manual_seed(6)
    W = torch.randn(50, 16, generator=g)
    stack, lens = synthetic(d_model=16, W=W, n_layers=1, softcap=3.0, scale=5.0)
    lens.unembed.norm.weight.data.mul_(30)
    r = glt.readout(stack, lens, top_k=4)
    assert_matches(r, naive(stack, lens, top_k=4), atol=1e-4)


@pytest.mark.parametrize("operand", [None, torch.bfloat16])
def test_wide_d_model_uses_sliced_accumulation_and_stays_exact(operand):
    """d_model > 512 is accumulated in slices on CPU (tighter band): still the exact reference."""
    stack, lens = synthetic(d_model=1031, d_vocab=97, n_layers=2, batch=2, pos=3, bias=True)
    n = int(stack.mask.sum())
    targets = torch.randint(0, 97, (n, 2), generator=torch.Generator().manual_seed(7))
    r = glt.readout(stack, lens, targets=targets, vocab_tile=40, matmul_dtype=operand)
    assert_matches(r, naive(stack, lens, targets=targets, operand=operand), atol=1e-4)


# ----------------------------------------------------------------------------- invariance
@pytest.mark.parametrize("kw", [
    dict(row_chunk=1, vocab_tile=1, threads=1),
    dict(row_chunk=2, vocab_tile=13, threads=3),
    dict(row_chunk=5, vocab_tile=64, threads=2),
    dict(row_chunk=1000, vocab_tile=10_000, threads=1),
])
def test_results_do_not_depend_on_tiles_chunks_or_threads(kw):
    stack, lens = synthetic(bias=True)
    n = int(stack.mask.sum())
    targets = torch.randint(0, 211, (n, 2), generator=torch.Generator().manual_seed(1))
    assert_same(glt.readout(stack, lens, targets=targets, **kw), glt.readout(stack, lens, targets=targets))


def test_padding_does_not_change_a_sequences_rows():
    stack, lens = synthetic(batch=3, pos=7)
    wide = ResidualStack(torch.cat([stack.resid, torch.randn(4, 3, 5, 29)], 2),
                         torch.cat([stack.tokens, torch.zeros(3, 5, dtype=torch.long)], 1),
                         torch.cat([stack.mask, torch.zeros(3, 5, dtype=torch.bool)], 1), stack.labels)
    assert_same(glt.readout(stack, lens), glt.readout(wide, lens))


def test_readout_restores_thread_and_matmul_settings():
    stack, lens = synthetic()
    n, prec = torch.get_num_threads(), torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("medium")
    try:
        glt.readout(stack, lens, threads=3)
        assert torch.get_num_threads() == n
        assert torch.get_float32_matmul_precision() == "medium"
    finally:
        torch.set_float32_matmul_precision(prec)


# ----------------------------------------------------------------------------- precision
@pytest.mark.parametrize("operand", [torch.bfloat16, torch.float16])
def test_half_precision_operands_rank_exactly_against_float64(operand):
    """bf16/fp16 operands, float32 accumulation: exact for the rounded operands (fp64 reference)."""
    stack, lens = synthetic(d_vocab=307, bias=True)
    n = int(stack.mask.sum())
    targets = torch.randint(0, 307, (n, 2), generator=torch.Generator().manual_seed(2))
    r = glt.readout(stack, lens, targets=targets, matmul_dtype=operand, vocab_tile=64)
    assert_matches(r, naive(stack, lens, targets=targets, operand=operand), atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_half_precision_residual_stacks(dtype):
    stack, lens = synthetic()
    half = ResidualStack(stack.resid.to(dtype), stack.tokens, stack.mask, stack.labels)
    assert_matches(glt.readout(half, lens), naive(half, lens))


# ----------------------------------------------------------------------------- properties
@settings(max_examples=25, deadline=None)
@given(
    n_layers=st.integers(1, 4), d_model=st.sampled_from([2, 5, 17, 32]),
    d_vocab=st.sampled_from([1, 2, 7, 53, 130]), batch=st.integers(1, 3), pos=st.integers(1, 6),
    top_k=st.integers(1, 9), tile=st.integers(1, 70), chunk=st.integers(1, 9),
    n_targets=st.sampled_from([None, 1, 2]), bias=st.booleans(),
    softcap=st.sampled_from([None, 2.0]), scale=st.sampled_from([1e-3, 1.0, 50.0]),
    dup=st.booleans(), seed=st.integers(0, 2**16),
)
# edge cases kept whatever the profile draws: a one-token vocabulary; tied rows (the tie rule) with
# top_k above d_vocab, one-column tiles and a soft-cap
@example(n_layers=1, d_model=2, d_vocab=1, batch=1, pos=1, top_k=1, tile=1, chunk=1, n_targets=None,
         bias=False, softcap=None, scale=1.0, dup=False, seed=0)
@example(n_layers=2, d_model=5, d_vocab=7, batch=2, pos=3, top_k=9, tile=1, chunk=1, n_targets=2,
         bias=True, softcap=2.0, scale=50.0, dup=True, seed=1)
def test_property_synthetic_shapes(n_layers, d_model, d_vocab, batch, pos, top_k, tile, chunk,
                                   n_targets, bias, softcap, scale, dup, seed):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(d_vocab, d_model, generator=g) * 0.5
    if dup and d_vocab > 2:
        W[-1] = W[0]
    stack, lens = synthetic(n_layers, d_model, d_vocab, batch=batch, pos=pos, bias=bias,
                            softcap=softcap, seed=seed, scale=scale, W=W)
    n = int(stack.mask.sum())
    targets = None if n_targets is None else torch.randint(0, d_vocab, (n, n_targets), generator=g)
    r = glt.readout(stack, lens, targets=targets, top_k=top_k, vocab_tile=tile, row_chunk=chunk,
                    threads=1 + seed % 2)
    assert_matches(r, naive(stack, lens, targets=targets, top_k=top_k), atol=1e-4)
    assert (r.kl_to_final >= 0).all()
    assert (r.entropy <= math.log(d_vocab) + 1e-4).all() and (r.entropy >= -1e-5).all()


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    lengths=st.lists(st.integers(1, 67), min_size=1, max_size=3),
    dtype=st.sampled_from([torch.float32, torch.bfloat16, torch.float16]),
    batch_size=st.integers(1, 3), seed=st.integers(0, 2**16),
)
def test_property_tiny_model_sequences(tiny_llama, lengths, dtype, batch_size, seed):
    """Any length in 1..n_ctx, batch composition and stack dtype: only GltError, never NaN."""
    g = torch.Generator().manual_seed(seed)
    seqs = [torch.randint(3, 101, (n,), generator=g).tolist() for n in lengths]
    stack = glt.capture_residuals(tiny_llama, seqs, batch_size=batch_size)
    stack = ResidualStack(stack.resid.to(dtype), stack.tokens, stack.mask, stack.labels)
    lens = glt.LogitLens.from_model(tiny_llama)
    r = glt.readout(stack, lens, top_k=3, vocab_tile=1 + seed % 101)
    assert r.n_rows == sum(lengths)
    for name in FLOATS:
        assert torch.isfinite(getattr(r, name)).all(), name
    assert_matches(r, naive(stack, lens, top_k=3), atol=1e-4)


@settings(max_examples=40, deadline=None)
@given(values=st.lists(st.one_of(st.floats(-1e6, 1e6), st.sampled_from([math.nan, math.inf, -math.inf])),
                       min_size=4, max_size=4))
@example(values=[math.nan] * 4)
@example(values=[math.inf, -math.inf, 0.0, 1.0])
@example(values=[1e6, -1e6, 1e6, -1e6])
def test_property_only_glterror_escapes(values):
    stack, lens = synthetic(n_layers=1, d_model=2, d_vocab=5, batch=1, pos=1)
    resid = torch.tensor(values, dtype=torch.float32).view(2, 1, 1, 2)
    s = ResidualStack(resid, stack.tokens, stack.mask, stack.labels)
    try:
        r = glt.readout(s, lens)
    except glt.GltError:
        assert not all(math.isfinite(v) for v in values)
        return
    for name in FLOATS:
        assert not torch.isnan(getattr(r, name)).any(), name


# ----------------------------------------------------------------------------- bad inputs
BAD = [
    (dict(top_k=0), "top_k"), (dict(top_k=True), "top_k"), (dict(top_k=2.0), "top_k"),
    (dict(row_chunk=0), "row_chunk"), (dict(vocab_tile=-3), "vocab_tile"),
    (dict(threads=0), "threads"), (dict(matmul_dtype=torch.float64), "matmul_dtype"),
    (dict(matmul_dtype="bf16"), "matmul_dtype"),
    (dict(targets=torch.zeros(3)), "targets"), (dict(targets=torch.full((10,), 211)), "targets"),
    (dict(targets=torch.zeros(10, 2, 2, dtype=torch.long)), "targets"),
    (dict(positions="first"), "positions"), (dict(positions=torch.tensor([9, 0, 0])), "positions"),
    (dict(positions=torch.ones(3, 7, dtype=torch.bool)), "padding"),
]


@pytest.mark.parametrize("kw,match", BAD)
def test_bad_arguments_raise_glterror(kw, match):
    """GltError; under pytest jaxtyping may refuse a wrongly *typed* argument first."""
    stack, lens = synthetic()
    assert int(stack.mask.sum()) == 10 and not stack.mask.all()
    with pytest.raises((glt.GltError, TypeCheckError), match=match):
        glt.readout(stack, lens, **kw)


def test_wrong_stack_or_lens_raise_glterror():
    stack, lens = synthetic()
    with pytest.raises((glt.GltError, TypeCheckError), match="ResidualStack"):
        glt.readout(stack.resid, lens)
    _, other = synthetic(n_layers=5)
    with pytest.raises(glt.GltError, match="residual indices"):
        glt.readout(stack, other)


def test_non_finite_residuals_raise_glterror():
    stack, lens = synthetic()
    resid = stack.resid.clone()
    resid[1, 0, 0, 0] = torch.nan
    with pytest.raises(glt.GltError, match="NaN"):
        glt.readout(ResidualStack(resid, stack.tokens, stack.mask, stack.labels), lens)


def test_concat_checks_offsets_and_keeps_order():
    stack, lens = synthetic()
    r = glt.readout(stack, lens)
    with pytest.raises(glt.GltError, match="batch_offsets"):
        glt.Readout.concat([r, r], batch_offsets=[0])
    both = glt.Readout.concat([r, r], batch_offsets=[0, 3])
    assert both.n_rows == 2 * r.n_rows
    assert torch.equal(both.batch_index[r.n_rows:], r.batch_index + 3)
    assert torch.equal(both.ranks[:, r.n_rows:], r.ranks)



def test_save_and_load_round_trip_every_field_exactly(tmp_path):
    stack, lens = synthetic()
    r = glt.readout(stack, lens, top_k=3, positions="last")
    back = glt.Readout.load(r.save(tmp_path / "sub" / "r.safetensors"))
    for f in fields(glt.Readout):
        got, want = getattr(back, f.name), getattr(r, f.name)
        if isinstance(want, torch.Tensor):
            assert got.dtype == want.dtype and torch.equal(got, want), f.name
        else:
            assert got == want, f.name
    assert not list(tmp_path.glob("sub/.*.tmp"))  # the atomic write left no temporary file


def test_load_refuses_missing_corrupt_foreign_and_inconsistent_files(tmp_path):
    from safetensors.torch import save_file

    stack, lens = synthetic()
    r = glt.readout(stack, lens)
    with pytest.raises(glt.GltError, match="does not exist"):
        glt.Readout.load(tmp_path / "none.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(r.save(tmp_path / "r.safetensors").read_bytes()[:100])
    with pytest.raises(glt.GltError, match="corrupted or truncated"):
        glt.Readout.load(bad)
    save_file({"x": torch.zeros(2)}, str(bad))
    with pytest.raises(glt.GltError, match="not a glt read-out.*Readout.save"):
        glt.Readout.load(bad)
    tensors = {f.name: getattr(r, f.name) for f in fields(r) if f.name not in ("layer_labels", "lens")}
    meta = {"format": "glt.Readout/1", "layer_labels": '["embed", "final"]', "lens": "logit"}
    save_file(tensors, str(bad), metadata=meta)  # two labels for four layers
    with pytest.raises(glt.GltError,
                       match=r"read-out .* is malformed.*ranks has shape \(4, 10, 1\), expected \(2, 10, 1\)"):
        glt.Readout.load(bad)
    save_file({k: v for k, v in tensors.items() if k != "entropy"}, str(bad), metadata=meta)
    with pytest.raises(glt.GltError, match="malformed.*entropy"):
        glt.Readout.load(bad)
    meta["layer_labels"] = json.dumps(list(r.layer_labels))
    save_file({**tensors, "ranks": r.ranks.float()}, str(bad), metadata=meta)
    with pytest.raises(glt.GltError, match="malformed.*ranks is torch.float32, expected int64"):
        glt.Readout.load(bad)
    save_file({**tensors, "topk_logprobs": r.topk_logprobs[..., :0].contiguous()}, str(bad), metadata=meta)
    with pytest.raises(glt.GltError, match=r"malformed.*topk_logprobs has shape \(4, 10, 0\), expected \(4, 10, 5\)"):
        glt.Readout.load(bad)
    with pytest.raises(glt.GltError, match="is not a file"):
        glt.Readout.load(tmp_path)

# ----------------------------------------------------------------------------- integration
@pytest.mark.integration
def test_default_model_matches_float64_reference(default_model):
    stack = glt.capture_residuals(default_model, ["The capital of France is Paris."])
    lens = glt.LogitLens.from_model(default_model)
    positions = torch.zeros_like(stack.mask)
    positions[0, [1, 4, 6]] = True
    targets = stack.tokens[0, [2, 5, 7]]
    r = glt.readout(stack, lens, targets=targets, positions=positions)
    assert_matches(r, naive(stack, lens, targets=targets, positions=positions, gemm=True), atol=2e-4)


# ----------------------------------------------------------------------------- resid_mid
def _model_softcap(model):
    cap = getattr(model.cfg, "output_logits_soft_cap", None)
    if cap is not None and cap > 0:
        return float(cap)
    return getattr(getattr(getattr(model, "original_model", None), "config", None), "final_logit_softcapping", None)


def test_resid_mid_readout_matches_a_naive_full_vocabulary_computation(tiny_model):
    """Every residual of a resid_mid stack, mid ones included, against ln_final + W_U in float64."""
    seqs = [[1, 5, 6, 7, 8, 9], [1, 9, 10]]
    stack = glt.capture_residuals(tiny_model, seqs, resid_mid=True)
    r = glt.readout(stack, glt.LogitLens.from_model(tiny_model), top_k=4, vocab_tile=16, row_chunk=3)
    assert r.layer_labels == stack.labels and r.layer_labels[1] == "resid_mid 0"
    b_idx, p_idx = stack.mask.nonzero(as_tuple=True)
    with torch.no_grad():
        x = tiny_model.ln_final(stack.resid[:, b_idx, p_idx].float()).double()
        y = x @ tiny_model.W_U.double()  # pre-cap logits [layer, row, d_vocab]
        b_U = getattr(tiny_model, "b_U", None)
        y = y if b_U is None else y + b_U.double()
        cap = _model_softcap(tiny_model)
        logp = torch.log_softmax(y if cap is None else torch.tanh(y / cap) * cap, -1)
        own = torch.cat([tiny_model(torch.tensor([s])).float()[0] for s in seqs])  # the model's own logits
    torch.testing.assert_close(logp[-1].float(), torch.log_softmax(own, -1), atol=1e-4, rtol=1e-4)
    final = y[-1].argmax(-1)  # the first (lowest) id among maximal logits
    assert torch.equal(r.targets[:, 0], final)
    want_rank = (y > y.gather(-1, final[None, :, None].expand(y.shape[0], -1, 1))).sum(-1)
    assert torch.equal(r.ranks[..., 0], want_rank)
    assert torch.equal(r.top1, y.argmax(-1))
    torch.testing.assert_close(r.target_logprobs[..., 0].double(), logp.gather(-1, final[None, :, None].expand(
        y.shape[0], -1, 1))[..., 0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(r.topk_logprobs.double(), logp.topk(4, -1).values, atol=1e-5, rtol=1e-5)
    p = logp.exp()
    torch.testing.assert_close(r.entropy.double(), -(p * logp).sum(-1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(r.kl_to_final.double(), (p[-1:] * (logp[-1:] - logp)).sum(-1), atol=1e-5, rtol=1e-5)
    plain = glt.readout(glt.capture_residuals(tiny_model, seqs), glt.LogitLens.from_model(tiny_model), top_k=4)
    for name in ("ranks", "topk_ids", "targets"):  # the block boundaries read as without resid_mid
        got = getattr(r, name)
        assert torch.equal(got[[0, 2, 4, 6]] if got.ndim == 3 else got, getattr(plain, name)), name


class _OwnLens:
    """A lens of one's own: the protocol's four members and nothing for resid_mid."""

    name = "own"

    def __init__(self, unembed, n_layers):
        self.unembed, self.n_layers = unembed, n_layers

    def transform_stack(self, resid):
        return resid

    def check_compatible(self, n_residuals, d_model):
        assert n_residuals == self.n_layers + 1


def test_lenses_without_resid_mid_translators_raise_glterror(tiny_llama):
    stack = glt.capture_residuals(tiny_llama, [[1, 5, 6, 7]], resid_mid=True)
    logit = glt.LogitLens.from_model(tiny_llama)
    lenses = [glt.TunedLens.from_model(tiny_llama), glt.JacobianLens.from_model(tiny_llama),
              _OwnLens(logit.unembed, tiny_llama.cfg.n_layers)]
    plain = glt.capture_residuals(tiny_llama, [[1, 5, 6, 7]])
    for lens in lenses:
        with pytest.raises(glt.GltError, match=rf"lens: the '{lens.name}' lens \({type(lens).__name__}\) has no "
                           r"translator for resid_mid .*glt\.LogitLens\.from_model\(model\).*without resid_mid=True"):
            glt.readout(stack, lens)
        glt.readout(plain, lens)  # block-boundary residuals read as before
    assert logit.reads_resid_mid and not any(getattr(lens, "reads_resid_mid", False) for lens in lenses)
    with pytest.raises(glt.GltError, match="no translator for resid_mid"):
        lenses[0].transform_mid(stack.resid[1], 0)
    # a zero tuned lens is the logit lens at the boundaries; its transform_sites without mids is transform_stack
    torch.testing.assert_close(lenses[0].transform_sites(plain.resid, plain.sites), plain.resid)


def test_sharded_readout_reads_resid_mid_in_one_process(tiny_llama):
    seqs = [[1, 5, 6, 7], [1, 8], [1, 9, 10]]
    r = glt.sharded_readout(tiny_llama, seqs, batch_size=2, resid_mid=True)
    ref = glt.readout(glt.capture_residuals(tiny_llama, seqs, resid_mid=True), glt.LogitLens.from_model(tiny_llama))
    assert r.layer_labels == ref.layer_labels == glt.core._capture.layer_labels(3, resid_mid=True)
    assert_same(r, ref, atol=1e-5)
