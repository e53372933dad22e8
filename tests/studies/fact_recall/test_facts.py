"""Fact recall: teacher-forced answer-token onsets (glt.studies.fact_recall._run)."""

import json
import math

import pytest
import torch

import glt
from glt.studies.fact_recall._data import Fact, load_glt_facts
from glt.studies.fact_recall._run import (
    SKIP_CONTEXT,
    SKIP_EMPTY,
    SKIP_LONG,
    SKIP_NO_PROMPT,
    FactRecallResult,
    _prepare,
    join_answer,
    run_fact_recall,
)
from tests.helpers import hand_built_fact_result

# words of the tiny models' word-level vocabulary (unknown words become <unk>)
TINY_FACTS = [
    Fact("the capital of france is", "paris", relation="capital"),
    Fact("the river of the country is", "the river", relation="river"),
    Fact("she was in the city of", "paris or the", relation="city"),
    Fact("it is", "not", relation="x"),
    Fact("he had a", "city which was", relation="x"),
]


class WordTok:
    """A whitespace tokenizer over a fixed vocabulary, optionally adding a BOS id."""

    def __init__(self, bos: bool = True):
        self.bos = bos
        self.vocab: dict[str, int] = {"<bos>": 0}

    def __call__(self, text, add_special_tokens=True):
        ids = [self.vocab.setdefault(w, len(self.vocab)) for w in text.split()]
        return {"input_ids": ([0] if (self.bos and add_special_tokens) else []) + ids}


def test_join_answer_leading_space_rule():
    p = "The capital of France is"
    assert join_answer(p, "Paris") == join_answer(p, " Paris") == join_answer(p, " Paris ")
    assert join_answer(p, "Paris") == "The capital of France is Paris"
    assert join_answer(p + " ", "Paris") == "The capital of France is Paris"
    assert join_answer("Answer:\n", " Paris") == "Answer:\nParis"


def test_prepare_skips_every_bad_fact_with_its_reason():
    facts = [
        Fact("a b", "c"),  # fine, 1 answer token
        Fact("a b", ""),  # empty answer
        Fact("a b", "   "),  # whitespace answer
        Fact("a b", "c d e f"),  # 4 tokens > 3
        Fact(" ".join(["w"] * 20), "c"),  # 21 tokens + BOS > n_ctx 20
        Fact("a", "c d e"),  # fine, 3 tokens
    ]
    items, skipped = _prepare(WordTok(), facts, n_ctx=20, max_answer_tokens=3)
    assert [it.index for it in items] == [0, 5]
    assert skipped == [(1, SKIP_EMPTY), (2, SKIP_EMPTY), (3, SKIP_LONG), (4, SKIP_CONTEXT)]
    assert items[1].start == 2 and len(items[1].ids) == 5
    # without a BOS an empty prompt leaves no position to predict the first answer token
    items, skipped = _prepare(WordTok(bos=False), [Fact("", "c"), Fact("a", "c")], 20, 3)
    assert skipped == [(0, SKIP_NO_PROMPT)] and [it.index for it in items] == [1]


def test_prepare_same_tokens_with_or_without_leading_space():
    tok = WordTok()
    a, _ = _prepare(tok, [Fact("x y", "z w"), Fact("x y", " z w"), Fact("x y ", "z w ")], 50, 3)
    assert a[0].ids == a[1].ids == a[2].ids and a[0].start == a[1].start == a[2].start == 3


def test_hand_built_onsets_per_length_position_and_outcome():
    r = hand_built_fact_result()  # A (1 token, correct), B (pos 0 wrong, pos 1 right), C (wrong)
    # onsets [k, row] for k = 1 and k = 10 (-1 = never inside)
    assert r.first.tolist() == [[1, -1, 2, -1], [0, 0, 0, 1]]
    assert r.stable.tolist() == [[3, -1, 2, -1], [0, 2, 0, 3]]
    assert r.row_length.tolist() == [1, 2, 2, 1]
    assert r.answer_correct.tolist() == [True, False, False]
    c = r.curve(1, 0, True)
    assert c.n == 1 and c.median == (1.0, 0.0)
    assert r.curve(1, 0, False).n == 1 and r.curve(2, 1, False) is None
    assert r.curve(2, 1, True, "stable").median == (2.0, 0.0)
    b0 = r.curve(2, 0, False, "stable")
    assert b0.n == 1 and b0.n_crossed == (0, 1) and math.isnan(b0.median[0]) and b0.median[1] == 2.0
    s = r.summary(ks=(1, 10)).set_index(["length", "position", "outcome"])
    assert s.loc[(2, 1, "incorrect"), "n"] == 0
    assert math.isnan(s.loc[(2, 0, "incorrect"), "median_first_k1"])
    assert s.loc[(2, 0, "incorrect"), "n_crossed_first_k1"] == 0
    assert s.loc[(1, 0, "correct"), "median_stable_k1"] == 3.0
    assert s["n"].sum() == 4 and r.skip_counts == {SKIP_LONG: 1}
    assert r.fact_index == (0, 1, 3) and r.answer_tokens == ((2,), (3, 4), (5,))
    df = r.to_dataframe()
    assert set(df["outcome"]) == {"correct", "incorrect"} and len(df) == 2 * 2 * 4
    with pytest.raises(glt.GltError, match="grid"):
        r.summary(ks=(3,))


def _naive_ranks(model, lens, ids, start, j):
    """Rank at every layer of answer token j, from a separate forward pass over the prefix."""
    prefix = list(ids[: start + j])
    stack = glt.capture_residuals(model, [prefix])
    gold = ids[start + j]
    out = []
    for layer in range(stack.resid.shape[0]):
        logits = lens(stack.resid[layer, 0, -1], layer)
        out.append(int((logits > logits[gold]).sum()))
    with torch.no_grad():
        final_top1 = int(model(torch.tensor([prefix]))[0, -1].argmax())
    return out, final_top1


def test_teacher_forcing_matches_a_naive_per_token_loop(tiny_model):
    lens = glt.LogitLens.from_model(tiny_model)
    r = run_fact_recall(tiny_model, lens, TINY_FACTS, ks=(1, 5), batch_size=2, progress=False)
    assert r.skipped == () and len(r.facts) == 5
    assert int(r.row_fact.shape[0]) == 1 + 2 + 3 + 1 + 3
    items, _ = _prepare(tiny_model.tokenizer, TINY_FACTS, 67, 3)
    row = 0
    for f, it in enumerate(items):
        for j in range(len(it.ids) - it.start):
            naive, final_top1 = _naive_ranks(tiny_model, lens, it.ids, it.start, j)
            assert r.row_fact[row] == f and r.row_position[row] == j
            assert r.gold[row] == it.ids[it.start + j] == r.tracked[row]
            assert r.ranks[:, row].tolist() == naive
            assert bool(r.correct[row]) == (final_top1 == it.ids[it.start + j])
            row += 1
    # batch size does not change anything
    r1 = run_fact_recall(tiny_model, lens, TINY_FACTS, ks=(1, 5), batch_size=5, progress=False)
    assert torch.equal(r1.ranks, r.ranks) and torch.equal(r1.correct, r.correct)


def test_tuned_lens_matches_the_naive_loop(tiny_llama):
    from glt.lenses._tuned import TunedLens

    lens = TunedLens.from_model(tiny_llama)
    torch.manual_seed(0)
    with torch.no_grad():  # non-trivial translators, so the tuned lens differs from the logit lens
        lens.weight.normal_(0.0, 0.2)
        lens.bias.normal_(0.0, 0.2)
    r = run_fact_recall(tiny_llama, lens, TINY_FACTS[:3], ks=(1,), progress=False)
    assert r.lens == "tuned"
    items, _ = _prepare(tiny_llama.tokenizer, TINY_FACTS[:3], 67, 3)
    row = 0
    for it in items:
        for j in range(len(it.ids) - it.start):
            assert r.ranks[:, row].tolist() == _naive_ranks(tiny_llama, lens, it.ids, it.start, j)[0]
            row += 1
    logit = run_fact_recall(tiny_llama, glt.LogitLens.from_model(tiny_llama), TINY_FACTS[:3],
                            ks=(1,), progress=False)
    assert torch.equal(logit.ranks[-1], r.ranks[-1]) and not torch.equal(logit.ranks, r.ranks)


def test_leading_space_gives_the_same_result(tiny_llama):
    lens = glt.LogitLens.from_model(tiny_llama)
    facts = [("the capital of france is", "paris city"), ("the capital of france is", " paris city"),
             Fact("the capital of france is ", "paris city ")]
    r = run_fact_recall(tiny_llama, lens, facts, ks=(1,), progress=False)
    c = r.ranks  # two answer tokens per fact
    assert c.shape[1] == 6 and r.answer_tokens[0] == r.answer_tokens[1] == r.answer_tokens[2]
    assert torch.equal(c[:, 0:2], c[:, 2:4]) and torch.equal(c[:, 0:2], c[:, 4:6])
    assert r.sources == ("user", "")  # pairs are tagged "user"; the Fact has no source


def test_skips_are_counted_and_reported(tiny_llama):
    lens = glt.LogitLens.from_model(tiny_llama)
    facts = [Fact("the city is", "paris"), Fact("the city is", " "),
             Fact("the city is", "a b c d"), Fact(" ".join(["the"] * 70), "paris")]
    r = run_fact_recall(tiny_llama, lens, facts, progress=False)
    assert r.n_input == 4 and r.fact_index == (0,)
    assert r.skipped == ((1, SKIP_EMPTY), (2, SKIP_LONG), (3, SKIP_CONTEXT))
    with pytest.raises(glt.GltError, match="none of the 2 facts"):
        run_fact_recall(tiny_llama, lens, facts[1:3], progress=False)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"facts": []}, "facts is empty"),
        ({"facts": "the city is paris"}, "facts must be a list"),
        ({"facts": [123]}, r"facts\[0\] must be"),
        ({"facts": [("a", "b", "c")]}, r"facts\[0\] must be"),
        ({"ks": []}, "ks must be"),
        ({"ks": [0, 1]}, "ks must hold"),
        ({"max_answer_tokens": 0}, "max_answer_tokens"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_bad_inputs_raise(tiny_llama, kwargs, match):
    lens = glt.LogitLens.from_model(tiny_llama)
    kwargs = {"facts": [("the city is", "paris")], **kwargs}
    with pytest.raises(glt.GltError, match=match):
        run_fact_recall(tiny_llama, lens, progress=False, **kwargs)


def test_incompatible_lens_raises(tiny_llama):
    lens = glt.LogitLens(glt.LogitLens.from_model(tiny_llama).unembed, 5)
    with pytest.raises(glt.GltError, match="n_layers=5"):
        run_fact_recall(tiny_llama, lens, [("the city is", "paris")], progress=False)


def test_save_load_round_trip(tiny_llama, tmp_path):
    lens = glt.LogitLens.from_model(tiny_llama)
    r = run_fact_recall(tiny_llama, lens, TINY_FACTS + [Fact("a", "")], progress=False)
    path = r.save(tmp_path / "facts.json")
    back = FactRecallResult.load(path)
    for name in ("ranks", "top1", "first", "stable", "correct", "row_fact", "logprobs"):
        assert torch.equal(getattr(back, name), getattr(r, name)), name
    assert back.facts == r.facts and back.skipped == r.skipped and back.ks == r.ks
    assert back.to_dataframe().equals(r.to_dataframe())
    assert len(r.token_dataframe()) == int(r.row_fact.shape[0])
    (tmp_path / "bad.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(glt.GltError, match="not a glt fact-recall result"):
        FactRecallResult.load(tmp_path / "bad.json")
    (tmp_path / "broken.json").write_text('{"format": "glt.FactRecallResult/1", "ks": [1]}')
    with pytest.raises(glt.GltError, match="malformed"):
        FactRecallResult.load(tmp_path / "broken.json")


@pytest.mark.integration
def test_default_model_thirty_facts(default_model, tmp_path):
    facts = load_glt_facts()
    # ten facts of each answer length (the set has more than ten of each)
    tok = default_model.tokenizer
    items, _ = _prepare(tok, facts, int(default_model.cfg.n_ctx), 3)
    by_len: dict[int, list[Fact]] = {1: [], 2: [], 3: []}
    for it in items:
        n = len(it.ids) - it.start
        if len(by_len[n]) < 10:
            by_len[n].append(it.fact)
    subset = by_len[1] + by_len[2] + by_len[3]
    lens = glt.LogitLens.from_model(default_model)
    r = run_fact_recall(default_model, lens, subset, progress=False)
    assert len(r.facts) == 30 and r.skipped == () and r.model == "gemma-3-270m"
    assert int(r.row_fact.shape[0]) == 10 * (1 + 2 + 3)
    s = r.summary()
    assert s["n"].sum() == 60 and set(s["length"]) == {1, 2, 3}
    assert int(r.correct.sum()) >= 30  # the model knows most of these facts
    # a correct token is the final top-1: rank 0 at the last layer, first crossing k=1 exists
    assert (r.ranks[-1][r.correct] == 0).all() and (r.first[0][r.correct] >= 0).all()
    assert (r.stable[0][r.correct] >= 0).all() and (r.stable[0][~r.correct] == -1).all()
    # " Paris" vs "Paris": tokenised the same, and the unspaced variant is a different token
    paris = _prepare(tok, [Fact("The capital of France is", " Paris"),
                           Fact("The capital of France is", "Paris")], 100, 3)[0]
    assert paris[0].ids == paris[1].ids and paris[0].alt_first != paris[0].ids[paris[0].start]
    assert FactRecallResult.load(r.save(tmp_path / "r.json")).summary().equals(s)
