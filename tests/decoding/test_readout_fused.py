"""The fused (Triton) read-out kernel equals the float64 reference and the eager kernel.

On CUDA `glt.readout` runs `glt.decoding._fused`; here the same kernel runs in Triton's
interpreter on CPU (``TRITON_INTERPRET=1``, ``GLT_FUSED=1``), with small blocks so that every
path is exercised: several token blocks per row, blocks holding two or more top-k tokens (whole
block recomputed), band tokens resolved by id and blocks with three or more band tokens
(re-evaluated token by token).
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before Triton is imported

import pytest  # noqa: E402
import torch  # noqa: E402

import glt  # noqa: E402
from tests.decoding.test_readout import assert_matches, naive, synthetic  # noqa: E402

triton = pytest.importorskip("triton")  # part of glt[test]; CUDA builds of torch ship it
fused = pytest.importorskip("glt.decoding._fused")


@pytest.fixture(autouse=True)
def _fused_small_blocks(monkeypatch):
    monkeypatch.setenv("GLT_FUSED", "1")
    monkeypatch.setattr(fused, "BLOCK", (16, 16, 16))
    calls = {"blocks": 0}
    real = fused._block_logits

    def spy(*a, **kw):
        calls["blocks"] += 1
        return real(*a, **kw)

    monkeypatch.setattr(fused, "_block_logits", spy)
    return calls


def test_fused_path_is_taken_and_eager_is_not(monkeypatch):
    seen = []
    real = fused.chunk_stats_fused
    monkeypatch.setattr(fused, "chunk_stats_fused", lambda *a, **k: seen.append(1) or real(*a, **k))
    stack, lens = synthetic(d_model=32, d_vocab=100, n_layers=2, batch=2, pos=3)
    glt.readout(stack, lens)
    assert seen
    monkeypatch.setenv("GLT_FUSED", "0")
    seen.clear()
    glt.readout(stack, lens)
    assert not seen


@pytest.mark.parametrize("operand", [None, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("bias", [False, True])
def test_fused_equals_float64_reference(operand, bias):
    stack, lens = synthetic(d_model=40, d_vocab=203, n_layers=3, batch=2, pos=6, bias=bias)
    r = glt.readout(stack, lens, top_k=7, matmul_dtype=operand)
    assert_matches(r, naive(stack, lens, top_k=7, operand=operand), atol=1e-4)


def test_fused_with_several_explicit_targets_and_last_positions():
    stack, lens = synthetic(d_model=24, d_vocab=150, n_layers=2, batch=3, pos=5, bias=True)
    targets = torch.randint(0, 150, (3, 4), generator=torch.Generator().manual_seed(1))
    r = glt.readout(stack, lens, targets=targets, positions="last", top_k=3)
    ref = naive(stack, lens, targets=targets, positions="last", top_k=3)
    assert_matches(r, ref, atol=1e-4)


def test_ties_share_the_best_rank_and_topk_takes_the_lowest_id(_fused_small_blocks):
    g = torch.Generator().manual_seed(3)
    W = torch.randn(96, 32, generator=g) * 0.3
    W[[5, 40, 41, 77]] = W[60].clone()  # identical rows across and within blocks: exact ties
    stack, lens = synthetic(d_model=32, n_layers=2, batch=2, pos=4, W=W)
    targets = torch.full((int(stack.mask.sum()), 1), 60)
    r = glt.readout(stack, lens, targets=targets, top_k=8)
    assert_matches(r, naive(stack, lens, targets=targets, top_k=8), atol=1e-4)


def test_blocks_holding_several_topk_tokens_are_recomputed(_fused_small_blocks):
    g = torch.Generator().manual_seed(4)
    W = torch.randn(128, 32, generator=g) * 0.05
    direction = torch.randn(32, generator=g)
    W[16:22] = direction * torch.linspace(1.0, 1.5, 6)[:, None]  # the top-6 share one block
    stack, lens = synthetic(d_model=32, n_layers=2, batch=2, pos=3, W=W, norm="rms")
    stack = glt.ResidualStack(stack.resid + 6 * direction, stack.tokens, stack.mask, stack.labels)
    r = glt.readout(stack, lens, top_k=5)
    assert_matches(r, naive(stack, lens, top_k=5), atol=1e-4)
    assert _fused_small_blocks["blocks"] > 0
    assert set(r.topk_ids[-1, 0].tolist()) <= set(range(16, 22))


def test_blocks_with_three_or_more_band_tokens_are_checked_token_by_token():
    g = torch.Generator().manual_seed(5)
    W = torch.randn(64, 32, generator=g) * 0.3
    W[33:36] = W[32].clone()  # the target and three twins in one block: all in the band
    stack, lens = synthetic(d_model=32, n_layers=2, batch=2, pos=3, W=W)
    targets = torch.full((int(stack.mask.sum()), 1), 32)
    r = glt.readout(stack, lens, targets=targets, top_k=4)
    assert_matches(r, naive(stack, lens, targets=targets, top_k=4), atol=1e-4)


def test_fused_and_eager_agree_on_a_wider_model(monkeypatch):
    monkeypatch.setattr(fused, "BLOCK", (32, 64, 32))
    stack, lens = synthetic(d_model=96, d_vocab=517, n_layers=4, batch=2, pos=8, bias=True)
    a = glt.readout(stack, lens, top_k=10, matmul_dtype=torch.bfloat16)
    monkeypatch.setenv("GLT_FUSED", "0")
    b = glt.readout(stack, lens, top_k=10, matmul_dtype=torch.bfloat16)
    for f in ("targets", "ranks", "topk_ids"):
        assert torch.equal(getattr(a, f), getattr(b, f)), f
    for f in ("target_logprobs", "topk_logprobs", "entropy", "kl_to_final"):
        torch.testing.assert_close(getattr(a, f), getattr(b, f), atol=1e-4, rtol=1e-5)


def test_softcap_models_use_the_eager_kernel():
    stack, lens = synthetic(d_model=16, d_vocab=50, n_layers=1, batch=1, pos=2, softcap=5.0)
    from glt.decoding._triton_kernel import available

    assert not available(stack.resid, 5.0, torch.bfloat16)
    assert available(stack.resid, None, torch.float32)  # GLT_FUSED=1 + interpreter: forced
    r = glt.readout(stack, lens, top_k=3)
    assert_matches(r, naive(stack, lens, top_k=3), atol=1e-4)


def test_automatic_mode_uses_the_kernel_only_on_cuda_with_16_bit_operands(monkeypatch):
    from glt.decoding._triton_kernel import available

    monkeypatch.setenv("GLT_FUSED", "auto")
    x = torch.zeros(2, 3)
    assert not available(x, None, torch.bfloat16)  # CPU tensors: eager
    monkeypatch.setenv("GLT_FUSED", "0")
    assert not available(x, None, torch.bfloat16)


def test_d_model_accumulated_in_several_slices_stays_exact(monkeypatch):
    import glt.decoding._triton_kernel as kernel

    monkeypatch.setattr(kernel, "_SLICE", 32)  # 96 = three slices of 32 (two BK=16 steps each)
    assert kernel.k_chain(96, 16) == 32 + 3
    stack, lens = synthetic(d_model=96, d_vocab=150, n_layers=2, batch=2, pos=4, bias=True)
    for operand in (None, torch.bfloat16):
        r = glt.readout(stack, lens, top_k=5, matmul_dtype=operand)
        assert_matches(r, naive(stack, lens, top_k=5, operand=operand), atol=1e-4)
