"""Determinism: the same inputs and seed give the same results, run after run and batch size after batch size.

* run after run (same batch size, same process): every saved result is byte-identical;
* across batch sizes: a batch pads shorter sequences, so the model's matrix products have other
  shapes and the residuals differ in the last bits (~1e-5). Every integer output (ranks, top-1
  ids, onsets, buckets, choices, counts) must still be identical, and every float within 1e-4;
* seeds: a seeded choice (random cuts, row sampling, option shuffles, training data order) is
  reproduced by its seed and changes with it;
* lens training: the same seed gives a bit-identical lens; another forward batch size gives the
  same lens up to float rounding.
"""

import math
from dataclasses import fields
from pathlib import Path

import pytest
import torch

import glt
from glt.data._frequency import TokenFrequency
from glt.lenses._tuned import TunedLens
from glt.lenses.fit._evaluate import evaluate_lens
from glt.lenses.fit._least_squares import fit_least_squares
from glt.lenses.fit._train import train_tuned_lens
from glt.studies.early_exit._run import early_exit
from glt.studies.fact_recall._run import run_fact_recall
from glt.studies.guess_then_refine._run import run_guess_then_refine
from glt.studies.multiple_choice._data import MCExample
from glt.studies.multiple_choice._prompts import MCPrompt, control_prompts
from glt.studies.multiple_choice._run import run_multiple_choice
from glt.studies.part_of_speech._run import run_pos_study
from glt.studies.patching._run import patch_layers
from tests.helpers import WORDS

FREQ = TokenFrequency.from_counts(torch.randint(0, 50, (101,), generator=torch.Generator().manual_seed(0)),
                                  edges=(3, 10, 30))


def _texts(n: int, seed: int, lo: int = 1, hi: int = 60) -> list[str]:
    """Texts of very different lengths (so batches are ragged and padded)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        k = int(torch.randint(lo, hi + 1, (1,), generator=g))
        out.append(" ".join(WORDS[i] for i in torch.randint(0, len(WORDS), (k,), generator=g).tolist()))
    return out


TEXTS = _texts(7, seed=1)


def _tag(texts):
    table = {"the": "DET", "a": "DET", "of": "ADP", "in": "ADP", "to": "ADP", "city": "NOUN",
             "capital": "NOUN", "country": "NOUN", "river": "NOUN", ",": "PUNCT", ".": "PUNCT"}
    out = []
    for t in texts:
        words, pos = [], 0
        for w in t.split(" "):
            words.append((pos, w, table.get(w, "X")))
            pos += len(w) + 1
        out.append(words)
    return out


def _bytes(result, tmp_path: Path, name: str) -> bytes:
    path = tmp_path / f"{name}.json"
    result.save(path)
    return path.read_bytes()


def _mismatches(a, b, *, atol: float = 0.0, path: str = "") -> list[str]:
    """Fields that differ: integer/bool values exactly, floats within ``atol`` (NaN == NaN)."""
    if isinstance(a, torch.Tensor):
        if not isinstance(b, torch.Tensor) or a.shape != b.shape or a.dtype != b.dtype:
            return [f"{path}: shape/dtype"]
        if a.is_floating_point():
            ok = torch.isclose(a, b, rtol=atol, atol=atol, equal_nan=True).all()
        else:
            ok = torch.equal(a, b)
        return [] if bool(ok) else [f"{path}: max diff {float((a.double() - b.double()).abs().nan_to_num().max())}"]
    if isinstance(a, float) and isinstance(b, float):
        same = (math.isnan(a) and math.isnan(b)) or abs(a - b) <= atol * max(1.0, abs(a))
        return [] if same else [f"{path}: {a} != {b}"]
    if isinstance(a, dict):
        if not isinstance(b, dict) or a.keys() != b.keys():
            return [f"{path}: keys"]
        return [m for k in a for m in _mismatches(a[k], b[k], atol=atol, path=f"{path}.{k}")]
    if isinstance(a, (tuple, list)):
        if not isinstance(b, (tuple, list)) or len(a) != len(b):
            return [f"{path}: length"]
        pairs = enumerate(zip(a, b, strict=False))
        return [m for i, (x, y) in pairs for m in _mismatches(x, y, atol=atol, path=f"{path}[{i}]")]
    if hasattr(a, "__dataclass_fields__"):
        return [m for f in fields(a) for m in _mismatches(getattr(a, f.name), getattr(b, f.name), atol=atol,
                                                         path=f"{path}.{f.name}")]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


# ------------------------------------------------------------------------------ read-out
def test_readout_is_identical_across_runs_and_integer_exact_across_batch_sizes(tiny_model):
    lens = glt.LogitLens.from_model(tiny_model)
    runs = {bs: glt.readout(glt.capture_residuals(tiny_model, TEXTS, batch_size=bs), lens, top_k=4)
            for bs in (1, 3, 7)}
    again = glt.readout(glt.capture_residuals(tiny_model, TEXTS, batch_size=3), lens, top_k=4)
    assert not _mismatches(runs[3], again)
    for bs in (1, 7):
        assert not _mismatches(runs[3], runs[bs], atol=1e-4), bs
        for name in ("ranks", "topk_ids", "targets", "input_ids", "batch_index", "pos_index"):
            assert torch.equal(getattr(runs[3], name), getattr(runs[bs], name)), (bs, name)


# ------------------------------------------------------------------------------ studies
def _gtr(model, bs, seed=0, cuts="random"):
    return run_guess_then_refine(model, glt.LogitLens.from_model(model), TEXTS, frequency=FREQ, cuts=cuts,
                                 seed=seed, batch_size=bs, max_positions=None, progress=False)


def _facts(model, bs, seed=0):
    facts = [(t, a) for t, a in zip(_texts(6, seed=2, hi=30), ["paris", "the city", "a river of",
                                                                 "france", "he", "capital city"], strict=False)]
    return run_fact_recall(model, glt.LogitLens.from_model(model), facts, ks=(1, 3, 10), batch_size=bs,
                           progress=False)


def _pos(model, bs, seed=0):
    return run_pos_study(model, glt.LogitLens.from_model(model), TEXTS, tagger=_tag, construction="every",
                         min_prefix_chars=0, tags=("DET", "ADP", "NOUN"), ks=(1, 2, 10), batch_size=bs,
                         progress=False)


def _mc(model, bs, seed=0):
    # the tiny vocabulary has no "A".."D": rendered prompts with word symbols (no control run)
    items = [MCPrompt(t + " answer", ("a", "the", "of", "in"), ("paris", "city", "river", "country"), i % 4,
                      id=f"q{i}") for i, t in enumerate(_texts(5, seed=3, hi=20))]
    return run_multiple_choice(model, glt.LogitLens.from_model(model), items, shots=0, batch_size=bs,
                               progress=False)


def _patch(model, bs, seed=0):
    return patch_layers(model, _texts(2, seed=4, hi=25), _texts(2, seed=5, hi=25), target_options=[5, 6, 7],
                        source_options=[20, 21], batch_size=bs, progress=False)


def _early(model, bs, seed=0):
    r = glt.readout(glt.capture_residuals(model, TEXTS, batch_size=bs), glt.LogitLens.from_model(model))
    gold = torch.randint(-1, 101, (r.n_rows,), generator=torch.Generator().manual_seed(seed))
    return early_exit(r, gold=gold, categories=[str(int(t) % 3) for t in r.input_ids], min_exit_layer=1)


def _lens_eval(model, bs, seed=0):
    return evaluate_lens(model, {"logit": glt.LogitLens.from_model(model)}, TEXTS, max_rows=40, seed=seed,
                         batch_size=bs, progress=False)


STUDIES = {"guess_refine": _gtr, "facts": _facts, "pos": _pos, "multiple_choice": _mc, "patching": _patch,
           "early_exit": _early, "lens_eval": _lens_eval}


@pytest.mark.parametrize("study", sorted(STUDIES))
def test_study_is_byte_identical_across_runs(tiny_llama, tmp_path, study):
    run = STUDIES[study]
    assert _bytes(run(tiny_llama, 3), tmp_path, "a") == _bytes(run(tiny_llama, 3), tmp_path, "b")


@pytest.mark.parametrize("study", sorted(STUDIES))
def test_study_does_not_depend_on_batch_size(tiny_llama, study):
    run = STUDIES[study]
    ref = run(tiny_llama, 1)
    for bs in (2, 8):
        bad = _mismatches(ref, run(tiny_llama, bs), atol=1e-4)
        assert not bad, f"batch_size=1 vs {bs}: {bad[:5]}"


def test_option_shuffle_control_follows_the_seed():
    pairs = [(MCExample(f"question {i}", ("w", "x", "y", "z"), i % 4, id=f"q{i}"), ()) for i in range(6)]
    a, _ = control_prompts("mmlu", pairs, "shuffle", seed=1)
    b, _ = control_prompts("mmlu", pairs, "shuffle", seed=1)
    c, _ = control_prompts("mmlu", pairs, "shuffle", seed=2)
    assert a == b and a != c


@pytest.mark.parametrize("study", ["guess_refine", "lens_eval"])
def test_seeded_choices_follow_the_seed(tiny_llama, tmp_path, study):
    run = STUDIES[study]
    a, b = run(tiny_llama, 4, seed=1), run(tiny_llama, 4, seed=1)
    c = run(tiny_llama, 4, seed=2)
    assert _bytes(a, tmp_path, "a") == _bytes(b, tmp_path, "b")
    assert _bytes(a, tmp_path, "a") != _bytes(c, tmp_path, "c"), "the seed changes nothing"


def test_results_do_not_depend_on_torch_threads(tiny_llama):
    """The read-out splits the vocabulary over ``torch.get_num_threads()`` workers."""
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = _gtr(tiny_llama, 3)
        torch.set_num_threads(max(2, before))
        many = _gtr(tiny_llama, 3)
    finally:
        torch.set_num_threads(before)
    assert not _mismatches(one, many, atol=1e-5)
    assert torch.equal(one.top1, many.top1) and torch.equal(one.rank_final, many.rank_final)


# ------------------------------------------------------------------------------ lens training
TRAIN = _texts(24, seed=6, lo=20, hi=30)
FAST = dict(max_tokens=300, tokens_per_step=100, least_squares_tokens=200, row_chunk=32, progress=False)


def test_least_squares_fit_is_deterministic(tiny_llama):
    def fit():
        lens = TunedLens.from_model(tiny_llama)
        seqs = [glt.tokenize(tiny_llama, t)[0] for t in TRAIN]
        fit_least_squares(tiny_llama, seqs, lens=lens, max_tokens=200, progress=False)
        return lens

    a, b = fit(), fit()
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)


def test_training_seed_matters_and_batch_size_does_not(tiny_llama):
    ref = train_tuned_lens(tiny_llama, TRAIN, seed=4, batch_size=8, **FAST)
    other_seed = train_tuned_lens(tiny_llama, TRAIN, seed=5, batch_size=8, **FAST)
    assert not torch.equal(ref.weight, other_seed.weight)
    small = train_tuned_lens(tiny_llama, TRAIN, seed=4, batch_size=2, **FAST)
    torch.testing.assert_close(small.weight, ref.weight, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(small.bias, ref.bias, rtol=1e-4, atol=1e-5)
    rows = [h["rows"] for h in ref.config["training"]["history"]]
    assert rows == [h["rows"] for h in small.config["training"]["history"]]
