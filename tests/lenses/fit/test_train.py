"""Tuned-lens training: the tiled KL kernel, least squares, the loop, checkpoints, evaluation, CLI."""

import argparse
import json

import pytest
import torch

import glt
from glt.lenses._logit import LogitLens, Unembed
from glt.lenses._tuned import TunedLens, load_lens
from glt.lenses.fit._data import plan_sequences, plan_steps, read_rows
from glt.lenses.fit._evaluate import LensEvaluation, evaluate_lens
from glt.lenses.fit._least_squares import fit_least_squares
from glt.lenses.fit._loss import final_stats, tiled_kl_ce, tiled_top1
from glt.lenses.fit._train import _row_weights, _step_grads, train_tuned_lens
from tests.helpers import WORDS, make_tiny_folder


def _texts(n: int, seed: int = 0, words: int = 24) -> list[str]:
    g = torch.Generator().manual_seed(seed)
    return [" ".join(WORDS[i] for i in torch.randint(0, len(WORDS), (words,), generator=g).tolist()) for _ in range(n)]


TRAIN = _texts(24)
HELD = _texts(6, seed=1)
FAST = dict(max_tokens=300, tokens_per_step=100, least_squares_tokens=200, progress=False, row_chunk=32,
            optimizer="sgd")  # the linesearch default has its own tests below


# ------------------------------------------------------------------------------- tiled KL kernel
def _naive(W, b, softcap, x, xf, t):
    z, zf = x @ W, xf @ W
    if b is not None:
        z, zf = z + b, zf + b
    if softcap:
        z, zf = torch.tanh(z / softcap) * softcap, torch.tanh(zf / softcap) * softcap
    lp, lpf = z.log_softmax(-1), zf.log_softmax(-1)
    kl = (lpf.exp() * (lpf - lp)).sum(-1)
    ce = -lp.gather(-1, t.expand(x.shape[0], -1)[..., None])[..., 0]
    return kl, ce


@pytest.mark.parametrize("softcap,bias,tile", [(None, False, 7), (None, True, 53), (5.0, True, 4), (2.0, False, 100)])
def test_tiled_kl_and_grad_match_naive(softcap, bias, tile):
    g = torch.Generator().manual_seed(0)
    V, d, L, R = 53, 6, 3, 5  # distinct sizes: a swapped axis fails
    W = torch.randn(d, V, generator=g, dtype=torch.float64)
    b = torch.randn(V, generator=g, dtype=torch.float64) if bias else None
    u = Unembed(torch.nn.Identity(), W, b, softcap)
    x = torch.randn(L, R, d, generator=g, dtype=torch.float64, requires_grad=True)
    xf = torch.randn(R, d, generator=g, dtype=torch.float64)
    t = torch.randint(0, V, (R,), generator=g)
    kl, ce = tiled_kl_ce(u, x, xf, targets=t, tile=tile, compute_dtype=torch.float64)
    kl_n, ce_n = _naive(W, b, softcap, x, xf, t)
    torch.testing.assert_close(kl, kl_n.float().to(kl.dtype), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ce, ce_n.to(ce.dtype), rtol=1e-4, atol=1e-5)
    w = torch.randn(L, R, generator=g, dtype=torch.float64)
    (g1,) = torch.autograd.grad((kl * w).sum(), x)
    (g2,) = torch.autograd.grad((kl_n * w).sum(), x)
    torch.testing.assert_close(g1, g2, rtol=1e-4, atol=1e-5)


def test_kl_of_final_against_itself_is_zero_and_bf16_is_close():
    g = torch.Generator().manual_seed(1)
    u = Unembed(torch.nn.Identity(), torch.randn(16, 301, generator=g), None)
    x = torch.randn(4, 7, 16, generator=g)
    kl32, _ = tiled_kl_ce(u, x, x[-1], tile=64)
    kl16, _ = tiled_kl_ce(u, x, x[-1], tile=64, compute_dtype=torch.bfloat16)
    assert float(kl32[-1].abs().max()) < 1e-4
    torch.testing.assert_close(kl16, kl32, rtol=0.05, atol=0.1)  # bf16 logits: ~3 digits


def test_final_stats_top1_is_lowest_id_among_ties():
    W = torch.zeros(2, 9)
    W[0, 3] = W[0, 7] = 1.0
    u = Unembed(torch.nn.Identity(), W, None)
    *_, top = final_stats(u, torch.tensor([[1.0, 0.0], [-1.0, 0.0]]), tile=4)
    assert top.tolist() == [3, 0]
    assert tiled_top1(u, torch.tensor([[1.0, 0.0], [-1.0, 0.0]]), tile=4).tolist() == [3, 0]


@pytest.mark.parametrize("bias,softcap", [(False, None), (True, None), (True, 3.0)])
def test_tiled_top1_is_the_argmax_of_the_logits(bias, softcap):
    u = Unembed(torch.nn.Identity(), torch.randn(16, 1009), torch.randn(1009) if bias else None, softcap)
    x = torch.randn(40, 16)
    top = tiled_top1(u, x, tile=100)
    assert torch.equal(top, u.logits_of_normed(x).argmax(-1))
    assert torch.equal(top, final_stats(u, x, tile=100)[4])  # the weights of the KL steps use this one


def test_backward_keeps_no_vocab_sized_tensor():
    """Only a [layer, row, d_model] gradient is saved for the backward, never [rows, d_vocab]."""
    u = Unembed(torch.nn.Identity(), torch.randn(8, 5003), None)
    x = torch.randn(3, 4, 8, requires_grad=True)
    saved = []

    def pack(t):
        saved.append(tuple(t.shape))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        kl, _ = tiled_kl_ce(u, x, x[-1].detach(), tile=512)
    assert saved and all(5003 not in s for s in saved), saved
    kl.sum().backward()
    assert x.grad.shape == x.shape


# ---------------------------------------------------------------------------- least squares
@pytest.mark.parametrize("by_token", [False, True])
def test_least_squares_solves_the_weighted_ridge_normal_equations(tiny_llama, by_token):
    ridge = 1e-3
    counts = torch.arange(101, dtype=torch.float32) ** 2
    row_weight = (lambda top1: _row_weights(top1, counts, 0.5)) if by_token else None
    lens = fit_least_squares(tiny_llama, TRAIN, ridge=ridge, row_weight=row_weight, progress=False)
    seqs, bos = plan_sequences(tiny_llama, TRAIN)
    stack = glt.capture_residuals(tiny_llama, seqs)
    b, p = read_rows(stack.tokens, stack.mask, bos)
    h = stack.resid[:, b, p].double()
    w = 1.0 / h[-1].pow(2).mean(-1)
    if by_token:  # (1 + count[final top-1])^-alpha on top of the scale weight
        w = w * (1 + counts[lens.unembed(h[-1].float()).argmax(-1)].double()) ** -0.5
        assert "frequency" in lens.config["least_squares"]["row_weight"]
    for layer in range(3):
        X = torch.cat([h[layer], torch.ones(len(b), 1, dtype=torch.float64)], -1)
        Y = h[-1] - h[layer]
        A = (X * w[:, None]).T @ X
        lam = ridge * torch.diagonal(A)[:-1].sum() / 28
        A[range(28), range(28)] += lam
        theta = torch.linalg.solve(A, (X * w[:, None]).T @ Y)
        torch.testing.assert_close(lens.weight[layer].double(), theta[:28].T, rtol=1e-3, atol=1e-4)
        torch.testing.assert_close(lens.bias[layer].double(), theta[28], rtol=1e-3, atol=1e-4)


def test_least_squares_mid_translators_solve_their_own_normal_equations(tiny_llama, tmp_path):
    """resid_mid=True: block i's mid residual gets the weighted ridge fit of h_final on it (same rows,
    same weights); the block-boundary translators are unchanged; the lens reads resid_mid stacks
    through them, and saving and loading keeps them."""
    ridge = 1e-3
    plain = fit_least_squares(tiny_llama, TRAIN, ridge=ridge, progress=False)
    lens = fit_least_squares(tiny_llama, TRAIN, ridge=ridge, resid_mid=True, progress=False)
    assert not plain.reads_resid_mid and lens.reads_resid_mid and lens.config["least_squares"]["resid_mid"]
    torch.testing.assert_close(lens.weight, plain.weight, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(lens.bias, plain.bias, rtol=1e-5, atol=1e-6)
    seqs, bos = plan_sequences(tiny_llama, TRAIN)
    stack = glt.capture_residuals(tiny_llama, seqs, resid_mid=True)
    b, p = read_rows(stack.tokens, stack.mask, bos)
    h = stack.resid[:, b, p].double()
    w = 1.0 / h[-1].pow(2).mean(-1)
    mids = [j for j, site in enumerate(stack.sites) if site.mid]
    assert len(mids) == 3
    for block, j in enumerate(mids):
        X = torch.cat([h[j], torch.ones(len(b), 1, dtype=torch.float64)], -1)
        A = (X * w[:, None]).T @ X
        A[range(28), range(28)] += ridge * torch.diagonal(A)[:-1].sum() / 28
        theta = torch.linalg.solve(A, (X * w[:, None]).T @ (h[-1] - h[j]))
        torch.testing.assert_close(lens.mid_weight[block].double(), theta[:28].T, rtol=1e-3, atol=1e-4)
        torch.testing.assert_close(lens.mid_bias[block].double(), theta[28], rtol=1e-3, atol=1e-4)
        x = h[j].float()
        want = x + x @ lens.mid_weight[block].T + lens.mid_bias[block]
        torch.testing.assert_close(lens.transform_mid(x, block), want)
    r = glt.readout(stack, lens, top_k=1)  # a resid_mid stack, read through the mid translators
    moved = lens.transform_sites(stack.resid, stack.sites)
    want = lens.unembed(moved).argmax(-1)  # Unembed applies the final norm
    assert torch.equal(r.top1, want[:, r.batch_index, r.pos_index])
    loaded = load_lens(lens.save(tmp_path / "ls-mid"), tiny_llama)
    assert loaded.reads_resid_mid and torch.equal(loaded.mid_weight, lens.mid_weight)
    assert torch.equal(loaded.mid_bias, lens.mid_bias)
    assert json.loads((tmp_path / "ls-mid" / "config.json").read_text())["resid_mid_translators"] is True
    assert "resid_mid_translators" not in plain.full_config()  # lenses without them save as before
    with pytest.raises(glt.GltError, match="no translator for resid_mid"):
        glt.readout(stack, plain)


def test_mid_translators_are_checked(tiny_llama):
    lens = TunedLens.from_model(tiny_llama)
    with pytest.raises(glt.GltError, match=r"mine: the mid translators: weight \(3, 27, 27\) and bias "
                                           r"\(3, 27\) do not fit this lens"):
        lens.set_mid_translators(torch.zeros(3, 27, 27), torch.zeros(3, 27), source="mine")
    with pytest.raises(glt.GltError, match="NaN/inf"):
        lens.set_mid_translators(torch.full((3, 28, 28), float("nan")), torch.zeros(3, 28))
    with pytest.raises(glt.GltError, match=r"block must be a block index in \[0, 3\)"):
        lens.set_mid_translators(torch.zeros(3, 28, 28), torch.zeros(3, 28)).transform_mid(torch.zeros(28), 3)


def test_least_squares_needs_enough_rows(tiny_llama):
    with pytest.raises(glt.GltError, match="more than d_model=28"):
        fit_least_squares(tiny_llama, TRAIN, max_tokens=10, progress=False)


# ------------------------------------------------------------------------------- training loop
@pytest.fixture(scope="module")
def trained(tiny_llama):
    return train_tuned_lens(tiny_llama, TRAIN, seed=3, **FAST)


def test_training_beats_logit_lens_and_its_least_squares_start(tiny_llama, trained):
    start = train_tuned_lens(tiny_llama, TRAIN, seed=3, **dict(FAST, max_tokens=0))  # LS fit only
    assert start.config["training"]["steps"] == 0 and start.config["least_squares"]["tokens"] >= 200
    stack = glt.capture_residuals(tiny_llama, TRAIN[:12])
    kl = {name: glt.readout(stack, lens).kl_to_final.mean(1)
          for name, lens in [("logit", LogitLens.from_model(tiny_llama)), ("ls", start), ("tuned", trained)]}
    assert bool((kl["ls"][:-1] < kl["logit"][:-1]).all())
    assert bool((kl["tuned"][:-1] < kl["ls"][:-1]).all()), kl
    hist = trained.config["training"]["history"]
    assert len(hist) == 3 and all(h["rows"] >= 100 for h in hist)


def test_training_is_deterministic_under_seed(tiny_llama, trained):
    again = train_tuned_lens(tiny_llama, TRAIN, seed=3, **FAST)
    assert torch.equal(again.weight, trained.weight) and torch.equal(again.bias, trained.bias)


def test_zero_init_sgd_recipe_runs_and_records_settings(tiny_llama):
    lens = train_tuned_lens(tiny_llama, TRAIN, init="zero", **dict(FAST, optimizer="adam"))
    tr = lens.config["training"]
    assert tr["init"] == "zero" and tr["optimizer"] == "adam" and tr["steps"] == 3
    assert float(lens.weight.detach().abs().sum()) > 0


def test_linesearch_never_raises_validation_kl_and_beats_its_start(tiny_llama):
    lens = train_tuned_lens(tiny_llama, TRAIN, seed=3, **dict(FAST, max_tokens=400, optimizer="linesearch"))
    hist = lens.config["training"]["history"]
    val = torch.tensor([h["val_kl"] for h in hist])  # [step, layer]
    assert bool((val[1:] <= val[:-1] + 1e-6).all())
    assert all(len(h["step_sizes"]) == 3 and min(h["step_sizes"]) >= 0 for h in hist)
    assert any(s > 0 for h in hist for s in h["step_sizes"]), "the line search never moved"
    start = train_tuned_lens(tiny_llama, TRAIN, seed=3, **dict(FAST, max_tokens=0, optimizer="linesearch"))
    stack = glt.capture_residuals(tiny_llama, HELD)
    kl_t = glt.readout(stack, lens).kl_to_final.mean(1)
    kl_s = glt.readout(stack, start).kl_to_final.mean(1)
    assert float(kl_t[:-1].sum()) < float(kl_s[:-1].sum())


class _Stop(Exception):
    pass


@pytest.mark.parametrize("optimizer", ["sgd", "linesearch"])
def test_resume_after_interruption_loses_no_step(tiny_llama, tmp_path, optimizer):
    args = dict(FAST, max_tokens=400, seed=5, optimizer=optimizer)
    ref = train_tuned_lens(tiny_llama, TRAIN, **args)

    def crash(step, tokens, lens):
        if step == 2:
            raise _Stop

    with pytest.raises(_Stop):
        train_tuned_lens(tiny_llama, TRAIN, checkpoint_dir=tmp_path / "ck", checkpoint_every=1, callback=crash, **args)
    assert json.loads((tmp_path / "ck" / "latest" / "state.json").read_text())["step"] == 2
    done = []
    resumed = train_tuned_lens(tiny_llama, TRAIN, checkpoint_dir=tmp_path / "ck",
                               callback=lambda s, t, lens: done.append(s), **args)
    assert done == [3, 4]
    torch.testing.assert_close(resumed.weight, ref.weight, rtol=0, atol=1e-6)
    assert [h["step"] for h in resumed.config["training"]["history"]] == [1, 2, 3, 4]


def test_linesearch_run_extends_with_a_larger_budget(tiny_llama, tmp_path):
    args = dict(FAST, seed=6, optimizer="linesearch")
    straight = train_tuned_lens(tiny_llama, TRAIN, **dict(args, max_tokens=400))
    train_tuned_lens(tiny_llama, TRAIN, checkpoint_dir=tmp_path / "ck", **dict(args, max_tokens=200))
    done = []
    longer = train_tuned_lens(tiny_llama, TRAIN, checkpoint_dir=tmp_path / "ck",
                              callback=lambda s, t, lens: done.append(s), **dict(args, max_tokens=400))
    assert done == [3, 4]
    torch.testing.assert_close(longer.weight, straight.weight, rtol=0, atol=1e-6)


def test_resume_with_other_settings_raises(tiny_llama, tmp_path):
    train_tuned_lens(tiny_llama, TRAIN, checkpoint_dir=tmp_path / "ck", **FAST)
    with pytest.raises(glt.GltError, match="other settings"):
        train_tuned_lens(tiny_llama, TRAIN, checkpoint_dir=tmp_path / "ck", **dict(FAST, lr=0.5))


def test_corrupted_checkpoint_raises(tiny_llama, tmp_path):
    train_tuned_lens(tiny_llama, TRAIN, checkpoint_dir=tmp_path / "ck", **FAST)
    f = tmp_path / "ck" / "latest" / "state.safetensors"
    f.write_bytes(f.read_bytes()[:50])
    with pytest.raises(glt.GltError, match="corrupted or truncated"):
        train_tuned_lens(tiny_llama, TRAIN, checkpoint_dir=tmp_path / "ck", **FAST)


@pytest.mark.parametrize("kwargs,match", [
    ({"init": "bogus"}, "init must be"),
    ({"optimizer": "lbfgs"}, "optimizer must be"),
    ({"init": "zero", "optimizer": "linesearch", "max_tokens": -5}, "max_tokens"),
    ({"max_tokens": -1}, "max_tokens"),
    ({"tokens_per_step": 0}, "tokens_per_step"),
    ({"frequency_counts": torch.ones(7)}, "d_vocab=101"),
    ({"frequency_counts": -torch.ones(101)}, "non-negative"),
    ({"seq_len": 1}, "seq_len"),
    ({"frequency_alpha": -1.0}, r"frequency_alpha must be a number in \[0.0, inf\)"),
    ({"frequency_alpha": float("nan")}, "frequency_alpha"),
    ({"momentum": 1.0}, r"momentum must be a number in \[0.0, 1.0\)"),
    ({"grad_clip": -1.0}, "grad_clip"),
    ({"lr": float("inf")}, "lr must be"),
    ({"weight_decay": -0.1}, "weight_decay"),
])
def test_bad_training_arguments_raise(tiny_llama, kwargs, match):
    with pytest.raises(glt.GltError, match=match):
        train_tuned_lens(tiny_llama, TRAIN, **{**FAST, **kwargs})


@pytest.mark.parametrize("texts", [[], "just a string"])
def test_bad_texts_raise(tiny_llama, texts):
    with pytest.raises(glt.GltError, match="texts"):
        train_tuned_lens(tiny_llama, texts, **FAST)


def test_step_plan_is_seeded_and_covers_token_budget(tiny_llama):
    seqs, bos = plan_sequences(tiny_llama, TRAIN, seq_len=10)
    assert all(len(s) <= 10 and s[0] == bos for s in seqs)
    a = plan_steps(seqs, bos, 50, seed=1, n_steps=9)
    assert a == plan_steps(seqs, bos, 50, seed=1, n_steps=9) != plan_steps(seqs, bos, 50, seed=2, n_steps=9)
    for step in a:
        assert sum(1 for i in step for t in seqs[i] if t != bos) >= 50


# --------------------------------------------------------------------- frequency reweighting
def test_row_weights_follow_inverse_frequency():
    counts = torch.tensor([999.0, 0.0, 9.0])
    w = _row_weights(torch.tensor([0, 1, 2, 0]), counts, alpha=1.0)
    torch.testing.assert_close(w, torch.tensor([1e-3, 1.0, 0.1, 1e-3]))
    assert torch.equal(_row_weights(torch.tensor([0, 2]), None, 1.0), torch.ones(2))


def test_reweighted_step_objective_is_the_weighted_mean_of_kl(tiny_llama):
    lens = TunedLens.from_model(tiny_llama)
    seqs, bos = plan_sequences(tiny_llama, TRAIN[:4])
    counts = torch.arange(101, dtype=torch.float32) * 10
    layers = torch.arange(lens.n_layers)
    stats = _step_grads(tiny_llama, lens, seqs, bos, lens.unembed.W, layers, counts, 0.5, 8, 1000, torch.float32, 64)
    stack = glt.capture_residuals(tiny_llama, seqs)
    r = glt.readout(stack, LogitLens.from_model(tiny_llama), positions=stack.mask & (stack.tokens != bos))
    w = (1 + counts[r.top1[-1]]) ** -0.5
    torch.testing.assert_close(stats[2:].float() / stats[0].float(), (r.kl_to_final[:-1] * w).sum(1) / w.sum(),
                               rtol=1e-4, atol=1e-5)
    assert int(stats[1]) == r.n_rows


def test_uniform_counts_give_the_plain_lens_and_skewed_counts_change_it(tiny_llama, trained):
    flat = train_tuned_lens(tiny_llama, TRAIN, seed=3, frequency_counts=torch.full((101,), 5.0), **FAST)
    torch.testing.assert_close(flat.weight, trained.weight, rtol=1e-4, atol=1e-5)
    skew = torch.zeros(101)
    skew[:40] = 1e6  # the frequent words of the tiny vocabulary
    down = train_tuned_lens(tiny_llama, TRAIN, seed=3, frequency_counts=skew, **FAST)
    assert not torch.allclose(down.weight, trained.weight, atol=1e-4)
    assert "count[final top-1]" in down.config["training"]["frequency_weighting"]



def test_line_search_validates_with_the_same_frequency_weights(tiny_llama):
    from glt.lenses.fit._line_search import LineSearch

    ls = dict(FAST, optimizer="linesearch", val_rows=24)
    plain = train_tuned_lens(tiny_llama, TRAIN, seed=3, **ls)
    flat = train_tuned_lens(tiny_llama, TRAIN, seed=3, frequency_counts=torch.full((101,), 5.0), **ls)
    torch.testing.assert_close(flat.weight, plain.weight, rtol=1e-4, atol=1e-5)
    skew = torch.zeros(101)
    skew[:40] = 1e6
    down = train_tuned_lens(tiny_llama, TRAIN, seed=3, frequency_counts=skew, **ls)
    assert down.config["training"]["history"][0]["val_kl"] != plain.config["training"]["history"][0]["val_kl"]
    # the validation weights are the objective's: (1 + count[final top-1])^-alpha, mean 1
    lens = TunedLens.from_model(tiny_llama)
    seqs, bos = plan_sequences(tiny_llama, TRAIN[:6])
    stack = glt.capture_residuals(tiny_llama, seqs)
    b, p = read_rows(stack.tokens, stack.mask, bos)
    h = stack.resid[:, b, p]
    search = LineSearch(lens, h, lens.unembed.W, row_weight=lambda t: _row_weights(t, skew, 0.5))
    top1 = lens.unembed(h[-1]).argmax(-1)
    want = _row_weights(top1, skew, 0.5)
    torch.testing.assert_close(search.w, want / want.mean())
    assert torch.equal(LineSearch(lens, h, lens.unembed.W).w, torch.ones(len(b)))

# --------------------------------------------------------------------------------- evaluation
def test_evaluate_lens_matches_readout_and_model_loss(tiny_llama, trained):
    ev = evaluate_lens(tiny_llama, {"logit": LogitLens.from_model(tiny_llama), "tuned": trained}, HELD, progress=False)
    seqs, bos = plan_sequences(tiny_llama, HELD)
    stack = glt.capture_residuals(tiny_llama, seqs)
    pos = stack.mask & (stack.tokens != bos)
    pos[torch.arange(len(seqs)), stack.lengths - 1] = False  # no next token
    for i, lens in enumerate([LogitLens.from_model(tiny_llama), trained]):
        r = glt.readout(stack, lens, positions=pos)
        torch.testing.assert_close(ev.kl[i], r.kl_to_final, rtol=1e-4, atol=1e-4)
    logits = tiny_llama(stack.tokens, attention_mask=stack.mask.long()).float().log_softmax(-1)
    b, p = pos.nonzero(as_tuple=True)
    ce = -logits[b, p, stack.tokens[b, p + 1]]
    torch.testing.assert_close(ev.ce[0, -1], ce, rtol=1e-4, atol=1e-4)
    assert ev.skipped["bos_positions"] == len(seqs) and ev.n_rows == int(pos.sum())


def test_evaluation_round_trips_and_tabulates(tiny_llama, trained, tmp_path):
    ev = evaluate_lens(tiny_llama, {"logit": LogitLens.from_model(tiny_llama), "tuned": trained}, HELD,
                       max_rows=20, progress=False)
    assert ev.n_rows == 20 and ev.skipped["not_sampled"] > 0
    ev.save(tmp_path / "e.json")
    back = LensEvaluation.load(tmp_path / "e.json")
    torch.testing.assert_close(back.kl, ev.kl)
    torch.testing.assert_close(back.ce, ev.ce)
    df = back.to_dataframe()
    assert len(df) == 2 * 4 and set(df.columns) >= {"lens", "layer", "kl_mean", "kl_median", "ce_mean", "n"}
    with pytest.raises(glt.GltError, match="lens must be one of"):
        ev.mean_kl("nope")


def test_heldout_evaluation_is_written_beside_the_lens(tiny_llama, tmp_path):
    lens = train_tuned_lens(tiny_llama, TRAIN, heldout_texts=HELD, eval_rows=30, out=tmp_path / "lens", **FAST)
    ev = LensEvaluation.load(tmp_path / "lens" / "eval.json")
    assert ev.lenses == ("logit", "least_squares", "tuned") and ev.n_rows == 30
    cfg = json.loads((tmp_path / "lens" / "config.json").read_text())
    assert set(cfg["heldout"]["kl_mean"]) == {"logit", "least_squares", "tuned"}
    assert torch.equal(load_lens(tmp_path / "lens", tiny_llama).weight, lens.weight)


def test_continued_training_compares_against_its_start_lens_by_that_name(tiny_llama, tmp_path):
    start = train_tuned_lens(tiny_llama, TRAIN, **dict(FAST, max_tokens=100))
    lens = train_tuned_lens(tiny_llama, TRAIN, init=start, heldout_texts=HELD, eval_rows=30, seed=2,
                            out=tmp_path / "lens", **dict(FAST, max_tokens=200))
    ev = LensEvaluation.load(tmp_path / "lens" / "eval.json")
    assert ev.lenses == ("logit", "start", "tuned")  # the start is a trained lens, not least squares
    assert lens.config["previous_training"] == [start.config["training"]]  # earlier stages are kept
    again = train_tuned_lens(tiny_llama, TRAIN, init=lens, **dict(FAST, max_tokens=100))
    assert [t["max_tokens"] for t in again.config["previous_training"]] == [100, 200]
    want = glt.evaluate_lens(tiny_llama, {"start": start}, HELD, max_rows=30, seed=2, progress=False)
    torch.testing.assert_close(ev.kl[1], want.kl[0])
    assert not torch.equal(lens.weight, start.weight)


# ------------------------------------------------------------------------------------------ CLI
def _cli(argv):
    from glt.cli._lens import register, run

    parser = argparse.ArgumentParser(prog="glt")
    register(parser.add_subparsers(dest="command"))
    return run(parser.parse_args(argv))


def test_cli_train_eval_export_import(tiny_root, tmp_path, capsys):
    model = str(make_tiny_folder("llama", tiny_root))
    (tmp_path / "train.txt").write_text("\n\n".join(TRAIN))
    (tmp_path / "held.jsonl").write_text("\n".join(json.dumps({"text": t}) for t in HELD))
    assert _cli(["lens", "train", "--model", model, "--texts", str(tmp_path / "train.txt"), "--out",
                 str(tmp_path / "lens"), "--max-tokens", "200", "--tokens-per-step", "100",
                 "--least-squares-tokens", "200", "--heldout-texts", str(tmp_path / "held.jsonl"),
                 "--eval-rows", "20", "--no-progress"]) == 0
    assert (tmp_path / "lens" / "eval.json").is_file()
    assert _cli(["lens", "eval", str(tmp_path / "lens"), "--model", model, "--texts", str(tmp_path / "held.jsonl"),
                 "--max-rows", "10", "--out", str(tmp_path / "ev.json"), "--no-progress"]) == 0
    assert "held-out KL" in capsys.readouterr().out
    assert _cli(["lens", "export", str(tmp_path / "lens"), str(tmp_path / "tl"), "--model", model]) == 0
    assert _cli(["lens", "import", str(tmp_path / "tl"), str(tmp_path / "back"), "--model", model]) == 0
    m = glt.load_model(model)
    assert torch.equal(load_lens(tmp_path / "back", m).weight, load_lens(tmp_path / "lens", m).weight)
    # continue training one translator of the saved lens
    assert _cli(["lens", "train", "--model", model, "--texts", str(tmp_path / "train.txt"), "--out",
                 str(tmp_path / "more"), "--init", str(tmp_path / "lens"), "--layers", "1-1",
                 "--max-tokens", "200", "--tokens-per-step", "100", "--no-progress"]) == 0
    before, after = load_lens(tmp_path / "lens", m), load_lens(tmp_path / "more", m)
    assert torch.equal(after.weight[0], before.weight[0]) and torch.equal(after.weight[2], before.weight[2])
    assert after.config["training"]["layers"] == [1]


def test_cli_parse_layers():
    from glt.cli._lens import parse_layers

    assert parse_layers("11-13") == [11, 12, 13] and parse_layers("0, 3,5-6") == [0, 3, 5, 6]
    assert parse_layers(None) is None
    with pytest.raises(glt.GltError, match="--layers must look like"):
        parse_layers("a-b")


@pytest.mark.parametrize("content,match", [("", "holds no text"), ('{"txt": 1}\n', "'text' field")])
def test_cli_bad_text_files_raise(tmp_path, content, match):
    from glt.cli._lens import read_texts

    f = tmp_path / "t.jsonl"
    f.write_text(content)
    with pytest.raises(glt.GltError, match=match):
        read_texts(str(f), None)
    with pytest.raises(glt.GltError, match="exactly one"):
        read_texts(None, None)


def test_training_some_layers_leaves_the_others_unchanged(tiny_llama):
    start = train_tuned_lens(tiny_llama, TRAIN, seed=3, **dict(FAST, max_tokens=0, optimizer="linesearch"))
    for optimizer in ("linesearch", "sgd", "adam"):
        lens = train_tuned_lens(tiny_llama, TRAIN, seed=3, init=start, layers=[1],
                                **dict(FAST, max_tokens=400, optimizer=optimizer))
        for i in (0, 2):
            assert torch.equal(lens.weight[i], start.weight[i]) and torch.equal(lens.bias[i], start.bias[i])
        assert not torch.equal(lens.weight[1], start.weight[1])
        assert lens.config["training"]["layers"] == [1]
        assert all(len(h["kl_layer"]) == 1 for h in lens.config["training"]["history"])
    # each layer's KL depends only on its own translator: a subset trains exactly as in a full run
    some = train_tuned_lens(tiny_llama, TRAIN, seed=3, init=start, layers=[1],
                            **dict(FAST, max_tokens=400, optimizer="linesearch"))
    full = train_tuned_lens(tiny_llama, TRAIN, seed=3, init=start, **dict(FAST, max_tokens=400, optimizer="linesearch"))
    assert torch.allclose(some.weight[1], full.weight[1], atol=1e-6)
    stack = glt.capture_residuals(tiny_llama, HELD)
    kl = [glt.readout(stack, x).kl_to_final.mean(1) for x in (start, some)]
    assert float(kl[1][1]) < float(kl[0][1])


@pytest.mark.parametrize("layers", [[], [2, 1], [0, 0], [-1], [3], "1", [1.0]])
def test_bad_layers_raise(tiny_llama, layers):
    with pytest.raises(glt.GltError, match="layers must be"):
        glt.train_tuned_lens(tiny_llama, TRAIN, layers=layers, **FAST)


def test_validation_positions_are_spread_over_texts(tiny_llama):
    from glt.lenses.fit._data import VAL_PER_SEQ, split_validation, validation_residuals

    seqs, bos = plan_sequences(tiny_llama, TRAIN, seq_len=256)
    train, val = split_validation(seqs, bos, 20, seed=0)
    assert len(val) == -(-20 // VAL_PER_SEQ) and len(train) + len(val) == len(seqs)
    h = validation_residuals(tiny_llama, val, bos, 20, batch_size=2)
    assert h.shape == (tiny_llama.cfg.n_layers + 1, 20, tiny_llama.cfg.d_model)
    want = []
    for s in val:  # evenly spaced read positions (BOS excluded), 8 per text at most
        st = glt.capture_residuals(tiny_llama, [s])
        _, p = read_rows(st.tokens, st.mask, bos)
        pick = p[torch.linspace(0, len(p) - 1, min(VAL_PER_SEQ, len(p))).round().long()]
        want.append(st.resid[:, 0, pick])
    assert torch.allclose(h, torch.cat(want, 1)[:, :20].float(), atol=1e-4)


@pytest.mark.parametrize("world", [1, 2, 3, 7])
@pytest.mark.parametrize("max_tokens", [None, 0, 5, 11, 1000])
def test_least_squares_rows_are_one_process_rows_dealt_over_ranks(world, max_tokens):
    from glt.lenses.fit._least_squares import _rank_share

    seqs = [[9, 1, 2, 3], [9, 4], [9, 5, 6, 7, 8], [9], [9, 1, 1]]  # 9 = BOS, not a read row
    rows = [(i, j) for i, s in enumerate(seqs) for j, t in enumerate(s) if t != 9]
    want = rows if max_tokens is None else rows[:max_tokens]
    got = []
    for rank in range(world):
        mine, caps = _rank_share(seqs, 9, max_tokens, rank, world)
        for s, cap in zip(mine, caps.tolist(), strict=True):
            i = next(k for k in range(rank, len(seqs), world) if seqs[k] is s)
            got += [(i, j) for j, t in enumerate(s) if t != 9][:cap]
    assert sorted(got) == want
