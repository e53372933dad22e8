"""Reliability: property and fuzz tests over the studies, atomic writes, and a real-kill resume.

Every study and analysis is driven with generated inputs on the tiny models (fp32, bf16 and fp16
weights; sequence lengths 1 to the context of 67 and beyond it; batch sizes 1-5; ragged batches
so that padding is exercised). Each run must either return a result whose numbers are finite
wherever a number is defined (and that round-trips through its JSON file) or raise `GltError`:
no other exception may escape. The read-out's own property tests live in ``test_readout.py``.

The public functions check their annotated arguments themselves (``glt.core._check``), so an argument
of the wrong type raises `GltError` for users; under pytest, jaxtyping's import hook may check an
internal signature first and raise its ``TypeCheckError`` (also accepted). To see exactly what
users get, run the junk tests with the plugin options cleared:
``python -m pytest tests/test_reliability.py -k junk -o addopts=""``.
"""

import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import fields
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jaxtyping import TypeCheckError

import glt
from glt import (  # the public (argument-checked) functions, as users call them
    aggregate_onsets,
    compute_onsets,
    early_exit,
    patch_layers,
    run_fact_recall,
    run_guess_then_refine,
    run_multiple_choice,
    run_pos_study,
)
from glt.core._io import atomic_write_bytes, read_json, write_json
from glt.data._frequency import TokenFrequency
from glt.decoding._onsets import K_GRID, OnsetCurve
from glt.studies.early_exit._run import EarlyExitResult
from glt.studies.fact_recall._run import FactRecallResult
from glt.studies.guess_then_refine._result import GuessRefineResult
from glt.studies.multiple_choice._prompts import MCPrompt
from glt.studies.multiple_choice._result import MultipleChoiceResult
from glt.studies.part_of_speech._run import PosResult
from glt.studies.patching._run import PatchingResult
from tests.helpers import WORDS, make_tiny_folder, run_bounded, wait_bounded

VOCAB, N_CTX, N_LAYERS = 101, 67, 3
FAST = settings(max_examples=20, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
PURE = settings(max_examples=50, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# frequency table over the tiny vocabulary: ranks follow a fixed random order
FREQ = TokenFrequency.from_counts(
    torch.randint(0, 50, (VOCAB,), generator=torch.Generator().manual_seed(0)), edges=(3, 10, 30)
)


@pytest.fixture(scope="module")
def models(tiny_root):
    """The tiny llama (RoPE, RMSNorm) with fp32, bf16 and fp16 weights, and the tiny gpt2."""
    folder = make_tiny_folder("llama", tiny_root)
    out = {name: glt.load_model(str(folder), dtype=dt) for name, dt in DTYPES.items()}
    out["gpt2"] = glt.load_model(str(make_tiny_folder("gpt2", tiny_root)))
    out["gemma3"] = glt.load_model(str(make_tiny_folder("gemma3", tiny_root)))
    return out


# ------------------------------------------------------------------------------ strategies
word = st.sampled_from(WORDS + ["zebra", "Quux", ",", ".", "paris", "France"])
text = st.lists(word, min_size=0, max_size=75).map(" ".join)
ids = st.lists(st.integers(0, VOCAB - 1), min_size=0, max_size=75)
model_key = st.sampled_from(["fp32", "bf16", "fp16", "gpt2", "gemma3"])


def _finite(t: torch.Tensor) -> bool:
    return bool(torch.isfinite(t).all())


def _same(a, b) -> bool:
    """Equality for result fields: tensors exactly (NaN == NaN), containers recursively."""
    if isinstance(a, torch.Tensor):
        return (isinstance(b, torch.Tensor) and a.shape == b.shape and a.dtype == b.dtype
                and bool((a == b).logical_or(a.isnan() & b.isnan() if a.is_floating_point() else a == b).all()))
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (tuple, list)):
        return isinstance(b, (tuple, list)) and len(a) == len(b) and all(map(_same, a, b))
    if hasattr(a, "__dataclass_fields__"):
        return type(a) is type(b) and all(_same(getattr(a, f.name), getattr(b, f.name)) for f in fields(a))
    return a == b


def _round_trip(result, cls, tmp_root: Path):
    path = tmp_root / f"{cls.__name__}-{random.randrange(10**9)}.json"
    result.save(path)
    back = cls.load(path)
    path.unlink()
    bad = [f.name for f in fields(result) if not _same(getattr(result, f.name), getattr(back, f.name))]
    assert not bad, f"{cls.__name__} fields changed by save/load: {bad}"


def _check_curves(curves) -> None:
    for c in curves:
        assert len(c.n_crossed) == len(c.ks)
        for i, n_c in enumerate(c.n_crossed):
            assert 0 <= n_c <= c.n
            stats = (c.mean[i], c.median[i], c.q25[i], c.q75[i])
            if n_c:
                assert all(math.isfinite(s) for s in stats), c
                assert c.q25[i] <= c.median[i] <= c.q75[i]
            else:
                assert all(math.isnan(s) for s in stats), c


# ------------------------------------------------------------------------------ onsets
def _naive_first(col: list[int], k: int) -> int:
    return next((i for i, r in enumerate(col) if r < k), -1)


def _naive_stable(col: list[int], k: int) -> int:
    for i in range(len(col)):
        if all(r < k for r in col[i:]):
            return i
    return -1


@PURE
@given(st.integers(1, 12), st.integers(0, 9), st.data())
def test_onsets_match_naive_loops_and_aggregate_finitely(n_layer, n, data):
    ranks = torch.tensor(data.draw(st.lists(st.lists(st.integers(0, 20_000), min_size=n, max_size=n),
                                            min_size=n_layer, max_size=n_layer)), dtype=torch.long)
    ranks = ranks.reshape(n_layer, n)
    ks = tuple(sorted(set(data.draw(st.lists(st.sampled_from(K_GRID), min_size=1, max_size=5)))))
    o = compute_onsets(ranks, ks)
    cols = ranks.T.tolist()
    for ki, k in enumerate(ks):
        assert o.first[ki].tolist() == [_naive_first(c, k) for c in cols]
        assert o.stable[ki].tolist() == [_naive_stable(c, k) for c in cols]
    if n:  # a larger k never makes an onset later
        assert bool((o.first[1:] <= o.first[:-1]).logical_or(o.first[:-1] == -1).all())
        groups = data.draw(st.lists(st.sampled_from(["a", "b", "c"]), min_size=n, max_size=n))
        curves = aggregate_onsets(o, groups)
        _check_curves(curves)
        assert sum(c.n for c in curves if c.kind == "first") == n
        for c in curves:  # JSON (NaN -> null) and back
            assert _same(OnsetCurve.from_dict(json.loads(json.dumps(_nan_to_none(c.to_dict())))), c)


def _nan_to_none(d):
    return {k: [None if isinstance(x, float) and math.isnan(x) else x for x in v] if isinstance(v, tuple) else v
            for k, v in d.items()}


junk = st.one_of(
    st.integers(-3, 3), st.floats(allow_nan=True), st.text(max_size=4), st.binary(max_size=3),
    st.lists(st.one_of(st.integers(-2, 200), st.text(max_size=2), st.none()), max_size=4),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=2), st.just(object()),
    st.builds(torch.zeros, st.integers(0, 3)), st.builds(lambda: torch.zeros(2, 0, 3)),
)


def _only_glt_error(fn, *args, **kw):
    """Call ``fn``; GltError is the expected refusal. Under pytest, jaxtyping also checks the
    declared annotations (``Int[Tensor, "layer n"]`` ...) before glt sees a value: such a
    TypeCheckError means the argument's type contradicts the signature, so it is accepted too."""
    try:
        return fn(*args, **kw)
    except (glt.GltError, TypeCheckError):
        return None


@PURE
@given(junk, junk)
def test_onsets_junk_raises_only_glt_error(ranks, ks):
    _only_glt_error(compute_onsets, ranks, ks)
    _only_glt_error(compute_onsets, torch.zeros(3, 2, dtype=torch.long), ks)
    _only_glt_error(compute_onsets, ranks)


# ------------------------------------------------------------------------------ early exit
@st.composite
def readouts(draw):
    """A synthetic `glt.Readout` with consistent top-k ids and sorted, normalisable log-probs."""
    n_layer, n_row, k = draw(st.integers(2, 7)), draw(st.integers(1, 30)), draw(st.integers(1, 3))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    ids = torch.stack([torch.randperm(VOCAB, generator=g)[:k] for _ in range(n_layer * n_row)])
    ids = ids.reshape(n_layer, n_row, k)
    if draw(st.booleans()):  # many rows agree with the final layer
        ids[:, : n_row // 2] = ids[-1:, : n_row // 2]
    probs = torch.rand(n_layer, n_row, k, generator=g).sort(-1, descending=True).values
    probs = probs / probs.sum(-1, keepdim=True) * draw(st.floats(0.01, 1.0))
    if draw(st.booleans()):
        probs[..., 0] = draw(st.sampled_from([1.0, 0.05, 1e-30]))
    lp = probs.clamp_min(1e-38).log()
    z = torch.zeros(n_row, dtype=torch.long)
    r = glt.Readout(tuple(f"l{i}" for i in range(n_layer)), z, torch.arange(n_row), z, ids[-1, :, :1],
                    torch.zeros(n_layer, n_row, 1, dtype=torch.long), lp[..., :1], ids, lp,
                    torch.rand(n_layer, n_row, generator=g), torch.rand(n_layer, n_row, generator=g), "logit")
    return r


@PURE
@given(readouts(), st.data())
def test_early_exit_on_generated_readouts_is_finite_and_round_trips(tmp_path_factory, r, data):
    n_layer, n_row = r.top1.shape
    gold = data.draw(st.one_of(st.none(), st.lists(st.integers(-1, VOCAB - 1), min_size=n_row, max_size=n_row)))
    cats = data.draw(st.one_of(st.none(), st.lists(st.sampled_from(["x", "y", 3]), min_size=n_row, max_size=n_row)))
    taus = data.draw(st.lists(st.floats(1e-6, 1.0), min_size=1, max_size=4))
    mel = data.draw(st.integers(0, n_layer - 1))
    res = early_exit(r, gold=gold, categories=cats, taus=taus, min_exit_layer=mel)
    assert res.groups[-1] == "all" and res.n[-1] == n_row
    assert int(res.onset_hist.sum(1)[-1]) == n_row and bool((res.row_onset <= n_layer - 1).all())
    for name in ("onset_mean", "onset_median", "onset_q25", "onset_q75", "onset_saved", "fixed_agreement",
                 "tau_exit_mean", "tau_saved", "tau_agreement", "tau_early_share", "tau_lens_evals"):
        assert _finite(getattr(res, name)), name  # every group has rows: all defined
    assert bool((res.fixed_agreement[:, -1] == 1).all())
    assert bool(((res.tau_saved >= 0) & (res.tau_saved <= 1)).all())
    has_gold = torch.tensor(res.n_gold) > 0
    assert bool(torch.isfinite(res.final_accuracy).eq(has_gold).all())
    for table in ("policies", "onsets", "rows"):
        res.to_dataframe(table)
    _round_trip(res, EarlyExitResult, tmp_path_factory.getbasetemp())


@PURE
@given(readouts(), st.sampled_from(["gold", "categories", "taus", "exit_layers", "min_exit_layer",
                                    "model_name"]), junk)
def test_early_exit_junk_raises_only_glt_error(r, arg, value):
    _only_glt_error(early_exit, r, **{arg: value})


# ------------------------------------------------------------------------------ capture + read-out
@settings(FAST, max_examples=12)
@given(model_key, st.lists(st.integers(1, N_CTX), min_size=1, max_size=5), st.integers(1, 5), st.data())
def test_capture_and_readout_of_ragged_batches_are_finite(models, key, lengths, batch_size, data):
    """Lengths 1..n_ctx in one right-padded batch, every dtype: the read-out is finite and exact."""
    model = models[key]
    seqs = [data.draw(st.lists(st.integers(0, VOCAB - 1), min_size=n, max_size=n)) for n in lengths]
    stack = glt.capture_residuals(model, seqs, batch_size=batch_size)
    assert stack.resid.dtype == DTYPES.get(key, torch.float32)
    assert stack.lengths.tolist() == lengths
    r = glt.readout(stack, glt.LogitLens.from_model(model), top_k=3)
    assert r.n_rows == sum(lengths)
    for name in ("target_logprobs", "topk_logprobs", "entropy", "kl_to_final"):
        assert _finite(getattr(r, name)), name
    assert bool((r.kl_to_final >= -1e-4).all()) and bool((r.entropy >= -1e-4).all())
    assert bool((r.ranks[-1] == 0).all()) and bool(((r.ranks >= 0) & (r.ranks < VOCAB)).all())
    res = early_exit(r, gold=torch.randint(-1, VOCAB, (r.n_rows,)), min_exit_layer=1)
    assert _finite(res.onset_mean) and _finite(res.tau_agreement)


@FAST
@given(model_key, st.data())
def test_over_long_and_bad_inputs_raise_glt_error(models, key, data):
    model = models[key]
    n = data.draw(st.integers(N_CTX + 1, N_CTX + 40))
    with pytest.raises(glt.GltError, match="context"):
        glt.capture_residuals(model, [[1] * n])
    with pytest.warns(UserWarning, match="truncated"):
        assert glt.capture_residuals(model, [[1] * n], truncate=True).resid.shape[2] == N_CTX
    _only_glt_error(glt.capture_residuals, model, data.draw(junk))
    _only_glt_error(glt.capture_residuals, model, [[1, 2]], batch_size=data.draw(junk))


# ------------------------------------------------------------------------------ guess-then-refine
@FAST
@given(model_key, st.lists(st.one_of(text, ids), min_size=1, max_size=6),
       st.sampled_from(["all", "random"]), st.one_of(st.none(), st.integers(1, 60)), st.integers(1, 5),
       st.integers(0, 5))
def test_guess_then_refine_fuzz(tmp_path_factory, models, key, texts, cuts, max_positions, batch_size, seed):
    model = models[key]
    lens = glt.LogitLens.from_model(model)
    try:
        res = run_guess_then_refine(model, lens, texts, frequency=FREQ, cuts=cuts, max_positions=max_positions,
                                    batch_size=batch_size, seed=seed, progress=False)
    except glt.GltError as e:
        assert "no readable prefix" in str(e), e  # texts were all empty or one token long
        return
    n = res.n_positions
    assert n >= 1 and res.top1.shape == (N_LAYERS + 1, n) and res.bucket.shape == res.top1.shape
    assert max_positions is None or n <= max_positions
    assert _finite(res.max_prob) and bool(((res.max_prob >= 0) & (res.max_prob <= 1 + 1e-6)).all())
    assert bool((res.rank_final[-1] == 0).all()) and not bool(res.flip[-1].any())
    assert int((res.gold == -1).sum()) == res.counts["n_no_gold_last_position"]
    assert bool((res.pos_index < N_CTX).all())
    share = res.bucket_share
    assert _finite(share) and torch.allclose(share.sum(1), torch.ones(N_LAYERS + 1, dtype=share.dtype))
    head = res.headline()
    assert all(not (isinstance(v, float) and math.isinf(v)) for v in head.values())
    res.to_dataframe()
    _round_trip(res, GuessRefineResult, tmp_path_factory.getbasetemp())


@FAST
@given(st.sampled_from(["texts", "frequency", "max_positions", "batch_size", "cuts", "seed",
                        "early_layers"]), junk)
def test_guess_then_refine_junk_raises_only_glt_error(models, arg, value):
    model = models["fp32"]
    kw = {"texts": ["the capital of france is paris"], "frequency": FREQ, "max_positions": 8,
          "progress": False, arg: value}
    _only_glt_error(run_guess_then_refine, model, glt.LogitLens.from_model(model), **kw)


# ------------------------------------------------------------------------------ fact recall
fact = st.tuples(text, st.lists(word, min_size=0, max_size=5).map(" ".join))


@FAST
@given(model_key, st.lists(fact, min_size=1, max_size=6), st.integers(1, 4), st.integers(1, 4),
       st.booleans())
def test_fact_recall_fuzz(tmp_path_factory, models, key, facts, max_answer, batch_size, unspaced):
    model = models[key]
    try:
        res = run_fact_recall(model, glt.LogitLens.from_model(model), facts, ks=(1, 3, 10),
                              max_answer_tokens=max_answer, batch_size=batch_size,
                              accept_unspaced=unspaced, progress=False)
    except glt.GltError as e:
        assert "none of the" in str(e), e
        return
    assert len(res.facts) + len(res.skipped) == res.n_input == len(facts)
    n_rows = sum(len(a) for a in res.answer_tokens)
    assert res.ranks.shape == (N_LAYERS + 1, n_rows) and res.first.shape == (3, n_rows)
    assert all(1 <= len(a) <= max_answer for a in res.answer_tokens)
    assert bool(((res.ranks >= 0) & (res.ranks < VOCAB)).all())
    assert _finite(res.logprobs) and bool((res.logprobs <= 1e-5).all())
    assert _finite(res.max_prob)
    _check_curves(res.curves)
    res.summary(ks=(1, 3))
    res.to_dataframe()
    res.token_dataframe()
    _round_trip(res, FactRecallResult, tmp_path_factory.getbasetemp())


@FAST
@given(st.sampled_from(["facts", "ks", "max_answer_tokens", "batch_size"]), junk)
def test_fact_recall_junk_raises_only_glt_error(models, arg, value):
    model = models["fp32"]
    kw = {"facts": [("the capital of france is", "paris")], "progress": False, arg: value}
    _only_glt_error(run_fact_recall, model, glt.LogitLens.from_model(model), **kw)


# ------------------------------------------------------------------------------ part of speech
_TAG = {"the": "DET", "a": "DET", "an": "DET", "this": "DET", "of": "ADP", "in": "ADP", "to": "ADP",
        "on": "ADP", "for": "ADP", "with": "ADP", "by": "ADP", "at": "ADP", "from": "ADP",
        ",": "PUNCT", ".": "PUNCT", "capital": "NOUN", "city": "NOUN", "country": "NOUN",
        "river": "NOUN", "is": "AUX", "was": "AUX", "has": "VERB", "had": "VERB", "paris": "PROPN",
        "France": "PROPN", "zebra": "NOUN", "Quux": "ADJ", "he": "PRON", "she": "PRON"}


def word_tagger(texts):
    """A deterministic stand-in for spaCy: whitespace words tagged from a table (else X)."""
    out = []
    for t in texts:
        words, pos = [], 0
        for w in t.split(" "):
            if w:
                words.append((pos, w, _TAG.get(w, "X")))
            pos += len(w) + 1
        out.append(words)
    return out


@FAST
@given(model_key, st.lists(text, min_size=1, max_size=6), st.sampled_from(["first", "every"]),
       st.booleans(), st.integers(0, 20), st.integers(1, 4), st.one_of(st.none(), st.integers(1, 30)))
def test_pos_study_fuzz(tmp_path_factory, models, key, texts, construction, correct_only, min_chars,
                        batch_size, max_items):
    model = models[key]
    try:
        res = run_pos_study(model, glt.LogitLens.from_model(model), texts, construction=construction,
                            correct_only=correct_only, min_prefix_chars=min_chars, batch_size=batch_size,
                            max_items=max_items, tagger=word_tagger, ks=(1, 2, 10), progress=False)
    except glt.GltError as e:
        assert "no usable items" in str(e), e
        return
    n = res.n_items
    assert max_items is None or n <= max_items
    assert res.ranks.shape == (N_LAYERS + 1, n) and res.logprobs.shape == (N_LAYERS + 1, n)
    assert _finite(res.logprobs) and bool(((res.ranks >= 0) & (res.ranks < VOCAB)).all())
    assert not correct_only or bool(res.correct.all())
    assert all(it.token_pos <= N_CTX for it in res.items)
    _check_curves(res.curves)
    for df in (res.to_dataframe(), res.summary_dataframe(k=1), res.candidates_dataframe(),
               res.churn_dataframe(), res.curves_dataframe()):
        assert df is not None
    _round_trip(res, PosResult, tmp_path_factory.getbasetemp())


@FAST
@given(st.sampled_from(["texts", "tags", "construction", "ks", "correct_only", "min_prefix_chars",
                        "batch_size", "max_items", "tagger"]), junk)
def test_pos_study_junk_raises_only_glt_error(models, arg, value):
    model = models["fp32"]
    kw = {"texts": ["the capital of france is paris , a city"], "tagger": word_tagger, "min_prefix_chars": 0,
          "progress": False, arg: value}
    _only_glt_error(run_pos_study, model, glt.LogitLens.from_model(model), **kw)


# ------------------------------------------------------------------------------ multiple choice
SYMBOLS = ["a", "the", "of", "and", "to", "in"]


@st.composite
def mc_prompts(draw):
    n_opt = draw(st.integers(2, 4))
    symbols = draw(st.permutations(SYMBOLS))[:n_opt]
    return [MCPrompt(draw(st.lists(word, min_size=1, max_size=70).map(" ".join)).strip() or "the",
                     symbols, [draw(st.sampled_from(WORDS)) for _ in range(n_opt)],
                     draw(st.integers(0, n_opt - 1)), id=f"q{i}")
            for i in range(draw(st.integers(1, 5)))]


@settings(FAST, max_examples=12)
@given(model_key, mc_prompts(), st.integers(1, 4), st.integers(1, 20))
def test_multiple_choice_fuzz(tmp_path_factory, models, key, items, batch_size, top_k):
    model = models[key]
    try:
        res = run_multiple_choice(model, glt.LogitLens.from_model(model), items, shots=0,
                                  batch_size=batch_size, top_k_format=top_k, progress=False)
    except glt.GltError as e:
        assert "were skipped" in str(e), e  # every prompt is longer than the context
        return
    n, n_o = res.n_items, len(res.symbols[0])
    assert n + len(res.skipped) == len(items)
    assert res.option_ranks.shape == (N_LAYERS + 1, n, n_o)
    assert _finite(res.option_logprobs) and _finite(res.content_logprobs)
    assert bool(((res.decision_rank >= 0) & (res.decision_rank < n_o)).all())
    assert 0.0 <= res.accuracy <= 1.0
    assert _finite(res.option_mass) and bool((res.option_mass <= 1 + 1e-5).all())
    for df in (res.summary(), res.curves(), res.item_table(), res.to_dataframe()):
        assert df is not None
    _round_trip(res, MultipleChoiceResult, tmp_path_factory.getbasetemp())


@FAST
@given(st.sampled_from(["items", "task", "shots", "top_k_format", "permute_symbols", "seed", "batch_size"]),
       junk)
def test_multiple_choice_junk_raises_only_glt_error(models, arg, value):
    model = models["fp32"]
    kw = {"items": [MCPrompt("the capital of france is", ("a", "the"), ("paris", "city"), 0)], "shots": 0,
          "progress": False, arg: value}
    _only_glt_error(run_multiple_choice, model, glt.LogitLens.from_model(model), **kw)


@st.composite
def mc_results(draw):
    """A synthetic `MultipleChoiceResult` (finite log-probs, ranks consistent with them)."""
    n_layer, n, n_o = draw(st.integers(2, 8)), draw(st.integers(1, 25)), draw(st.integers(2, 5))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    lp = torch.randn(n_layer, n, n_o, generator=g) * draw(st.sampled_from([0.01, 1.0, 30.0])) - 5
    if draw(st.booleans()):  # exact ties between options
        lp = lp.round()
    ranks = torch.randint(0, VOCAB, (n_layer, n, n_o), generator=g)
    ranks[-1] = torch.randint(0, 3, (n, n_o), generator=g)
    opt = torch.stack([torch.randperm(VOCAB, generator=g)[:n_o] for _ in range(n)])
    kw = dict(task="mmlu", model="m", lens="logit", source="synthetic", n_shots=0,
              top_k_format=draw(st.integers(1, 50)), symbols_mode="original",
              layer_labels=tuple(f"l{i}" for i in range(n_layer)), item_ids=tuple(f"q{i}" for i in range(n)),
              symbols=tuple(tuple("ABCDE"[:n_o]) for _ in range(n)), multi_token_symbols=(),
              option_tokens=opt, content_tokens=opt.flip(-1), gold=torch.randint(0, n_o, (n,), generator=g),
              option_ranks=ranks, option_logprobs=lp.clamp_max(0), content_ranks=ranks.flip(-1),
              content_logprobs=lp.clamp_max(0).flip(-1), final_top1=opt[:, 0])
    main = MultipleChoiceResult(**kw)
    return MultipleChoiceResult(**{**kw, "symbols_mode": "relabel", "control": main}) if draw(st.booleans()) else main


@settings(PURE, max_examples=25)
@given(mc_results())
def test_multiple_choice_aggregation_is_finite_where_defined(tmp_path_factory, res):
    ons = res.onsets()
    assert bool((ons["decision_stable"] >= 0).all())  # the final layer always agrees with itself
    assert bool((res.decision_rank[-1] == 0).all()) and bool(res.decision_agree[-1].all())
    summary = res.summary()
    for _, row in summary.iterrows():
        assert (row["n"] > 0) == math.isfinite(row["accuracy"]), row
        for name in ("format_first", "format_stable", "decision_first", "decision_stable"):
            defined = row[f"{name}_n"] > 0
            assert all(math.isfinite(row[f"{name}_{q}"]) == defined for q in ("median", "q25", "q75")), row
    curves = res.curves()
    has_n = curves["n"] > 0
    assert curves.loc[has_n, ["mean", "median", "q25", "q75"]].notna().all().all()
    assert curves.loc[~has_n, ["mean", "median", "q25", "q75"]].isna().all().all()
    _check_curves(res.format_onset_curves(ks=(1, 5, 50)))
    res.item_table()
    res.to_dataframe()
    _round_trip(res, MultipleChoiceResult, tmp_path_factory.getbasetemp())


# ------------------------------------------------------------------------------ patching
@settings(FAST, max_examples=10)
@given(model_key, st.lists(st.integers(1, N_CTX), min_size=1, max_size=3), st.integers(1, N_CTX),
       st.integers(1, 4), st.data())
def test_patching_fuzz(tmp_path_factory, models, key, target_lengths, source_length, batch_size, data):
    model = models[key]
    targets = [data.draw(st.lists(st.integers(3, VOCAB - 1), min_size=n, max_size=n)) for n in target_lengths]
    source = data.draw(st.lists(st.integers(3, VOCAB - 1), min_size=source_length, max_size=source_length))
    res = patch_layers(model, targets, source, target_options=[5, 6, 7], source_options=[20, 21],
                       batch_size=batch_size, progress=False)
    for name in ("p_target", "p_source", "lens_p_target", "lens_p_source"):
        v = getattr(res, name)
        assert _finite(v) and bool(((v >= 0) & (v <= 1 + 1e-5)).all()), name
    assert bool(((res.transition_first >= -1) & (res.transition_first <= N_LAYERS)).all())
    res.to_dataframe()
    res.disagreements()
    _round_trip(res, PatchingResult, tmp_path_factory.getbasetemp())


@FAST
@given(st.sampled_from(["target_prompts", "source_prompts", "target_options", "source_options", "position",
                        "layers", "batch_size"]), junk)
def test_patching_junk_raises_only_glt_error(models, arg, value):
    model = models["fp32"]
    kw = {"target_prompts": ["the capital of france is"], "source_prompts": ["he was in the city"],
          "target_options": [5, 6], "source_options": [20, 21], "progress": False, arg: value}
    _only_glt_error(patch_layers, model, **kw)


# ------------------------------------------------------------------------------ tokens fed to the model
@pytest.fixture(scope="module")
def nobos_model(tiny_root):
    """The tiny llama with a tokenizer that adds no BOS (like SmolLM2's and GPT-2's).

    TransformerLens re-initialises ``model.tokenizer`` with ``add_bos_token=True`` for such a
    tokenizer, so ``model.tokenizer(text)`` and `glt.tokenize` disagree on it.
    """
    import shutil

    folder = tiny_root / "tiny-llama-nobos"
    if not folder.is_dir():
        shutil.copytree(make_tiny_folder("llama", tiny_root), folder)
        tj = json.loads((folder / "tokenizer.json").read_text())
        tj["post_processor"] = None
        (folder / "tokenizer.json").write_text(json.dumps(tj))
    return glt.load_model(str(folder))


def _spy(monkeypatch, module, name: str) -> list[list[int]]:
    fed: list[list[int]] = []
    real = getattr(module, name)

    def spy(model, inputs, **kw):
        fed.extend(list(map(int, x)) for x in inputs)
        return real(model, inputs, **kw)

    monkeypatch.setattr(module, name, spy)
    return fed


_TOKEN_BUG = ("BUG: the study tokenises with `model.tokenizer` (TransformerLens's copy, which adds a "
              "BOS the model's own tokenizer never adds, e.g. SmolLM2's <|im_start|>) instead of "
              "glt.core._capture.model_tokenizer / glt.tokenize")
TOKEN_TEXTS = ["the capital of france is paris", "he was in the city , she was"]


@pytest.mark.parametrize("study", [
    "guess_refine",
    "facts",
    "pos",
    "multiple_choice",
])
def test_studies_feed_the_model_exactly_glt_tokenize_tokens(nobos_model, monkeypatch, study):
    """Every sequence a study runs is a prefix of `glt.tokenize` of one of its texts."""
    import glt.studies.fact_recall._run as _facts
    import glt.studies.guess_then_refine._run as _guess_refine
    import glt.studies.multiple_choice._run as _multiple_choice
    import glt.studies.part_of_speech._run as _pos

    model, lens = nobos_model, glt.LogitLens.from_model(nobos_model)
    if study == "guess_refine":
        fed = _spy(monkeypatch, _guess_refine, "iter_residuals")
        run_guess_then_refine(model, lens, TOKEN_TEXTS, frequency=FREQ, progress=False)
        texts = TOKEN_TEXTS
    elif study == "facts":
        fed = _spy(monkeypatch, _facts, "iter_residuals")
        run_fact_recall(model, lens, [("the capital of france is", "paris")], ks=(1,), progress=False)
        texts = ["the capital of france is paris"]
    elif study == "pos":
        fed = _spy(monkeypatch, _pos, "iter_residuals")
        run_pos_study(model, lens, TOKEN_TEXTS, tagger=word_tagger, min_prefix_chars=0, progress=False)
        texts = TOKEN_TEXTS
    else:
        fed = _spy(monkeypatch, _multiple_choice, "capture_residuals")
        run_multiple_choice(model, lens, [MCPrompt(TOKEN_TEXTS[0], ("a", "the"), ("city", "river"), 0)],
                            shots=0, progress=False)
        texts = TOKEN_TEXTS[:1]
    want = [glt.tokenize(model, t)[0] for t in texts]
    assert fed
    for seq in fed:
        assert any(w[: len(seq)] == seq for w in want), f"fed {seq}, glt.tokenize gives {want}"


def test_frequency_counts_of_a_model_use_glt_tokenize(nobos_model):
    freq = TokenFrequency.from_texts(TOKEN_TEXTS, nobos_model, progress=False)
    ids = [t for text in TOKEN_TEXTS for t in glt.tokenize(nobos_model, text)[0]]
    assert freq.counts.tolist() == torch.bincount(torch.tensor(ids), minlength=VOCAB).tolist()


# ------------------------------------------------------------------------------ atomic writes
_WRITER = """
import sys
from glt.core._io import write_json
i = 0
while True:
    write_json(sys.argv[1], {"i": i, "pad": "x" * 400_000, "end": True})
    i += 1
"""


def test_killed_writer_leaves_old_or_new_file_never_half(tmp_path):
    """SIGKILL a process that rewrites a JSON file in a loop: the file always parses whole."""
    script = tmp_path / "writer.py"
    script.write_text(_WRITER)
    target = tmp_path / "out" / "result.json"
    rng = random.Random(int(os.environ.get("GLT_KILL_SEED", random.randrange(10**6))))
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, str(script), str(target)])
        deadline = time.time() + 60
        while not target.exists() and time.time() < deadline:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.3))
        proc.send_signal(signal.SIGKILL)
        wait_bounded(proc, what="the killed writer to exit", timeout=60)
        data = read_json(target, "result")
        assert data["end"] is True and len(data["pad"]) == 400_000
    leftovers = [p.name for p in target.parent.iterdir() if p.name != "result.json"]
    # a kill between mkstemp and os.replace may leave one hidden temp file, never a broken target
    assert all(p.startswith(".result.json.") and p.endswith(".tmp") for p in leftovers), leftovers


def test_failed_write_keeps_the_old_file_and_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "r.json"
    write_json(target, {"v": 1})

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(glt.GltError, match=r"cannot write file .*r.json \(disk full\)"):
        atomic_write_bytes(target, b'{"v": 2}')
    monkeypatch.undo()
    assert read_json(target) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


# ------------------------------------------------------------------------------ lens training: a real kill
_TRAIN = """
import json, sys, time
from pathlib import Path
import glt
from glt.lenses.fit._train import train_tuned_lens

folder, texts_file, ck, out, log = sys.argv[1:6]
model = glt.load_model(folder)
texts = json.loads(Path(texts_file).read_text())

def tick(step, tokens, lens):
    with open(log, "a") as fh:
        fh.write(f"{step} {time.time()}\\n")

lens = train_tuned_lens(model, texts, checkpoint_dir=ck or None, checkpoint_every=1, callback=tick,
                        max_tokens=800, tokens_per_step=100, least_squares_tokens=200, row_chunk=32,
                        seed=11, progress=False)
lens.save(out)
"""
_TRAIN_STEPS = 8


def _steps_done(log: Path) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


def _step_seconds(log: Path) -> float:
    """Mean wall time of a training step, from the callback's time stamps."""
    t = [float(line.split()[1]) for line in log.read_text().splitlines()]
    return (t[-1] - t[0]) / max(1, len(t) - 1)


def _lens_tensors(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "params.safetensors"))


def test_killed_lens_training_resumes_to_the_uninterrupted_lens(tiny_root, tmp_path):
    """SIGKILL `train_tuned_lens` in a subprocess at a random step and moment, resume, compare."""
    folder = make_tiny_folder("llama", tiny_root)
    g = torch.Generator().manual_seed(0)
    texts = [" ".join(WORDS[i] for i in torch.randint(0, len(WORDS), (24,), generator=g).tolist())
             for _ in range(24)]
    (tmp_path / "texts.json").write_text(json.dumps(texts))
    script = tmp_path / "train.py"
    script.write_text(_TRAIN)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GLT_CACHE": str(tmp_path / "cache")}

    def cmd(ck: str, out: Path, log: Path) -> list[str]:
        return [sys.executable, str(script), str(folder), str(tmp_path / "texts.json"), ck, str(out), str(log)]

    ref_out = tmp_path / "ref"
    run_bounded(cmd("", ref_out, tmp_path / "ref.log"), what="the uninterrupted reference training", timeout=900,
                env=env, check=True)
    assert _steps_done(tmp_path / "ref.log") == _TRAIN_STEPS
    step_s = _step_seconds(tmp_path / "ref.log")

    seed = int(os.environ.get("GLT_KILL_SEED", random.randrange(10**6)))
    rng = random.Random(seed)
    ck, out, log = tmp_path / "ck", tmp_path / "resumed", tmp_path / "run.log"
    kills = []
    for _ in range(2):  # kill twice: the second kill lands inside a resumed run
        before = _steps_done(log)
        at = rng.randint(before + 1, _TRAIN_STEPS - 1) if before + 1 < _TRAIN_STEPS else None
        if at is None:
            break
        proc = subprocess.Popen(cmd(str(ck), out, log), env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        deadline = time.time() + 300
        while _steps_done(log) < at and proc.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.9) * step_s)  # inside the next step or its checkpoint write
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            wait_bounded(proc, what="the killed training to exit", timeout=60)
            kills.append((at, _steps_done(log)))
        else:
            wait_bounded(proc, what="the training run that finished before its kill", timeout=60)
    assert kills, "no run was killed"
    done = run_bounded(cmd(str(ck), out, log), what="the resumed training", timeout=900, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    ref, got = _lens_tensors(ref_out), _lens_tensors(out)
    why = f"GLT_KILL_SEED={seed}, kills (step reached, steps logged) {kills}"
    assert torch.equal(got["weight"], ref["weight"]) and torch.equal(got["bias"], ref["bias"]), why
    hist_ref = json.loads((ref_out / "config.json").read_text())["training"]["history"]
    hist_got = json.loads((out / "config.json").read_text())["training"]["history"]
    assert hist_got == hist_ref, why
    assert json.loads((ck / "latest" / "state.json").read_text())["step"] == _TRAIN_STEPS


# ------------------------------------------------------------------------------ regressions
# Minimal repros of bugs the tests above once found (kept as regression tests).
@pytest.mark.parametrize("ks", [(1, None), ("a",)])
def test_bug_onsets_ks_not_validated(ks):
    with pytest.raises(glt.GltError):
        compute_onsets(torch.zeros(3, 2, dtype=torch.long), ks)


def test_bug_onsets_of_zero_layers():
    with pytest.raises(glt.GltError):
        compute_onsets(torch.zeros(0, 3, dtype=torch.long), (1,))


def test_bug_kill_between_checkpoint_renames_keeps_a_checkpoint(tiny_root, tmp_path, monkeypatch):
    from glt.lenses._tuned import TunedLens
    from glt.lenses.fit._checkpoints import load_checkpoint, save_checkpoint

    model = glt.load_model(str(make_tiny_folder("llama", tiny_root)))
    lens = TunedLens.from_model(model)
    opt = torch.optim.SGD(lens.translators(), lr=0.1)
    ck = tmp_path / "ck"
    save_checkpoint(ck, "fp", lens, opt, 1, [{"step": 1}])
    real = os.replace

    def killed_midway(src, dst):  # the process dies just before the new folder is renamed in
        if Path(dst) == ck / "latest" and Path(src).name.startswith(".latest."):
            raise KeyboardInterrupt
        return real(src, dst)

    monkeypatch.setattr(os, "replace", killed_midway)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(ck, "fp", lens, opt, 2, [{"step": 1}, {"step": 2}])
    monkeypatch.undo()
    state = load_checkpoint(ck, "fp", TunedLens.from_model(model), opt)
    assert state is not None and state["step"] in (1, 2)


def test_crash_between_checkpoint_renames_is_recovered(tiny_root, tmp_path):
    """A SIGKILL after the old 'latest' was set aside and before the new one landed: the next
    load finds the old checkpoint (moved back by recover_dir), never restarts from step 0."""
    from glt.lenses._tuned import TunedLens
    from glt.lenses.fit._checkpoints import load_checkpoint, save_checkpoint

    model = glt.load_model(str(make_tiny_folder("llama", tiny_root)))
    lens = TunedLens.from_model(model)
    opt = torch.optim.SGD(lens.translators(), lr=0.1)
    ck = tmp_path / "ck"
    save_checkpoint(ck, "fp", lens, opt, 1, [{"step": 1}])
    (ck / ".latest.old.crash").mkdir()
    os.replace(ck / "latest", ck / ".latest.old.crash" / "latest")  # the state a kill leaves
    state = load_checkpoint(ck, "fp", TunedLens.from_model(model), opt)
    assert state is not None and state["step"] == 1
    assert (ck / "latest").is_dir() and not (ck / ".latest.old.crash").exists()


def test_crash_between_lens_renames_is_recovered(tiny_root, tmp_path):
    model = glt.load_model(str(make_tiny_folder("llama", tiny_root)))
    lens = glt.TunedLens.from_model(model)
    lens.save(tmp_path / "lens")
    (tmp_path / ".lens.old.crash").mkdir()
    os.replace(tmp_path / "lens", tmp_path / ".lens.old.crash" / "lens")
    assert glt.load_lens(tmp_path / "lens", model).n_layers == lens.n_layers
