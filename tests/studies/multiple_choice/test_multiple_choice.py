"""Multiple choice over depth: hand-built measures, a naive reference on tiny models, bad inputs."""

import dataclasses
import math

import pytest
import torch

import glt
import glt.studies.multiple_choice._data as mcd
from glt import GltError
from glt.studies.multiple_choice._data import MCExample
from glt.studies.multiple_choice._prompts import MCPrompt
from glt.studies.multiple_choice._result import MultipleChoiceResult
from glt.studies.multiple_choice._run import run_multiple_choice

LABELS = ("embed", "resid_pre 1", "resid_pre 2", "resid_pre 3", "final")


def _hand_built(**kw) -> MultipleChoiceResult:
    """5 layers, 2 items, 3 options with format and decision onsets known by construction."""
    ranks = torch.tensor([
        [[500, 20, 3000], [1, 0, 2]],
        [[4, 12, 8], [1, 0, 2]],
        [[1, 2, 0], [1, 0, 2]],
        [[30, 1, 0], [1, 0, 2]],
        [[0, 2, 1], [1, 0, 2]],
    ])
    logp = torch.tensor([
        [[-5.0, -3.0, -9.0], [-1.0, -2.0, -3.0]],
        [[-2.0, -4.0, -3.0], [-3.0, -1.0, -2.0]],
        [[-3.0, -2.5, -1.0], [-3.0, -1.0, -2.0]],
        [[-6.0, -2.0, -0.5], [-3.0, -1.0, -2.0]],
        [[-0.5, -3.0, -2.0], [-3.0, -1.0, -2.0]],
    ])
    fields = dict(
        task="mmlu", model="hand", lens="logit", source="hand-built", n_shots=0, top_k_format=10,
        symbols_mode="original", layer_labels=LABELS, item_ids=("i0", "i1"),
        symbols=(("A", "B", "C"), ("A", "B", "C")), multi_token_symbols=(),
        option_tokens=torch.tensor([[11, 12, 13], [11, 12, 13]]),
        content_tokens=torch.tensor([[21, 22, 23], [24, 25, 26]]),
        gold=torch.tensor([0, 2]), option_ranks=ranks, option_logprobs=logp,
        content_ranks=ranks + 7, content_logprobs=logp - 1.0, final_top1=torch.tensor([11, 99]),
        skipped=(("i2", "too long"),),
    )
    fields.update(kw)
    return MultipleChoiceResult(**fields)


def test_hand_built_measures():
    r = _hand_built()
    assert r.choice.tolist() == [0, 1] and r.correct.tolist() == [True, False] and r.accuracy == 0.5
    assert r.layer_choice[:, 0].tolist() == [1, 0, 2, 2, 0]
    assert r.decision_rank[:, 0].tolist() == [1, 0, 2, 2, 0]
    assert r.decision_rank[:, 1].tolist() == [1, 0, 0, 0, 0]
    assert r.format_rank[:, 0].tolist() == [3000, 12, 2, 30, 2]
    assert r.top1_is_option.tolist() == [True, False]
    torch.testing.assert_close(r.option_mass[-1, 0], torch.tensor([-0.5, -3.0, -2.0]).exp().sum())
    assert {k: v.tolist() for k, v in r.onsets().items()} == {
        "format_first": [2, 0], "format_stable": [4, 0],
        "decision_first": [1, 1], "decision_stable": [4, 1]}
    loose = dataclasses.replace(r, top_k_format=20).onsets()
    assert loose["format_first"].tolist() == [1, 0] and loose["format_stable"].tolist() == [4, 0]
    assert dataclasses.replace(r, top_k_format=2).onsets()["format_first"].tolist() == [-1, -1]


def test_hand_built_tables():
    r = _hand_built()
    items = r.item_table()
    assert items["decision_changes"].tolist() == [3, 1]
    assert items["format_entries"].tolist() == [2, 0] and items["format_exits"].tolist() == [1, 0]
    assert items["gold_symbol"].tolist() == ["A", "C"] and items["choice_symbol"].tolist() == ["A", "B"]
    df = r.to_dataframe()
    assert len(df) == 5 * 2 * 3 and df["is_choice"].sum() == 5 * 2 and df["is_gold"].sum() == 5 * 2
    s = r.summary().set_index("group")
    assert s.loc["all", "n"] == 2 and s.loc["correct", "n"] == 1 and s.loc["all", "n_skipped"] == 1
    assert s.loc["all", "format_first_median"] == 1.0 and s.loc["correct", "format_stable_median"] == 4.0
    assert s.loc["incorrect", "top1_is_option"] == 0.0
    c = r.curves().set_index(["group", "measure", "layer"])
    assert c.loc[("all", "decision_agree", 0), "mean"] == 0.0
    assert c.loc[("all", "decision_agree", 1), "mean"] == 1.0
    assert c.loc[("correct", "format_rank", 0), "median"] == 3000 and c.loc[("correct", "format_rank", 0), "n"] == 1
    assert c.loc[("all", "gold_prob", 4), "median"] == pytest.approx(
        (torch.tensor(-0.5).exp() + torch.tensor(-2.0).exp()).item() / 2)
    curves = {(x.group, x.kind): x for x in r.format_onset_curves(ks=(1, 10))}
    assert curves[("all", "first")].n_crossed == (0, 2)
    inc = curves[("incorrect", "stable")]
    assert math.isnan(inc.median[0]) and inc.median[1] == 0.0 and inc.n_crossed == (0, 1)


def test_empty_group_and_save_load(tmp_path):
    r = _hand_built(control=_hand_built(symbols_mode="relabel W,X,Y"))
    s = r.summary()
    assert list(s["run"]) == ["main"] * 3 + ["control"] * 3
    path = r.save(tmp_path / "mc.json")
    back = MultipleChoiceResult.load(path)
    assert back.control is not None and back.control.symbols_mode == "relabel W,X,Y"
    assert back.skipped == (("i2", "too long"),) and back.symbols == r.symbols
    for f in ("option_ranks", "option_logprobs", "content_ranks", "final_top1", "gold"):
        assert torch.equal(getattr(back, f), getattr(r, f))
    assert back.summary().equals(s)
    (tmp_path / "bad.json").write_text('{"kind": "other"}')
    with pytest.raises(GltError, match="MultipleChoiceResult"):
        MultipleChoiceResult.load(tmp_path / "bad.json")


SYMS = ("paris", "city", "river")
PROMPTS = [
    MCPrompt("the capital of france is", SYMS, ("paris", "city", "country"), 0, "p0"),
    MCPrompt("he was in the city of the", SYMS, ("paris", "city", "country"), 1, "p1"),
    MCPrompt("she has a river", SYMS, ("paris", "city", "country"), 2, "p2"),
]


def _naive(model, prompt: MCPrompt):
    """Full-vocabulary logits of every layer at the last position, by a plain loop."""
    lens = glt.LogitLens.from_model(model)
    stack = glt.capture_residuals(model, [prompt.text])
    with torch.no_grad():
        logits = torch.stack([lens(stack.resid[i, 0, -1:], i)[0] for i in range(stack.n_layers + 1)])
        model_logits = model(stack.tokens)[0, -1]
    return logits.float(), model_logits.float()


def test_tiny_run_matches_naive_reference(tiny_model):
    lens = glt.LogitLens.from_model(tiny_model)
    long = MCPrompt(" ".join(["the"] * 80), SYMS, SYMS, 0, "long")
    clash = MCPrompt("the city", ("Alpha", "Beta", "river"), SYMS, 0, "clash")
    r = run_multiple_choice(tiny_model, lens, [*PROMPTS, long, clash], batch_size=2, progress=False)
    assert r.item_ids == ("p0", "p1", "p2") and r.control is None
    assert [s[0] for s in r.skipped] == ["long", "clash"]
    assert "context" in r.skipped[0][1] and "share a last token" in r.skipped[1][1]
    assert r.option_ranks.shape == (tiny_model.cfg.n_layers + 1, 3, 3)
    tok = glt.tokenize(tiny_model, [" paris", " city", " river", " country"], prepend_bos=False)
    ids = [t[-1] for t in tok]
    assert r.option_tokens[0].tolist() == ids[:3] and r.content_tokens[0].tolist() == ids[:2] + ids[3:]
    for i, p in enumerate(PROMPTS):
        logits, model_logits = _naive(tiny_model, p)
        targets = r.option_tokens[i]
        ranks = (logits[:, None, :] > logits[:, targets, None]).sum(-1)
        assert torch.equal(r.option_ranks[:, i], ranks)
        torch.testing.assert_close(r.option_logprobs[:, i], logits.log_softmax(-1)[:, targets], atol=1e-4, rtol=1e-4)
        final = model_logits.log_softmax(-1)[targets]
        torch.testing.assert_close(r.option_logprobs[-1, i], final, atol=1e-4, rtol=1e-4)
        assert int(r.choice[i]) == int(final.argmax())
    one = run_multiple_choice(tiny_model, lens, PROMPTS, batch_size=1, progress=False)
    assert torch.equal(one.option_ranks, r.option_ranks)
    torch.testing.assert_close(one.option_logprobs, r.option_logprobs, atol=1e-5, rtol=1e-5)


@pytest.fixture
def tiny_mmlu_symbols(monkeypatch):
    """Make the MMLU symbols words the tiny tokenizer knows."""
    spec = dataclasses.replace(mcd._TASKS["mmlu"], symbols=("the", "a", "of", "and"))
    monkeypatch.setitem(mcd._TASKS, "mmlu", spec)


def test_tiny_permutation_controls(tiny_llama, tiny_mmlu_symbols):
    lens = glt.LogitLens.from_model(tiny_llama)
    items = [MCExample("the capital of france", ("paris", "city", "river", "country"), i % 4, id=f"e{i}")
             for i in range(3)]
    r = run_multiple_choice(tiny_llama, lens, items, shots=0, permute_symbols="shuffle", progress=False)
    c = r.control
    assert c is not None and c.symbols_mode == "shuffle (seed 0)" and r.symbols_mode == "original"
    assert c.item_ids == r.item_ids and c.symbols == r.symbols
    idx = torch.arange(3)
    assert torch.equal(c.content_tokens[idx, c.gold], r.content_tokens[idx, r.gold])  # content follows
    assert not bool((c.gold == r.gold).any())  # ... to another symbol
    rel = run_multiple_choice(tiny_llama, lens, items, shots=0, permute_symbols=["he", "she", "it", "they"],
                              progress=False)
    assert rel.control.symbols_mode == "relabel he,she,it,they"
    assert torch.equal(rel.control.gold, r.gold) and torch.equal(rel.control.content_tokens, r.content_tokens)
    assert not torch.equal(rel.control.option_tokens, r.option_tokens)
    assert torch.equal(rel.option_ranks, r.option_ranks)  # the main run does not depend on the control


def _bad(model, items=PROMPTS, **kw):
    return run_multiple_choice(model, glt.LogitLens.from_model(model), items, progress=False, **kw)


BAD = [
    (dict(task="squad"), "task must be one of"),
    (dict(n_items=0), "n_items"),
    (dict(shots=-1), "shots"),
    (dict(shots=6), "<= 5"),
    (dict(top_k_format=0), "top_k_format"),
    (dict(batch_size=0), "batch_size"),
    (dict(permute_symbols="rotate"), "permute_symbols"),
    (dict(items=[]), "non-empty"),
    (dict(items="the city"), "non-empty"),
    (dict(items={"question": "q"}), "non-empty"),
    (dict(items=[3]), "MCExample"),
    (dict(items=[{"question": "q", "choices": ["a", "b", "c"], "answer": 0}]), "exactly 4"),
    (dict(items=[{"question": "q", "choices": ["a", "b", "c", "d"], "answer": 7}]), "answer 7"),
    (dict(permute_symbols=True), "already rendered"),
    (dict(items=[PROMPTS[0], MCPrompt("the city", ("paris", "city"), ("a", "b"), 0)]), "numbers of options"),
    (dict(items=[MCPrompt("the city", ("Alpha", "Beta"), ("a", "b"), 0)]), "all 1 items were skipped"),
]


@pytest.mark.parametrize("kw, match", BAD)
def test_bad_inputs_raise(tiny_llama, kw, match):
    with pytest.raises(GltError, match=match):
        _bad(tiny_llama, **kw)


@pytest.mark.integration
def test_default_model_mmlu(default_model, tmp_path):
    lens = glt.LogitLens.from_model(default_model)
    r = run_multiple_choice(default_model, lens, task="mmlu", n_items=8, shots=1, permute_symbols=True,
                            progress=False)
    assert r.n_items + len(r.skipped) == 8 and r.skipped == ()
    assert r.option_ranks.shape == (19, 8, 4) and r.multi_token_symbols == ()
    assert r.control.symbols_mode == "relabel W,X,Y,Z" and r.control.n_items == 8
    assert "mmlu_no_train" in r.source and "1 shots" in r.source
    assert float(r.top1_is_option.float().mean()) >= 0.5  # the answer format is followed
    ons = r.onsets()
    lp = r.option_logprobs.tolist()  # [layer][item][option]: the decision onsets recomputed by hand
    for i in range(8):
        agree = [max(range(4), key=lambda o, layer=layer: lp[layer][i][o]) == int(r.choice[i]) for layer in range(19)]
        assert agree[-1], "the final layer's choice is the result's choice"
        assert int(ons["decision_first"][i]) == agree.index(True)
        assert int(ons["decision_stable"][i]) == min(j for j in range(19) if all(agree[j:]))
    assert MultipleChoiceResult.load(r.save(tmp_path / "r.json")).summary().equals(r.summary())


@pytest.mark.integration
def test_default_model_sst2(default_model):
    lens = glt.LogitLens.from_model(default_model)
    r = run_multiple_choice(default_model, lens, task="sst2", n_items=8, shots=2, progress=False)
    assert r.n_items == 8 and torch.equal(r.option_tokens, r.content_tokens)
    assert r.symbols[0] == ("negative", "positive")
    assert r.accuracy >= 0.5  # gold labels line up with the symbols
