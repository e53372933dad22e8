"""Guess-then-refine inside a block: attention vs MLP, on hand-built results, tiny models and the default model."""

import json

import matplotlib
import numpy as np
import pytest
import torch

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

import glt  # noqa: E402
import glt.studies.guess_then_refine._sublayers as sub  # noqa: E402
from glt.core._capture import layer_labels  # noqa: E402
from glt.data._wikipedia import wikipedia_paragraphs  # noqa: E402
from glt.studies.guess_then_refine._sublayers import (  # noqa: E402
    FATES,
    SublayerSplit,
    plot_sublayer_split,
    sublayer_split,
)
from tests.helpers import load_tiny  # noqa: E402

TEXTS = ["the capital of france is paris and the river", "a city in the country", "he was", "the"]
#: token id == frequency rank (counts fall with the id); bucket 0 = ids 0..39, bucket 1 = the rest
FREQ = glt.TokenFrequency.from_counts(list(range(101, 0, -1)), edges=(40,))


def _hand_built(**kw):
    """Two blocks (sites embed, resid_mid 0, resid_pre 1, resid_mid 1, final), six positions.

    Buckets: ids below 3 are the top bucket (0), the rest bucket 1. Block 0 meets every fate:
    position 0 attention, 1 mlp, 2 restored, 3 kept; position 4's input is the final top-1 and
    position 5's is in bucket 1 (no guesses). Block 1: positions 2 and 5 mlp, 3 attention.
    """
    top1 = torch.tensor([[0, 1, 2, 0, 1, 7],   # embed (block 0's input)
                         [5, 1, 5, 0, 1, 0],   # resid_mid 0
                         [6, 5, 2, 0, 1, 0],   # resid_pre 1 (block 0's output, block 1's input)
                         [6, 5, 2, 4, 1, 0],   # resid_mid 1
                         [9, 9, 9, 9, 1, 9]])  # final
    rank = torch.tensor([[3, 1, 0, 5, 0, 2], [1, 2, 4, 5, 0, 1], [2, 0, 4, 1, 0, 1], [0, 0, 3, 2, 0, 1],
                         [0, 0, 0, 0, 0, 0]])
    fields = dict(model="stub", lens="logit", data_source="hand-built", layer_labels=layer_labels(2, resid_mid=True),
                  bucket_labels=("Top 1-3", "3+"), guess_buckets=(0,), early_layers=(0, 1), frequency={}, counts={},
                  text_index=torch.zeros(6, dtype=torch.long), pos_index=torch.arange(6), top1=top1,
                  bucket=(top1 >= 3).long(), rank_final=rank)
    return SublayerSplit(**{**fields, **kw})


def test_hand_built_fates_and_rank_changes():
    res = _hand_built()
    assert res.n_layers == 2 and res.n_positions == 6
    assert res.guess.tolist() == [[True, True, True, True, False, False], [False, False, True, True, False, True]]
    assert [FATES[k] for k in res.fate[0, :4].tolist()] == ["attention", "mlp", "restored", "kept"]
    assert res.fate_counts.tolist() == [[1, 1, 1, 1], [1, 2, 0, 0]] and res.n_guesses.tolist() == [4, 3]
    assert res.fate_share[0].tolist() == [0.25] * 4
    assert res.rank_change("attention").tolist() == [[-2, 1, 4, 0, 0, -1], [-2, 0, -1, 1, 0, 0]]
    assert res.rank_change("mlp").tolist() == [[1, -2, 0, -4, 0, 0], [0, 0, -3, -2, 0, -1]]
    df = res.to_dataframe()
    assert df.input_label.tolist() == ["embed", "resid_pre 1"] and df.n_guesses.tolist() == [4, 3]
    assert df.rank_change_attention_mean[0] == 0.75 and df.rank_change_attention_median[0] == 0.5
    assert df.rank_change_mlp_mean[0] == -1.25 and df.rank_change_mlp_median[0] == -1.0
    assert df.top1_changed_attention[0] == 0.5 and df.top1_changed_mlp[0] == 0.75
    assert df.all_top1_changed_attention[0] == 0.5 and df.n_positions[0] == 6
    assert df.rank_change_mlp_median[1] == -2.0 and df.n_mlp[1] == 2  # guesses 2, 3, 5: -3, -2, -1
    head = res.headline()
    assert head["early_layers"] == [0, 1] and head["n_guesses"] == 7 and head["n_positions"] == 12
    assert head["share_attention"] == pytest.approx(2 / 7) and head["share_mlp"] == pytest.approx(3 / 7)
    assert head["n_restored"] == 1 and head["n_kept"] == 1
    assert res.headline([1])["n_guesses"] == 3
    wide = _hand_built(guess_buckets=(0, 1))  # position 5's input (7, bucket 1) becomes a guess: attention
    assert wide.fate_counts[0].tolist() == [2, 1, 1, 1]
    with pytest.raises(glt.GltError, match="layers must be block indices in \\[0, 1\\]"):
        res.headline([2])
    with pytest.raises(glt.GltError, match="sublayer must be 'attention' or 'mlp'"):
        res.rank_change("ffn")


def test_a_result_needs_every_blocks_mid_residual():
    with pytest.raises(glt.GltError, match="layer_labels must name every block's input, mid residual and output"):
        _hand_built(layer_labels=("embed", "resid_pre 1", "resid_mid 1", "resid_pre 2", "final"))
    with pytest.raises(glt.GltError, match="guess_buckets must be bucket indices"):
        _hand_built(guess_buckets=(2,))


def _naive(model, texts, freq, guess_buckets=(0,)):
    """Per position and block: top-1 and final-token rank at the block's input, mid and output from
    ln_final + W_U in float64 on run_with_cache's own hooks, then the fates, counted one by one."""
    n = model.cfg.n_layers
    fate = np.zeros((n, 4), dtype=int)
    d_attn, d_mlp, changed = [[] for _ in range(n)], [[] for _ in range(n)], np.zeros((n, 2), dtype=int)
    n_pos = 0
    bos = glt.core._capture.model_tokenizer(model).bos_token_id
    for text in texts:
        ids = glt.tokenize(model, [text])[0]
        _, cache = model.run_with_cache(torch.tensor([ids]))

        def decode(hook, p, cache=cache):
            with torch.no_grad():
                y = model.ln_final(cache[hook][0, p].float()).double() @ model.W_U.double()
            b_U = getattr(model, "b_U", None)
            return y if b_U is None else y + b_U.double()

        for p in range(1 if ids[0] == bos else 0, len(ids)):
            n_pos += 1
            final_y = decode(f"blocks.{n - 1}.hook_resid_post", p)
            final = int(final_y.argmax())
            for b in range(n):
                ys = [decode(f"blocks.{b}.hook_resid_pre", p), decode(f"blocks.{b}.hook_resid_mid", p),
                      decode(f"blocks.{b + 1}.hook_resid_pre" if b + 1 < n else f"blocks.{b}.hook_resid_post", p)]
                top = [int(y.argmax()) for y in ys]
                rank = [int((y > y[final]).sum()) for y in ys]
                if int(freq.bucket_of(torch.tensor(top[0]))) not in guess_buckets or top[0] == final:
                    continue
                kind = ("attention" if top[2] != top[0] else "restored") if top[1] != top[0] else (
                    "mlp" if top[2] != top[0] else "kept")
                fate[b, FATES.index(kind)] += 1
                d_attn[b].append(rank[1] - rank[0])
                d_mlp[b].append(rank[2] - rank[1])
                changed[b] += [top[1] != top[0], top[2] != top[1]]
    return fate, d_attn, d_mlp, changed, n_pos


@pytest.mark.parametrize("family", ["gpt2", "gemma3"])
def test_counts_match_a_naive_per_position_loop(family, tiny_root):
    model = load_tiny(family, tiny_root)
    res = sublayer_split(model, texts=TEXTS, frequency=FREQ, max_positions=None, batch_size=3, progress=False)
    fate, d_attn, d_mlp, changed, n_pos = _naive(model, TEXTS, FREQ)
    assert res.n_positions == n_pos and res.layer_labels == layer_labels(3, resid_mid=True)
    assert res.fate_counts.tolist() == fate.tolist() and res.n_guesses.sum() > 10
    df = res.to_dataframe()
    for b in range(3):
        assert df.n_guesses[b] == fate[b].sum()
        for name, vals in (("attention", d_attn[b]), ("mlp", d_mlp[b])):
            assert df[f"rank_change_{name}_mean"][b] == pytest.approx(np.mean(vals) if vals else np.nan, nan_ok=True)
            assert df[f"rank_change_{name}_median"][b] == pytest.approx(np.median(vals) if vals else np.nan,
                                                                       nan_ok=True)
        assert df.top1_changed_attention[b] * fate[b].sum() == pytest.approx(changed[b, 0])
        assert df.top1_changed_mlp[b] * fate[b].sum() == pytest.approx(changed[b, 1])


def test_batch_size_max_positions_and_counts(tiny_llama):
    a = sublayer_split(tiny_llama, texts=TEXTS, frequency=FREQ, batch_size=1, progress=False)
    b = sublayer_split(tiny_llama, texts=TEXTS, frequency=FREQ, batch_size=4, progress=False)
    for name in ("top1", "bucket", "rank_final", "text_index", "pos_index"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    n_read = sum(len(glt.tokenize(tiny_llama, [t])[0]) - 1 for t in TEXTS)  # every position but the BOS prefix
    assert a.n_positions == n_read and a.counts["skipped_bos_only_prefix"] == len(TEXTS)
    capped = sublayer_split(tiny_llama, texts=TEXTS, frequency=FREQ, max_positions=10, progress=False)
    assert capped.n_positions == 10 and capped.counts["unread_after_max_positions"] + 10 <= n_read
    assert torch.equal(capped.top1, a.top1[:, :10])
    assert a.early_layers == (1,) and a.headline()["early_layers"] == [1]


def test_save_load_round_trip_and_bad_files(tiny_llama, tmp_path):
    res = sublayer_split(tiny_llama, texts=TEXTS, frequency=FREQ, progress=False)
    back = SublayerSplit.load(res.save(tmp_path / "split.json"))
    for f in ("model", "lens", "data_source", "layer_labels", "bucket_labels", "guess_buckets", "early_layers",
              "frequency", "counts"):
        assert getattr(back, f) == getattr(res, f), f
    for f in ("text_index", "pos_index", "top1", "bucket", "rank_final"):
        assert torch.equal(getattr(back, f), getattr(res, f)), f
    assert back.to_dataframe().equals(res.to_dataframe())
    data = json.loads((tmp_path / "split.json").read_text())
    assert data["format"] == "glt.SublayerSplit" and data["version"] == 1
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**data, "layer_labels": list(layer_labels(3))[:3] + ["x"] * 4}))
    with pytest.raises(glt.GltError, match="bad.json.*layer_labels must name every block"):
        SublayerSplit.load(bad)
    bad.write_text(json.dumps({**data, "format": "glt.GuessRefineResult"}))
    with pytest.raises(glt.GltError, match="not a glt sublayer split result"):
        SublayerSplit.load(bad)


def test_lenses_without_resid_mid_and_bad_arguments_raise_before_any_forward_pass(tiny_llama, monkeypatch):
    def no_forward(*a, **k):
        raise AssertionError("a forward pass ran")

    monkeypatch.setattr(sub, "iter_residuals", no_forward)
    for lens in (glt.TunedLens.from_model(tiny_llama), glt.JacobianLens.from_model(tiny_llama)):
        with pytest.raises(glt.GltError, match=rf"lens: the '{lens.name}' lens .* no translator for resid_mid.*"
                                               r"glt\.LogitLens\.from_model"):
            sublayer_split(tiny_llama, lens, TEXTS, frequency=FREQ)
    for kw, match in ((dict(guess_buckets=(2,)), "guess_buckets"), (dict(early_layers=(3,)), "early_layers"),
                      (dict(max_positions=0), "max_positions"), (dict(batch_size=0), "batch_size"),
                      (dict(frequency=None), "frequency: glt ships tables for default and smollm2-135m only"),
                      (dict(frequency=glt.TokenFrequency.from_counts([1] * 7)), "covers 7 token ids")):
        with pytest.raises(glt.GltError, match=match):
            sublayer_split(tiny_llama, None, TEXTS, **{"frequency": FREQ, **kw})
    with pytest.raises(glt.GltError, match="wrap it in a list"):
        sublayer_split(tiny_llama, None, "the city", frequency=FREQ)


def test_plot_heights_are_the_fate_shares(tiny_llama):
    res = sublayer_split(tiny_llama, texts=TEXTS, frequency=FREQ, progress=False)
    fig = plot_sublayer_split(res, min_n=1)
    ax = fig.axes[0]
    share = np.nan_to_num(res.fate_share.numpy())
    ok = res.n_guesses.numpy() >= 1
    for k, container in enumerate(ax.containers):
        assert np.allclose([bar.get_height() for bar in container], np.where(ok, share[:, k], 0))
    assert f"N = {int(res.n_guesses.sum()):,} guesses" in ax.get_title(loc="left")
    plt.close(fig)
    fig, given = plt.subplots()
    assert plot_sublayer_split(res, ax=given) is given
    plt.close(fig)


@pytest.mark.integration
def test_default_model_split_and_tuned_lens_refusal(default_model):
    texts = wikipedia_paragraphs("heldout", max_paragraphs=2)  # the first has more than 16 tokens
    res = sublayer_split(default_model, texts=texts, max_positions=16, progress=False)
    n = default_model.cfg.n_layers
    assert res.layer_labels == layer_labels(n, resid_mid=True) and len(res.layer_labels) == 2 * n + 1
    assert res.bucket_labels[0] == "Top 1-10" and res.n_positions == 16
    assert torch.equal(res.fate_counts.sum(1), res.n_guesses) and res.n_guesses.sum() > 0
    # the block boundaries read as a plain capture reads them
    ids = [glt.tokenize(default_model, [texts[0]])[0][:17]]
    plain = glt.readout(glt.capture_residuals(default_model, ids), glt.LogitLens.from_model(default_model),
                        positions=torch.arange(17)[None] >= 1, top_k=1)
    assert torch.equal(res.top1[0::2][:-1, : plain.n_rows], plain.top1[:-1])
    assert torch.equal(res.rank_final[0::2][:, : plain.n_rows], plain.ranks[..., 0])
    with pytest.raises(glt.GltError, match="'tuned' lens .*no translator for resid_mid"):
        sublayer_split(default_model, glt.load_lens("default", default_model), texts, max_positions=4)
