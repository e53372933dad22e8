"""TokenFrequency: counting, ranking (ties, unseen, exclusions), buckets, persistence, shipped table."""

import json
from collections import Counter
from pathlib import Path

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

import glt
from glt.data._frequency import (
    DEFAULT_EDGES,
    TokenFrequency,
    bucket_labels,
    load_frequency,
)

TEXTS = ["the capital of france is paris", "the city is a city .", "", "he was in the river"]


def test_hand_built_ranks_ties_and_unseen():
    # id:      0  1  2  3  4  5  6
    counts = [3, 0, 7, 3, 0, 9, 1]
    freq = TokenFrequency.from_counts(counts, edges=(2, 4))
    # order: 5 (9), 2 (7), 0 (3, lower id wins the tie), 3 (3), 6 (1), then unseen 1, 4 by id
    assert freq.rank.tolist() == [2, 5, 1, 3, 6, 0, 4]
    assert freq.labels == ("Top 1-2", "Top 3-4", "4+")
    assert freq.bucket_of(torch.arange(7)).tolist() == [1, 2, 0, 1, 2, 0, 2]
    assert freq.n_tokens == 23 and freq.d_vocab == 7 and not freq.has_excluded


def test_bucket_of_keeps_shape_and_accepts_lists():
    freq = TokenFrequency.from_counts([5, 4, 3, 2, 1], edges=(1, 2))
    ids = torch.tensor([[0, 1], [2, 4]])
    assert freq.bucket_of(ids).tolist() == [[0, 1], [2, 2]]
    assert freq.bucket_of([1, 0]).tolist() == [1, 0]


def test_default_labels_and_edges():
    assert bucket_labels(DEFAULT_EDGES) == ("Top 1-10", "Top 11-100", "Top 101-1000", "1000+")
    counts = torch.arange(2000, 0, -1)  # id i has rank i
    freq = TokenFrequency.from_counts(counts)
    got = freq.bucket_of(torch.tensor([0, 9, 10, 99, 100, 999, 1000, 1999]))
    assert got.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]


def test_exclusions_do_not_push_others_down():
    counts = [50, 40, 30, 20, 10]  # id 0 = "BOS", id 1 = "whitespace"
    base = TokenFrequency.from_counts(counts, edges=(1, 2), special_ids=(0,), whitespace_ids=(1,))
    assert base.rank.tolist() == [0, 1, 2, 3, 4]
    special = base.with_options(exclude_special=True)
    assert special.rank.tolist() == [-1, 0, 1, 2, 3]
    both = base.with_options(exclude_special=True, exclude_whitespace=True)
    assert both.rank.tolist() == [-1, -1, 0, 1, 2]
    assert both.labels == ("Top 1-1", "Top 2-2", "2+", "excluded")
    assert both.bucket_of(torch.arange(5)).tolist() == [3, 3, 0, 1, 2]
    comp = {c["bucket"]: c["n_tokens"] for c in both.composition()}
    assert comp == {"Top 1-1": 30, "Top 2-2": 20, "2+": 10, "excluded": 90}
    assert both.n_tokens == base.n_tokens == 150  # excluded tokens stay counted


def test_composition_shares_sum_to_one():
    freq = TokenFrequency.from_counts([7, 0, 2, 2, 9, 1], edges=(1, 3))
    comp = freq.composition()
    assert sum(c["share"] for c in comp) == pytest.approx(1.0)
    assert [c["n_types"] for c in comp] == [1, 2, 2]  # the unseen id 1 is not a type
    assert freq.bucket_token_counts().tolist() == [9, 9, 3]


def test_from_texts_matches_naive_count(tiny_llama):
    tok = tiny_llama.tokenizer
    freq = TokenFrequency.from_texts(iter(TEXTS), tiny_llama, progress=False, chunk_size=2)
    naive = Counter(i for t in TEXTS for i in tok(t, add_special_tokens=True)["input_ids"])
    assert {i: int(c) for i, c in enumerate(freq.counts) if c} == dict(naive)
    assert freq.n_texts == 4 and freq.tokenizer == "tiny-llama"
    assert freq.counts[tok.bos_token_id] == 4  # BOS once per text, as the model sees text
    assert set(freq.special_ids) >= {tok.bos_token_id, tok.pad_token_id, tok.unk_token_id}
    no_bos = TokenFrequency.from_texts(TEXTS, tok, add_special_tokens=False, progress=False)
    assert no_bos.counts[tok.bos_token_id] == 0
    assert no_bos.n_empty == 1  # the empty text gives no token
    assert torch.equal(no_bos.counts + torch.nn.functional.one_hot(
        torch.tensor(tok.bos_token_id), freq.d_vocab) * 4, freq.counts)


def test_from_texts_exclude_special_puts_bos_in_excluded_bucket(tiny_llama):
    freq = TokenFrequency.from_texts(TEXTS, tiny_llama, exclude_special=True, progress=False)
    bos = tiny_llama.tokenizer.bos_token_id
    assert freq.rank[bos] == -1
    assert freq.labels[-1] == "excluded"
    assert freq.bucket_of([bos]).item() == freq.n_buckets - 1


def test_whitespace_detection_uses_decoded_text():
    from glt.data._frequency_count import special_and_whitespace as _special_and_whitespace

    class Tok:
        all_special_ids = [0]
        added_tokens_decoder: dict = {}

        def __len__(self):
            return 5

        def batch_decode(self, seqs):
            table = ["<bos>", " ", "\n\n", " the", "x"]
            return [table[s[0]] for s in seqs]

    special, white = _special_and_whitespace(Tok(), 5)
    assert special == [0] and white == [1, 2]


@pytest.mark.parametrize(
    "edges", [(), (0, 10), (10, 10), (100, 10), ("a",), (1.5, 3), None, -3]
)
def test_bad_edges_raise(edges):
    with pytest.raises(glt.GltError, match="edges"):
        TokenFrequency.from_counts([1, 2, 3], edges=edges)


@pytest.mark.parametrize(
    "counts, match",
    [([], "non-empty"), ([0, 0], "all zero"), ([1, -1], ">= 0"), ([[1, 2]], "1-D")],
)
def test_bad_counts_raise(counts, match):
    with pytest.raises(glt.GltError, match=match):
        TokenFrequency.from_counts(torch.tensor(counts, dtype=torch.long))


def test_float_counts_raise():
    with pytest.raises(glt.GltError, match="integer"):
        TokenFrequency.from_counts([1.5, 2.0])


@pytest.mark.parametrize("ids", [[-1], [5], torch.tensor([0.5]), torch.tensor([True])])
def test_bad_ids_raise(ids):
    freq = TokenFrequency.from_counts([1, 2, 3, 4, 5])
    with pytest.raises(glt.GltError, match="ids"):
        freq.bucket_of(ids)


@pytest.mark.parametrize(
    "texts, match", [([], "empty"), ("a text", "one string"), (["ok", 3], r"texts\[1\]")]
)
def test_from_texts_bad_inputs(tiny_llama, texts, match):
    with pytest.raises(glt.GltError, match=match):
        TokenFrequency.from_texts(texts, tiny_llama, progress=False)


def test_from_texts_all_empty_and_bad_tokenizer(tiny_llama):
    with pytest.raises(glt.GltError, match="no tokens"):
        TokenFrequency.from_texts(["", ""], tiny_llama.tokenizer, add_special_tokens=False,
                                  progress=False)
    with pytest.raises(glt.GltError, match="tokenizer"):
        TokenFrequency.from_texts(["a"], object(), progress=False)


def test_save_load_roundtrip(tmp_path):
    freq = TokenFrequency.from_counts(
        [3, 0, 7, 3, 0, 9], edges=(2, 4), special_ids=(1,), whitespace_ids=(4,),
        exclude_special=True, corpus="hand", tokenizer="toy", n_texts=2,
    )
    freq.save(tmp_path / "t")
    back = TokenFrequency.load(tmp_path / "t")
    assert torch.equal(back.counts, freq.counts) and torch.equal(back.rank, freq.rank)
    assert back.provenance() == freq.provenance()
    assert (back.special_ids, back.whitespace_ids) == ((1,), (4,))
    assert load_frequency(tmp_path / "t", exclude_special=False).rank[1] >= 0


def test_load_detects_corruption(tmp_path):
    folder = TokenFrequency.from_counts([1, 2, 3]).save(tmp_path / "t")
    blob = folder / "counts.safetensors"
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF
    blob.write_bytes(bytes(data))
    with pytest.raises(glt.GltError, match="does not match"):
        TokenFrequency.load(folder)
    (folder / "frequency.json").write_text("{ truncated")
    with pytest.raises(glt.GltError, match="corrupted"):
        TokenFrequency.load(folder)
    (folder / "frequency.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(glt.GltError, match="not a glt frequency table"):
        TokenFrequency.load(folder)
    with pytest.raises(glt.GltError, match="does not exist"):
        TokenFrequency.load(tmp_path / "missing")
    with pytest.raises(glt.GltError, match="neither a shipped table"):
        load_frequency("no-such-table")


def test_with_options_rejects_unknown():
    with pytest.raises(glt.GltError, match="with_options"):
        TokenFrequency.from_counts([1]).with_options(counts=[2])


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 6), min_size=1, max_size=30), st.sets(st.integers(0, 29)))
@example([0], set())  # every count zero (the test makes the last one 1)
@example([3, 3, 3], {0, 1})  # ties broken by id; only one token left after the exclusions
def test_rank_matches_sort_reference(counts, excluded):
    if sum(counts) == 0:
        counts = counts[:-1] + [1]
    excluded = {i for i in excluded if i < len(counts)}
    freq = TokenFrequency.from_counts(counts, edges=(2, 5), special_ids=tuple(excluded),
                                      exclude_special=True)
    kept = sorted((i for i in range(len(counts)) if i not in excluded),
                  key=lambda i: (-counts[i], i))
    want = [-1] * len(counts)
    for r, i in enumerate(kept):
        want[i] = r
    assert freq.rank.tolist() == want
    naive = [3 if r < 0 else 0 if r < 2 else 1 if r < 5 else 2 for r in want]
    got = freq.bucket_of(torch.arange(len(counts))).tolist()
    assert got == [min(b, freq.n_buckets - 1) for b in naive]


def test_shipped_default_table():
    folder = Path(glt.__file__).parent / "assets" / "frequency" / "default"
    assert sum(f.stat().st_size for f in folder.iterdir()) < 3_000_000
    freq = load_frequency("default")
    prov = freq.provenance()
    assert prov["tokenizer"] == "gemma-3-270m" and prov["d_vocab"] == 262144
    assert "enwiki" in prov["corpus"] and prov["n_tokens"] > 500_000
    comp = freq.composition()
    assert [c["bucket"] for c in comp] == list(bucket_labels(DEFAULT_EDGES))
    assert 0.15 < comp[0]["share"] < 0.40  # the ten most frequent tokens: about a quarter
    bos = 2  # Gemma's <bos>: counted once per paragraph, inside the top 100
    assert 0 <= int(freq.rank[bos]) < 100
    assert int(load_frequency("default", exclude_special=True).rank[bos]) == -1


def test_shipped_smollm2_table_counts_the_same_paragraphs_as_the_default_table():
    folder = Path(glt.__file__).parent / "assets" / "frequency" / "smollm2-135m"
    assert sum(f.stat().st_size for f in folder.iterdir()) < 1_000_000
    freq = load_frequency("smollm2-135m")
    assert torch.equal(load_frequency("SmolLM2").counts, freq.counts)  # the load_model aliases work too
    prov, default = freq.provenance(), load_frequency("default").provenance()
    assert prov["tokenizer"] == "smollm2-135m" and prov["d_vocab"] == 49152
    assert prov["corpus"] == default["corpus"] and prov["n_texts"] == default["n_texts"] == 5014
    assert int(freq.counts.sum()) == prov["n_tokens"] > 500_000
    comp = freq.composition()
    assert 0.15 < comp[0]["share"] < 0.40 and comp[0]["n_types"] == 10


def test_unknown_table_name_lists_the_shipped_ones():
    with pytest.raises(glt.GltError, match=r"'gpt2' is neither a shipped table \(default, smollm2-135m\) nor a folder"):
        load_frequency("gpt2")
