"""Early exit from a read-out: hand-built read-outs with known onsets, savings and tau curves."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import glt
from glt.studies.early_exit._run import DEFAULT_TAUS, EarlyExitResult, early_exit, saved_fraction


def make_readout(top1, max_prob, *, second=None, ranks=None, lens="logit"):
    """A Readout with k=2 from ``top1[layer][row]`` and ``max_prob[layer][row]``."""
    t = torch.tensor(top1, dtype=torch.long)
    n_layer, n_row = t.shape
    mp = torch.tensor(max_prob, dtype=torch.float32)
    sec = torch.full_like(t, 99) if second is None else torch.tensor(second, dtype=torch.long)
    ids = torch.stack([t, sec], -1)
    lps = torch.stack([mp.log(), (mp / 2).log()], -1)
    rk = torch.zeros(n_layer, n_row, 1, dtype=torch.long) if ranks is None else ranks
    labels = ("embed",) + tuple(f"resid_pre {i}" for i in range(1, n_layer - 1)) + ("final",)
    return glt.Readout(
        layer_labels=labels,
        batch_index=torch.zeros(n_row, dtype=torch.long),
        pos_index=torch.arange(n_row),
        input_ids=torch.zeros(n_row, dtype=torch.long),
        targets=t[-1][:, None],
        ranks=rk,
        target_logprobs=lps[..., :1],
        topk_ids=ids,
        topk_logprobs=lps,
        entropy=torch.zeros(n_layer, n_row),
        kl_to_final=torch.zeros(n_layer, n_row),
        lens=lens,
    )


# three rows over 4 residual indices (n_layers = 3)
TOP1 = [[1, 2, 3], [1, 1, 4], [1, 2, 4], [1, 1, 4]]
MAXP = [[0.9, 0.3, 0.1], [0.5, 0.6, 0.2], [0.5, 0.2, 0.3], [0.6, 0.8, 0.4]]


@pytest.fixture
def hand():
    return make_readout(TOP1, MAXP)


def test_onsets_and_savings(hand):
    res = early_exit(hand)
    assert res.groups == ("all",)
    assert res.row_onset.tolist() == [0, 3, 1]
    assert res.onset_hist.tolist() == [[1, 1, 0, 1]]
    assert res.onset_mean.tolist() == pytest.approx([4 / 3])
    assert res.onset_median.tolist() == pytest.approx([1.0])
    assert res.onset_saved.tolist() == pytest.approx([(1 + 0 + 2 / 3) / 3])
    assert res.n == (3,) and res.n_gold == (0,)
    assert math.isnan(float(res.final_accuracy[0]))


def test_fixed_exit_agreement_and_accuracy(hand):
    res = early_exit(hand, gold=[1, 2, -1], exit_layers=(0, 1, 2, 3))
    assert res.fixed_agreement[0].tolist() == pytest.approx([1 / 3, 1.0, 2 / 3, 1.0])
    # gold rows 0 and 1: layer 0 top-1 (1, 2) both right; final (1, 1) one right
    assert res.fixed_accuracy[0].tolist() == pytest.approx([1.0, 0.5, 1.0, 0.5])
    assert res.final_accuracy.tolist() == pytest.approx([0.5])
    assert res.n_gold == (2,)


def test_confidence_policy(hand):
    res = early_exit(hand, gold=[1, 2, -1], taus=(0.5, 0.95))
    # tau 0.5: row 0 exits at 0, row 1 at 1, row 2 never reaches it -> final layer 3
    assert res.tau_exit_mean[0].tolist() == pytest.approx([4 / 3, 3.0])
    assert res.tau_saved[0].tolist() == pytest.approx([(1 + 2 / 3 + 0) / 3, 0.0])
    assert res.tau_agreement[0].tolist() == pytest.approx([1.0, 1.0])
    assert res.tau_accuracy[0].tolist() == pytest.approx([0.5, 0.5])
    assert res.tau_early_share[0].tolist() == pytest.approx([2 / 3, 0.0])
    assert res.tau_lens_evals[0].tolist() == pytest.approx([7 / 3, 4.0])


def test_confidence_policy_min_exit_layer(hand):
    res = early_exit(hand, taus=(0.55,), min_exit_layer=1)
    # layer 0 is not checked: row 0 first reaches 0.55 at layer 3, row 1 at 1, row 2 never
    assert res.tau_exit_mean[0].tolist() == pytest.approx([7 / 3])
    assert res.tau_saved[0].tolist() == pytest.approx([2 / 9])
    assert res.tau_lens_evals[0].tolist() == pytest.approx([7 / 3])
    assert res.min_exit_layer == 1


def test_categories_split_and_all_last(hand):
    res = early_exit(hand, categories=["b", "a", "b"])
    assert res.groups == ("b", "a", "all")
    assert res.n == (2, 1, 3)
    assert res.onset_mean.tolist() == pytest.approx([0.5, 3.0, 4 / 3])
    assert res.onset_hist.tolist() == [[1, 1, 0, 0], [0, 0, 0, 1], [1, 1, 0, 1]]
    res_int = early_exit(hand, categories=torch.tensor([0, 1, 0]))
    assert res_int.groups == ("0", "1", "all")


def test_tie_uses_top1_ids_not_ranks():
    # rank 0 everywhere (a tie with the final top-1) but the listed top-1 differs at layer 1
    r = make_readout([[5], [6], [5]], [[0.5], [0.5], [0.5]])
    assert int(r.ranks.max()) == 0
    assert early_exit(r).row_onset.tolist() == [2]


def test_records_lens_and_provenance():
    r = make_readout(TOP1, MAXP, lens="tuned")
    res = early_exit(r, model_name="m", data_source="d")
    df = res.to_dataframe()
    assert res.lens == "tuned" and set(df["lens"]) == {"tuned"}
    assert set(df["model"]) == {"m"} and set(df["data_source"]) == {"d"}


def test_saved_fraction():
    assert [saved_fraction(layer, 4) for layer in range(5)] == [1.0, 0.75, 0.5, 0.25, 0.0]


def test_tables(hand):
    res = early_exit(hand, gold=[1, 2, -1], categories=["x", "y", "x"], taus=(0.5,), exit_layers=(1, 3))
    pol = res.to_dataframe()
    assert len(pol) == 3 * (2 + 2 + 1)
    assert set(pol["policy"]) == {"final", "oracle_onset", "fixed", "confidence"}
    oracle = pol[(pol.policy == "oracle_onset") & (pol.group == "all")].iloc[0]
    assert oracle["agreement"] == 1.0 and oracle["compute_saved"] == pytest.approx(5 / 9)
    ons = res.to_dataframe("onsets")
    assert len(ons) == 3 * 4 and ons.groupby("group")["share"].sum().tolist() == pytest.approx([1, 1, 1])
    rows = res.to_dataframe("rows")
    assert rows["onset"].tolist() == [0, 3, 1] and rows["group"].tolist() == ["x", "y", "x"]


def test_save_load_roundtrip(hand, tmp_path):
    res = early_exit(hand, categories=["b", "a", "b"], taus=(0.3, 0.7))
    path = res.save(tmp_path / "ee.json")
    back = EarlyExitResult.load(path)
    for name in ("groups", "n", "taus", "exit_layers", "row_group", "lens", "layer_labels"):
        assert getattr(back, name) == getattr(res, name)
    for name in ("row_onset", "onset_hist", "onset_mean", "fixed_accuracy", "tau_saved"):
        assert torch.equal(getattr(back, name), getattr(res, name)) or torch.allclose(
            getattr(back, name), getattr(res, name), equal_nan=True
        )
    assert back.to_dataframe().equals(res.to_dataframe())


def _naive(top1, maxp, gold, tau):
    """Plain loops: exit layer, agreement and correctness per row for one tau."""
    n_layer, n_row = len(top1), len(top1[0])
    out = []
    for r in range(n_row):
        exit_ = next((lay for lay in range(n_layer) if maxp[lay][r] >= tau), n_layer - 1)
        onset = min(lay for lay in range(n_layer) if all(top1[m][r] == top1[-1][r] for m in range(lay, n_layer)))
        out.append((exit_, top1[exit_][r] == top1[-1][r], top1[exit_][r] == gold[r], onset))
    return out


@settings(max_examples=25, deadline=None)
@given(
    st.integers(2, 5).flatmap(
        lambda n_layer: st.integers(1, 4).flatmap(
            lambda n_row: st.tuples(
                st.lists(
                    st.lists(st.integers(0, 2), min_size=n_row, max_size=n_row), min_size=n_layer, max_size=n_layer
                ),
                st.lists(
                    st.lists(st.sampled_from([0.1, 0.4, 0.7, 1.0]), min_size=n_row, max_size=n_row),
                    min_size=n_layer,
                    max_size=n_layer,
                ),
                st.lists(st.integers(0, 2), min_size=n_row, max_size=n_row),
            )
        )
    ),
    st.sampled_from([0.25, 0.5, 0.9]),
)
def test_matches_naive_loops(data, tau):
    top1, maxp, gold = data
    res = early_exit(make_readout(top1, maxp), gold=gold, taus=(tau,))
    ref = _naive(top1, maxp, gold, tau)
    n_layers = len(top1) - 1
    assert res.row_onset.tolist() == [o for *_, o in ref]
    assert float(res.tau_exit_mean[0, 0]) == pytest.approx(sum(e for e, *_ in ref) / len(ref))
    assert float(res.tau_saved[0, 0]) == pytest.approx(sum((n_layers - e) / n_layers for e, *_ in ref) / len(ref))
    assert float(res.tau_agreement[0, 0]) == pytest.approx(sum(a for _, a, _, _ in ref) / len(ref))
    assert float(res.tau_accuracy[0, 0]) == pytest.approx(sum(c for _, _, c, _ in ref) / len(ref))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"categories": ["a", "b"]}, "label each"),
        ({"categories": "abc"}, "sequence of one label"),
        ({"categories": ["all", "a", "b"]}, "'all'"),
        ({"gold": torch.tensor([1.0, 2.0, 3.0])}, "integer"),
        ({"gold": [1, 2]}, r"\[row\]=3"),
        ({"gold": torch.tensor([[1, 2, 3]])}, r"\[row\]=3"),
        ({"gold": [1, -2, 3]}, "-1 for no gold"),
        ({"taus": ()}, r"\(0, 1\]"),
        ({"taus": (0.0,)}, r"\(0, 1\]"),
        ({"taus": (1.5,)}, r"\(0, 1\]"),
        ({"exit_layers": (4,)}, r"\[0, 3\]"),
        ({"exit_layers": (-1,)}, r"\[0, 3\]"),
        ({"exit_layers": ()}, r"\[0, 3\]"),
        ({"min_exit_layer": 4}, "min_exit_layer"),
        ({"min_exit_layer": -1}, "min_exit_layer"),
    ],
)
def test_bad_inputs(hand, kwargs, match):
    with pytest.raises(glt.GltError, match=match):
        early_exit(hand, **kwargs)


def test_bad_readouts_and_files(hand, tmp_path):
    with pytest.raises(glt.GltError, match="no rows"):
        early_exit(make_readout([[], [], []], [[], [], []]))
    with pytest.raises(glt.GltError, match="at least 2"):
        early_exit(make_readout([[1]], [[0.5]]))
    with pytest.raises(glt.GltError, match="table must be"):
        early_exit(hand).to_dataframe("nope")
    bad = tmp_path / "x.json"
    bad.write_text('{"format": "other"}')
    with pytest.raises(glt.GltError, match="not a glt early-exit result"):
        EarlyExitResult.load(bad)
    bad.write_text('{"format": "glt.EarlyExitResult"}')
    with pytest.raises(glt.GltError, match="malformed"):
        EarlyExitResult.load(bad)
    with pytest.raises(glt.GltError, match="does not exist"):
        EarlyExitResult.load(tmp_path / "missing.json")


def test_default_taus_grid():
    assert DEFAULT_TAUS[0] == 0.05 and DEFAULT_TAUS[-1] == 0.99 and list(DEFAULT_TAUS) == sorted(DEFAULT_TAUS)


@pytest.mark.integration
def test_default_model_early_exit(default_model):
    texts = ["The capital of France is Paris, and the capital of Italy is Rome."]
    stack = glt.capture_residuals(default_model, texts)
    lens = glt.LogitLens.from_model(default_model)
    r = glt.readout(stack, lens)
    b, p = r.batch_index, r.pos_index
    nxt = p + 1
    ok = nxt < stack.lengths[b]
    gold = torch.where(ok, stack.tokens[b, nxt.clamp_max(stack.tokens.shape[1] - 1)], -1)
    halves = ["first half" if i < len(p) // 2 else "second half" for i in range(len(p))]
    res = early_exit(r, gold=gold, categories=halves, model_name="default", data_source="hand-written")
    assert res.n[-1] == int(stack.lengths.sum()) and res.n_gold[-1] == res.n[-1] - 1
    assert res.fixed_agreement[:, -1].tolist() == [1.0, 1.0, 1.0]
    assert 0.0 <= float(res.onset_saved[-1]) <= 1.0
    saved = res.tau_saved[-1]
    assert bool((saved[1:] <= saved[:-1] + 1e-6).all())  # higher tau never exits earlier
    # the logit lens decodes the input token at the embeddings with p ~ 1: every row exits there
    assert float(res.tau_exit_mean[-1, 0]) == 0.0
    late = early_exit(r, gold=gold, min_exit_layer=9, taus=(0.3, 0.5, 0.7, 0.9))
    cols = ["policy", "param", "exit_layer", "compute_saved", "agreement", "accuracy"]
    pol = res.to_dataframe()
    print(pol[pol.group == "all"][cols].to_string())
    print(late.to_dataframe().query("policy == 'confidence'")[cols].to_string())
    print("onset mean/median per group:", res.groups, res.onset_mean.tolist(), res.onset_median.tolist())
