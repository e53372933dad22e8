"""Activation patching across depth: naive hook reference, exact identities and bad inputs."""

import math

import pytest
import torch

import glt
from glt.studies.patching._run import PatchingResult, _onsets_of, patch_layers

TARGET = "the capital of france is"
SOURCE = "paris is a city of"
T_OPTS = ["the", "a"]
S_OPTS = ["paris", "river"]


def _run(model, target=TARGET, source=SOURCE, **kw):
    return patch_layers(model, target, source, target_options=T_OPTS, source_options=S_OPTS, progress=False, **kw)


def _naive(model, target, source, layer, t_opts, s_opts):
    """Full model run with one hook patching the last position; returns output log-probs."""
    n = model.cfg.n_layers
    names = [f"blocks.{i}.hook_resid_pre" for i in range(n)] + [f"blocks.{n - 1}.hook_resid_post"]
    tgt = torch.tensor(glt.tokenize(model, [target]))
    src = torch.tensor(glt.tokenize(model, [source]))
    with torch.inference_mode():
        _, cache = model.run_with_cache(src)
        h = cache[names[layer]][0, -1].clone()

        def fn(act, hook):
            act = act.clone()
            act[:, -1] = h
            return act

        out = model.run_with_hooks(tgt, fwd_hooks=[(names[layer], fn)])[0, -1].log_softmax(-1)
    return out


def test_matches_naive_hook_reference(tiny_model):
    res = _run(tiny_model)
    t_ids, s_ids = list(res.target_options), list(res.source_options)
    for j, layer in enumerate(res.layers):
        ref = _naive(tiny_model, TARGET, SOURCE, layer, t_ids, s_ids)
        assert float(res.p_target[0, j]) == pytest.approx(float(ref[t_ids].exp().sum()), rel=1e-4)
        assert float(res.p_source[0, j]) == pytest.approx(float(ref[s_ids].exp().sum()), rel=1e-4)
        assert bool(res.lands_on_source[0, j]) == bool(ref[s_ids].max() > ref[t_ids].max())
        assert int(res.top1[0, j]) == int(ref.argmax())


def test_final_layer_patch_reproduces_source_output(tiny_model):
    res = _run(tiny_model)
    src = torch.tensor(glt.tokenize(tiny_model, [SOURCE]))
    with torch.inference_mode():
        ref = tiny_model(src)[0, -1].log_softmax(-1)
    s_ids, t_ids = list(res.source_options), list(res.target_options)
    assert res.layers[-1] == tiny_model.cfg.n_layers
    assert float(res.p_source[0, -1]) == pytest.approx(float(ref[s_ids].exp().sum()), rel=1e-4)
    assert float(res.p_target[0, -1]) == pytest.approx(float(ref[t_ids].exp().sum()), rel=1e-4)
    assert int(res.top1[0, -1]) == int(ref.argmax())
    # and equals the unpatched source prompt's own output
    assert res.clean_source_p[0].tolist() == pytest.approx([float(res.p_target[0, -1]), float(res.p_source[0, -1])])


def test_identical_prompts_are_a_no_op(tiny_model):
    res = _run(tiny_model, target=TARGET, source=TARGET)
    clean = res.clean_target_p[0]
    assert torch.allclose(res.p_target[0], clean[0].expand(len(res.layers)), rtol=1e-4)
    assert torch.allclose(res.p_source[0], clean[1].expand(len(res.layers)), rtol=1e-4)
    assert bool((res.lands_on_source[0] == res.clean_target_on_source[0]).all())


def test_batch_size_and_layer_subset_do_not_change_results(tiny_llama):
    full = _run(tiny_llama, batch_size=4)
    one = _run(tiny_llama, batch_size=1)
    assert torch.allclose(full.p_target, one.p_target, rtol=1e-5)
    sub = _run(tiny_llama, layers=[1, 3])
    assert sub.layers == (1, 3)
    assert torch.allclose(sub.p_source[0], full.p_source[0, [1, 3]], rtol=1e-5)
    assert int(sub.transition_stable[0]) in (-1, 1, 3)


def test_pairs_and_broadcast(tiny_llama):
    res = patch_layers(tiny_llama, [TARGET, "the river is"], SOURCE, target_options=T_OPTS,
                       source_options=S_OPTS, progress=False)
    assert res.n_pairs == 2 and res.p_target.shape == (2, tiny_llama.cfg.n_layers + 1)
    assert res.source_texts == (SOURCE, SOURCE)
    single = _run(tiny_llama)
    assert torch.allclose(res.p_target[0], single.p_target[0], rtol=1e-5)
    ids = glt.tokenize(tiny_llama, [TARGET])[0]
    by_ids = patch_layers(tiny_llama, ids, SOURCE, target_options=T_OPTS, source_options=S_OPTS, progress=False)
    assert torch.allclose(by_ids.p_target, single.p_target)


def test_explicit_positions(tiny_llama):
    last = _run(tiny_llama)
    same = _run(tiny_llama, position=(-1, -1))
    assert torch.allclose(last.p_target, same.p_target) and same.position == "-1,-1"
    early = _run(tiny_llama, position=(1, 1))
    # a patch at the final residual of an earlier position cannot reach the last position's output
    assert float(early.p_target[0, -1]) == pytest.approx(float(early.clean_target_p[0, 0]), rel=1e-5)


def test_option_ids_and_labels(tiny_llama):
    tok = tiny_llama.tokenizer
    t_ids = [tok.convert_tokens_to_ids(w) for w in T_OPTS]
    res = patch_layers(tiny_llama, TARGET, SOURCE, target_options=t_ids, source_options=S_OPTS, progress=False)
    assert res.target_options == tuple(t_ids) and res.target_option_labels == ("the", "a")
    assert torch.allclose(res.p_target, _run(tiny_llama).p_target)


def test_onsets_of_hand_cases():
    f, s = _onsets_of(torch.tensor([False, True, False, True]), [0, 1, 2, 3])
    assert (int(f), int(s)) == (1, 3)
    f, s = _onsets_of(torch.tensor([False, False]), [2, 5])
    assert (int(f), int(s)) == (-1, -1)
    f, s = _onsets_of(torch.tensor([True, True, True]), [0, 4, 8])
    assert (int(f), int(s)) == (0, 0)


def test_tables_disagreements_and_roundtrip(tiny_llama, tmp_path):
    res = _run(tiny_llama)
    n = tiny_llama.cfg.n_layers
    layers = res.to_dataframe()
    assert len(layers) == n + 1 and set(layers["lands_on"]) <= {"source", "target"}
    assert set(layers["top1_set"]) <= {"source", "target", "other"}
    assert len(res.to_dataframe("lens")) == n + 1
    pairs = res.to_dataframe("pairs")
    row = pairs.iloc[0]
    ts, lo = int(row["transition_stable"]), int(row["lens_options_stable"])
    if ts >= 0 and lo >= 0:
        assert row["difference_options"] == ts - lo
    loose = res.disagreements(tolerance=n + 1)
    strict = res.disagreements(tolerance=0)
    assert len(loose) <= len(strict) <= 1
    path = res.save(tmp_path / "patch.json")
    back = PatchingResult.load(path)
    assert back.to_dataframe().equals(layers)
    assert back.to_dataframe("pairs").equals(pairs)
    assert torch.equal(back.lens_on_source, res.lens_on_source) and back.lens_top1.dtype == torch.long


def test_compare_semantics():
    from glt.studies.patching._result import _compare

    assert _compare(5, 3, 1) == (2.0, True)
    assert _compare(5, 4, 1) == (1.0, False)
    d, bad = _compare(-1, 4, 0)
    assert math.isnan(d) and bad
    d, bad = _compare(-1, -1, 0)
    assert math.isnan(d) and not bad


BAD = [
    ("overlapping options", dict(target_options=["the", "a"], source_options=["a", "paris"]), "share tokens"),
    ("multi-token option", dict(source_options=["paris is"]), "2 tokens"),
    ("option id out of vocab", dict(source_options=[10_000]), "token id in"),
    ("empty options", dict(target_options=[]), "non-empty"),
    ("options as one string", dict(target_options="the"), "non-empty list"),
    ("repeated option", dict(target_options=["the", "the"]), "same token twice"),
    ("layers out of range", dict(layers=[0, 9]), r"\[0, 3\]"),
    ("layers unsorted", dict(layers=[2, 1]), "increasing"),
    ("bad position", dict(position="first"), "position"),
    ("position outside prompt", dict(position=(0, 40)), "outside the source"),
    ("batch size", dict(batch_size=0), "batch_size"),
    ("pair count", dict(target_prompts=[TARGET, TARGET], source_prompts=[SOURCE, SOURCE, SOURCE]), "pair up"),
    ("empty prompt", dict(target_prompts=""), "target_prompts"),
]


@pytest.mark.parametrize("name,kw,match", BAD, ids=[b[0] for b in BAD])
def test_bad_inputs(tiny_llama, name, kw, match):
    args = dict(target_prompts=TARGET, source_prompts=SOURCE, target_options=T_OPTS, source_options=S_OPTS,
                progress=False)
    args.update(kw)
    with pytest.raises(glt.GltError, match=match):
        patch_layers(tiny_llama, args.pop("target_prompts"), args.pop("source_prompts"), **args)


def test_bad_lens_model_and_files(tiny_llama, tmp_path):
    lens = glt.LogitLens(glt.LogitLens.from_model(tiny_llama).unembed, 5)
    with pytest.raises(glt.GltError, match="residual indices"):
        _run(tiny_llama, lens=lens)
    with pytest.raises(glt.GltError, match="run_with_hooks"):
        patch_layers(object(), TARGET, SOURCE, target_options=T_OPTS, source_options=S_OPTS)
    with pytest.raises(glt.GltError, match="table must be"):
        _run(tiny_llama).to_dataframe("nope")
    bad = tmp_path / "x.json"
    bad.write_text('{"format": "glt.PatchingResult"}')
    with pytest.raises(glt.GltError, match="malformed"):
        PatchingResult.load(bad)


MMLU = (
    "Question: Which planet is known as the Red Planet?\n(A) Venus\n(B) Jupiter\n(C) Mars\n(D) Saturn\n"
    "Answer: C\n\nQuestion: How many legs does a spider have?\n(A) Eight\n(B) Six\n(C) Four\n(D) Ten\nAnswer:"
)
SST = "Review: a tedious, clumsy mess.\nSentiment: negative\n\nReview: a gorgeous, witty and moving film.\nSentiment:"


@pytest.mark.integration
def test_default_model_sst_into_mmlu(default_model):
    res = patch_layers(default_model, MMLU, SST, target_options=[" A", " B", " C", " D"],
                       source_options=[" positive", " negative"], batch_size=19, progress=False)
    n = default_model.cfg.n_layers
    assert bool(res.valid[0]), "unpatched prompts must land on their own options"
    assert not bool(res.lands_on_source[0, 0])  # early patch keeps the MMLU letters
    assert bool(res.lands_on_source[0, -1])  # final patch gives the SST answer
    ts = int(res.transition_stable[0])
    assert 0 < ts <= n
    print(res.to_dataframe()[["layer", "p_target", "p_source", "lands_on", "top1_token"]].to_string())
    print(res.to_dataframe("pairs")[["transition_first", "transition_stable", "lens_options_first",
                                      "lens_options_stable", "lens_settle", "disagrees"]].to_string())


def test_report_counts_each_lens_reading_separately(tiny_llama):
    from dataclasses import replace

    from glt.pipeline._specs import _patch_head

    res = _run(tiny_llama, target=[TARGET] * 3, source=[SOURCE] * 3)
    # pair 0 agrees on both readings, pair 1 only on the options rule, pair 2 on neither (never)
    ts = torch.tensor([2, 3, 1])
    res = replace(res, transition_stable=ts, lens_options_stable=torch.tensor([2, 3, -1]),
                  lens_settle=torch.tensor([2, 4, -1]))
    head = dict(_patch_head(res))
    opts = [v for k, v in head.items() if "source options" in k and "differs" in k]
    settle = [v for k, v in head.items() if "top-1 settles" in k]
    assert opts == ["1 of 3"] and settle == ["2 of 3"]
    assert len(res.disagreements()) == 2
