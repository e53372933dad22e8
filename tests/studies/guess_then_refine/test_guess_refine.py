"""Guess-then-refine: bucket shares, flips and the gold-aware split on hand-built and real models."""

import json
import random
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import glt
import glt.studies.guess_then_refine._run as gr
from glt.core._capture import ResidualStack, layer_labels, pad_batch
from glt.data._frequency import TokenFrequency
from glt.data._wikipedia import wikipedia_paragraphs
from glt.studies.guess_then_refine._result import GOLD_CLASSES, GuessRefineResult
from glt.studies.guess_then_refine._run import run_guess_then_refine

V, N_LAYERS = 7, 3
# counts 60 > 50 > ... so token id == frequency rank; edges (1, 3): bucket 0 = {0},
# bucket 1 = {1, 2}, bucket 2 = {3, 4, 5, 6}
FREQ = TokenFrequency.from_counts([60, 50, 40, 30, 20, 10, 5], edges=(1, 3))
TEXT_A, TEXT_B = [4, 5, 6, 3], [2, 2]
# designed lens top-1 per text (keyed by first token), position and layer 0..3 (3 = final)
DESIGN = {
    4: [[0, 0, 5, 5], [0, 6, 6, 1], [3, 3, 3, 3], [0, 2, 4, 4]],
    2: [[1, 1, 0, 0], [2, 2, 2, 2]],
}


def _stub_model():
    cfg = SimpleNamespace(n_layers=N_LAYERS, d_model=V, d_vocab=V, n_ctx=50)
    return SimpleNamespace(cfg=cfg, tokenizer=None, _glt_name="stub")


def _stub_lens():
    unembed = glt.Unembed(nn.Identity(), torch.eye(V), None)  # logits = residual
    return glt.LogitLens(unembed, N_LAYERS)


def _fake_iter(model, seqs, *, batch_size=8, **_):
    """Residual stacks whose layer-l residual is a one-hot of DESIGN's top-1."""
    for start in range(0, len(seqs), batch_size):
        batch = seqs[start : start + batch_size]
        tokens, mask = pad_batch(batch, 0)
        resid = torch.zeros(N_LAYERS + 1, len(batch), tokens.shape[1], V)
        for b, seq in enumerate(batch):
            for p in range(len(seq)):
                for layer, tok in enumerate(DESIGN[seq[0]][p]):
                    resid[layer, b, p, tok] = 10.0
        yield ResidualStack(resid, tokens, mask, layer_labels(N_LAYERS))


@pytest.fixture
def stub(monkeypatch):
    monkeypatch.setattr(gr, "iter_residuals", _fake_iter)
    return _stub_model(), _stub_lens()


def _run(stub, texts=None, **kw):
    model, lens = stub
    kw.setdefault("frequency", FREQ)
    kw.setdefault("progress", False)
    texts = [TEXT_A, TEXT_B] if texts is None else texts
    return run_guess_then_refine(model, lens, texts, **kw)


def test_hand_built_buckets_flips_and_gold_split(stub):
    res = _run(stub, early_layers=(1,))
    assert res.n_positions == 6 and res.bucket_labels == ("Top 1-1", "Top 2-3", "3+")
    assert res.gold.tolist() == [5, 6, 3, -1, 2, -1]  # the last position of a text has no gold
    assert res.counts["n_no_gold_last_position"] == 2
    assert res.final_top1.tolist() == [5, 1, 3, 4, 0, 2]
    assert res.top1[0].tolist() == [0, 0, 3, 0, 1, 2]
    # layer 0: buckets [0, 0, 2, 0, 1, 1]; flips [T, T, F, T, T, F]
    assert res.bucket_counts[0].tolist() == [3, 2, 1]
    assert res.flip_counts[0].tolist() == [3, 1, 0]
    assert res.flip_rate[0].tolist() == [1.0, 0.5, 0.0]
    assert not res.flip[-1].any()
    # gold split at layer 0 (gold positions A0, A1, A2, B0):
    # A0 wrong->right (bucket 0), A1 wrong->wrong (0), A2 right->right (2), B0 wrong->wrong (1)
    split = res.gold_split
    assert split[0].tolist() == [[0, 0, 1, 1], [0, 0, 0, 1], [1, 0, 0, 0]]
    # layer 1: A1's top-1 is the gold 6 but the final top-1 (1) is not: right->wrong, bucket 2
    assert split[1, 2].tolist() == [1, 1, 0, 0]
    assert split.sum().item() == 4 * (N_LAYERS + 1)
    # rank of the final top-1: 0 at the final layer; 1 elsewhere when the lens top-1 differs
    assert res.rank_final[-1].tolist() == [0] * 6
    assert (res.rank_final[0] == res.flip[0].long()).all()
    head = res.headline()
    assert head["early_layers"] == [1] and head["n_early"] == 6
    assert head["top_share_early"] == pytest.approx(1 / 6)  # layer 1 top-1s: 0, 6, 3, 2, 1, 2
    assert head["top_flip_rate_early"] == 1.0 and head["n_top_early"] == 1
    assert head["top_share_final"] == pytest.approx(1 / 6)
    assert head["final_accuracy"] == pytest.approx(2 / 4) and head["n_gold"] == 4


def test_aggregates_match_naive_loops(stub):
    res = _run(stub)
    n_layer, n = res.top1.shape
    for layer in range(n_layer):
        for b in range(len(res.bucket_labels)):
            rows = [i for i in range(n) if res.bucket[layer, i] == b]
            assert res.bucket_counts[layer, b] == len(rows)
            flips = sum(int(res.top1[layer, i] != res.top1[-1, i]) for i in rows)
            assert res.flip_counts[layer, b] == flips
            for k, cls in enumerate(GOLD_CLASSES):
                want = sum(
                    1 for i in rows if res.gold[i] >= 0
                    and cls == ("right" if res.top1[layer, i] == res.gold[i] else "wrong") + "->"
                    + ("right" if res.top1[-1, i] == res.gold[i] else "wrong")
                )
                assert res.gold_split[layer, b, k] == want
    assert torch.allclose(res.bucket_share.sum(1), torch.ones(n_layer, dtype=torch.float64))


def test_batch_size_does_not_change_results(stub):
    a, b = _run(stub, batch_size=1), _run(stub, batch_size=5)
    for name in ("top1", "bucket", "gold", "text_index", "pos_index", "rank_final"):
        assert torch.equal(getattr(a, name), getattr(b, name))


def test_max_positions_reads_a_text_in_part(stub):
    res = _run(stub, max_positions=3)
    assert res.pos_index.tolist() == [0, 1, 2] and res.gold.tolist() == [5, 6, 3]
    assert res.counts["unread_after_max_positions"] == 1
    assert res.counts["n_texts_unused"] == 1 and res.counts["n_no_gold_last_position"] == 0


def test_max_positions_per_text_keeps_gold_from_the_whole_text(stub):
    res = _run(stub, max_positions_per_text=2)
    assert res.text_index.tolist() == [0, 0, 1, 1] and res.pos_index.tolist() == [0, 1, 0, 1]
    assert res.gold.tolist() == [5, 6, 2, -1]  # text B really ends at position 1
    assert res.counts["unread_after_max_positions_per_text"] == 2


def test_random_cuts_one_prefix_per_text_with_gold(stub):
    res = _run(stub, texts=[TEXT_A, TEXT_B, TEXT_A], cuts="random", seed=3)
    rng = random.Random(3)
    want = [rng.randint(0, 2), rng.randint(0, 0), rng.randint(0, 2)]
    assert res.text_index.tolist() == [0, 1, 2] and res.pos_index.tolist() == want
    assert (res.gold >= 0).all()
    again = _run(stub, texts=[TEXT_A, TEXT_B, TEXT_A], cuts="random", seed=3)
    assert torch.equal(res.pos_index, again.pos_index)


def test_skips_are_counted(stub):
    res = _run(stub, texts=[TEXT_A, "", "  ", [2]], cuts="random")
    assert res.counts["skipped_empty_text"] == 2 and res.counts["skipped_too_short"] == 1
    assert res.n_positions == 1


def test_save_load_roundtrip_and_dataframe(stub, tmp_path):
    res = _run(stub)
    path = res.save(tmp_path / "gr.json")
    back = GuessRefineResult.load(path)
    for name in ("top1", "bucket", "gold", "rank_final", "max_prob", "text_index"):
        assert torch.equal(getattr(back, name), getattr(res, name))
    assert back.headline() == res.headline() and back.counts == res.counts
    df = back.to_dataframe()
    assert len(df) == (N_LAYERS + 1) * 3
    assert {"share", "flip_rate", "n", "n_gold", *GOLD_CLASSES} <= set(df.columns)
    assert df.groupby("layer")["n"].sum().tolist() == [6] * (N_LAYERS + 1)


@pytest.mark.parametrize(
    "content, match",
    [("{ broken", "corrupted"), (json.dumps({"format": "x"}), "not a glt guess"),
     (json.dumps({"format": "glt.GuessRefineResult/1"}), "malformed")],
)
def test_load_bad_files(tmp_path, content, match):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(glt.GltError, match=match):
        GuessRefineResult.load(path)


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"texts": []}, "empty"),
        ({"texts": "one text"}, "one string"),
        ({"texts": ["", " "]}, "no readable prefix"),
        ({"texts": [[9, 1]]}, "outside"),
        ({"texts": [3.5]}, "string or a list"),
        ({"cuts": "every"}, "cuts"),
        ({"max_positions": 0}, "max_positions"),
        ({"batch_size": 0}, "batch_size"),
        ({"max_positions_per_text": 0}, "max_positions_per_text"),
        ({"early_layers": (9,)}, "early_layers"),
        ({"early_layers": ()}, "early_layers"),
        ({"frequency": TokenFrequency.from_counts([1] * 5)}, "covers 5 token ids"),
        ({"frequency": "no-such-table"}, "neither a shipped table"),
        ({"frequency": "default"}, "covers 262144 token ids"),
    ],
)
def test_bad_inputs_raise(stub, kw, match):
    with pytest.raises(glt.GltError, match=match):
        _run(stub, **kw)


def test_bad_lens_and_missing_default_frequency(stub):
    model, lens = stub
    with pytest.raises(glt.GltError, match=r"argument lens must be a Lens \(an object with name, unembed, "
                                           r"transform_stack, check_compatible\) or a list of them, got object"):
        run_guess_then_refine(model, object(), [TEXT_A], frequency=FREQ, progress=False)
    with pytest.raises(glt.GltError, match="ships tables for default and smollm2-135m only"):
        run_guess_then_refine(model, lens, [TEXT_A], progress=False)
    with pytest.raises(glt.GltError, match="layers"):
        _run(stub).headline(layers=[99])


def test_tiny_model_matches_model_logits(tiny_model):
    texts = ["the capital of france is paris .", "he was in the city", "a river"]
    freq = TokenFrequency.from_texts(texts * 3, tiny_model, progress=False)
    lens = glt.LogitLens.from_model(tiny_model)
    res = run_guess_then_refine(tiny_model, lens, texts, frequency=freq, batch_size=2,
                                progress=False)
    ids = glt.tokenize(tiny_model, texts)
    assert res.n_positions == sum(len(s) - 1 for s in ids)  # BOS-only prefixes skipped
    assert res.counts["skipped_bos_only_prefix"] == 3
    with torch.no_grad():
        for t, seq in enumerate(ids):
            logits = tiny_model(torch.tensor([seq]))[0]
            rows = res.text_index == t
            assert torch.equal(res.final_top1[rows], logits[res.pos_index[rows]].argmax(-1))
            assert res.gold[rows].tolist() == seq[2:] + [-1]
    assert not res.flip[-1].any() and (res.rank_final[-1] == 0).all()
    assert ((res.max_prob > 0) & (res.max_prob <= 1)).all()
    other = run_guess_then_refine(tiny_model, lens, texts, frequency=freq, batch_size=3,
                                  progress=False)
    assert torch.equal(other.top1, res.top1)


@pytest.mark.integration
def test_default_model_logit_lens(default_model):
    lens = glt.LogitLens.from_model(default_model)
    res = run_guess_then_refine(default_model, lens, max_positions=40, progress=False)
    assert res.n_positions == 40 and res.model == "gemma-3-270m" and res.lens == "logit"
    assert res.bucket_labels == ("Top 1-10", "Top 11-100", "Top 101-1000", "1000+")
    assert res.early_layers == (1, 2, 3, 4) and res.frequency["tokenizer"] == "gemma-3-270m"
    assert res.text_index.tolist() == [0] * 40 and res.pos_index.tolist() == list(range(1, 41))
    head = res.headline()
    assert head["n_early"] == 160 and head["n_final"] == 40 and head["n_gold"] == 40
    assert torch.allclose(res.bucket_share.sum(1), torch.ones(19, dtype=torch.float64))
    # the final read-out reproduces the model's own next-token prediction, and gold is the text
    tokens = glt.tokenize(default_model, [wikipedia_paragraphs("heldout", max_paragraphs=1)[0]])[0]
    with torch.no_grad():
        logits = default_model(torch.tensor([tokens[:41]]))[0]
    assert torch.equal(res.final_top1, logits[1:41].argmax(-1))
    assert res.gold.tolist() == tokens[2:42]
