"""TunedLens: the lens contract, zero-init = logit lens, persistence, tuned-lens import/export."""

import json
import os
import pickle

import pytest
import torch

import glt
from glt.core._capture import tokenize
from glt.lenses._logit import LogitLens, Unembed
from glt.lenses._tuned import TunedLens, export_tuned_lens, import_tuned_lens, load_lens

TEXTS = ["the capital of france is paris", "she was in the city and he was not", "they had a river"]


def _random_lens(model, seed: int = 0, scale: float = 0.05) -> TunedLens:
    lens = TunedLens.from_model(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        lens.weight.copy_(torch.randn(lens.weight.shape, generator=g) * scale)
        lens.bias.copy_(torch.randn(lens.bias.shape, generator=g) * scale)
    return lens


def test_zero_init_equals_logit_lens_through_readout(tiny_model):
    stack = glt.capture_residuals(tiny_model, TEXTS)
    a = glt.readout(stack, LogitLens.from_model(tiny_model), top_k=3)
    b = glt.readout(stack, TunedLens.from_model(tiny_model), top_k=3)
    assert b.lens == "tuned"
    for name in ("ranks", "topk_ids", "targets"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    for name in ("target_logprobs", "topk_logprobs", "entropy", "kl_to_final"):
        torch.testing.assert_close(getattr(a, name), getattr(b, name), rtol=0, atol=0)


def test_transform_stack_equals_per_layer_naive_loop(tiny_model):
    lens = _random_lens(tiny_model)
    resid = glt.capture_residuals(tiny_model, TEXTS).resid
    fast = lens.transform_stack(resid)
    for i in range(lens.n_layers + 1):
        h = resid[i]
        naive = h if i == lens.n_layers else h + h @ lens.weight[i].T + lens.bias[i]
        torch.testing.assert_close(fast[i], naive, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(lens.transform_hidden(h, i), naive, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(lens(resid[1], 1), lens.unembed(lens.transform_hidden(resid[1], 1)))


def test_final_index_has_no_translator_and_readout_uses_the_lens(tiny_llama):
    lens = _random_lens(tiny_llama, scale=0.3)
    stack = glt.capture_residuals(tiny_llama, TEXTS)
    r_logit = glt.readout(stack, LogitLens.from_model(tiny_llama))
    r_tuned = glt.readout(stack, lens)
    torch.testing.assert_close(r_logit.entropy[-1], r_tuned.entropy[-1])  # identity at the final index
    assert not torch.allclose(r_logit.entropy[0], r_tuned.entropy[0])


@pytest.mark.parametrize("idx", [-1, 4, 100])
def test_bad_index_raises(tiny_llama, idx):
    lens = TunedLens.from_model(tiny_llama)
    with pytest.raises(glt.GltError, match="idx"):
        lens.transform_hidden(torch.zeros(2, lens.d_model), idx)


def test_transform_stack_wrong_depth_raises(tiny_llama):
    lens = TunedLens.from_model(tiny_llama)
    with pytest.raises(glt.GltError, match="n_layers \\+ 1"):
        lens.transform_stack(torch.zeros(2, 3, lens.d_model))


def test_save_load_round_trip(tiny_llama, tmp_path):
    lens = _random_lens(tiny_llama)
    lens.config["note"] = "hello"
    lens.save(tmp_path / "lens")
    assert sorted(os.listdir(tmp_path / "lens")) == ["config.json", "params.safetensors"]
    cfg = json.loads((tmp_path / "lens" / "config.json").read_text())
    assert cfg["n_layers"] == 3 and cfg["d_model"] == 28 and cfg["note"] == "hello"
    assert cfg["unembed_hash"] == lens.unembed.fingerprint() and "hidden_states[0]" in cfg["layer_index_convention"]
    back = load_lens(tmp_path / "lens", tiny_llama)
    assert torch.equal(back.weight, lens.weight) and torch.equal(back.bias, lens.bias)
    assert back.config["note"] == "hello"
    stack = glt.capture_residuals(tiny_llama, TEXTS)
    assert torch.equal(glt.readout(stack, back).ranks, glt.readout(stack, lens).ranks)


def test_save_over_existing_lens_is_atomic_and_clean(tiny_llama, tmp_path):
    _random_lens(tiny_llama, seed=1).save(tmp_path / "lens")
    lens2 = _random_lens(tiny_llama, seed=2)
    lens2.save(tmp_path / "lens", extra_files={"eval.json": {"a": 1}, "report.md": "# hi"})
    assert sorted(os.listdir(tmp_path)) == ["lens"]  # no temporary folders left behind
    assert torch.equal(load_lens(tmp_path / "lens", tiny_llama).weight, lens2.weight)
    assert json.loads((tmp_path / "lens" / "eval.json").read_text()) == {"a": 1}


def test_export_import_tuned_lens_round_trip(tiny_llama, tmp_path):
    lens = _random_lens(tiny_llama)
    export_tuned_lens(lens, tmp_path / "tl")
    state = torch.load(tmp_path / "tl" / "params.pt", weights_only=True)
    assert sorted(state) == sorted([f"{i}.weight" for i in range(3)] + [f"{i}.bias" for i in range(3)])
    cfg = json.loads((tmp_path / "tl" / "config.json").read_text())
    assert cfg["num_hidden_layers"] == 3 and cfg["d_model"] == 28 and cfg["lens_type"] == "linear_tuned_lens"
    for lens_back in (import_tuned_lens(tmp_path / "tl", tiny_llama), load_lens(tmp_path / "tl", tiny_llama)):
        assert torch.equal(lens_back.weight, lens.weight) and torch.equal(lens_back.bias, lens.bias)


def test_index_convention_matches_tuned_lens_and_hf_hidden_states(tiny_llama, tiny_root, tmp_path):
    """tuned-lens translator i reads HF hidden_states[i] (i = 0: embeddings) = glt residual i."""
    from transformers import AutoModelForCausalLM

    from tests.helpers import make_tiny_folder

    hf = AutoModelForCausalLM.from_pretrained(str(make_tiny_folder("llama", tiny_root)))
    ids = torch.tensor(tokenize(tiny_llama, TEXTS[:1]))
    with torch.no_grad():
        hidden = hf(ids, output_hidden_states=True).hidden_states
    resid = glt.capture_residuals(tiny_llama, TEXTS[:1]).resid
    for i in range(3):  # HF's last entry is after the final norm for llama; glt's index 3 is before it
        torch.testing.assert_close(resid[i], hidden[i], rtol=1e-4, atol=1e-4)
    # a tuned-lens checkpoint whose translator i adds the constant i + 1 to every coordinate
    d = 28
    state = {}
    for i in range(3):
        state[f"{i}.weight"] = torch.zeros(d, d)
        state[f"{i}.bias"] = torch.full((d,), float(i + 1))
    (tmp_path / "tl").mkdir()
    torch.save(state, tmp_path / "tl" / "params.pt")
    (tmp_path / "tl" / "config.json").write_text(json.dumps({"d_model": d, "num_hidden_layers": 3}))
    lens = import_tuned_lens(tmp_path / "tl", tiny_llama)
    h = torch.zeros(2, d)
    for i in range(3):
        assert torch.equal(lens.transform_hidden(h, i), torch.full((2, d), float(i + 1)))
    assert torch.equal(lens.transform_hidden(h, 3), h)


def test_mismatched_model_raises_and_hash_override_warns(tiny_llama, tiny_root, tmp_path):
    from tests.helpers import make_tiny_folder

    gpt2 = glt.load_model(str(make_tiny_folder("gpt2", tiny_root)))  # same sizes, other unembedding
    _random_lens(tiny_llama).save(tmp_path / "lens")
    with pytest.raises(glt.GltError, match="unembedding hash.*allow_mismatch=True"):
        load_lens(tmp_path / "lens", gpt2)
    with pytest.warns(UserWarning, match="allow_mismatch=True"):
        lens = load_lens(tmp_path / "lens", gpt2, allow_mismatch=True)
    assert lens.unembed.fingerprint() == glt.LogitLens.from_model(gpt2).unembed.fingerprint()


def test_lens_loads_on_the_same_model_in_bfloat16_and_with_a_legacy_hash(tiny_root, tmp_path):
    import warnings

    from tests.helpers import make_tiny_folder

    folder = str(make_tiny_folder("llama", tiny_root))
    f32, bf16 = glt.load_model(folder), glt.load_model(folder, dtype=torch.bfloat16)
    u32, u16 = Unembed.from_model(f32), Unembed.from_model(bf16)
    assert u16.W.dtype == torch.bfloat16 and u32.fingerprint() == u16.fingerprint()
    assert u32.fingerprint(legacy=True) != u16.fingerprint(legacy=True)  # why the hash changed
    _random_lens(f32).save(tmp_path / "lens")
    cfg_file = tmp_path / "lens" / "config.json"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # neither load may warn about a mismatch
        load_lens(tmp_path / "lens", bf16)
        cfg = json.loads(cfg_file.read_text())
        cfg["unembed_hash"] = u32.fingerprint(legacy=True)  # a lens saved by glt 0.1.0
        cfg_file.write_text(json.dumps(cfg))
        load_lens(tmp_path / "lens", f32)


@pytest.mark.parametrize("key,value,match", [("d_model", 640, "d_model=640"), ("n_layers", 18, "n_layers=18")])
def test_size_mismatch_always_raises(tiny_llama, tmp_path, key, value, match):
    _random_lens(tiny_llama).save(tmp_path / "lens")
    cfg_file = tmp_path / "lens" / "config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg[key] = value
    cfg_file.write_text(json.dumps(cfg))
    with pytest.raises(glt.GltError, match=match):
        load_lens(tmp_path / "lens", tiny_llama, allow_mismatch=True)


def _corrupt_truncate(d):
    f = d / "params.safetensors"
    f.write_bytes(f.read_bytes()[:100])


def _corrupt_garbage_config(d):
    (d / "config.json").write_text("{not json")


def _corrupt_format(d):
    (d / "config.json").write_text(json.dumps({"format": "other"}))


def _corrupt_missing_params(d):
    (d / "params.safetensors").unlink()


def _corrupt_shapes(d):
    from safetensors.torch import save_file

    save_file({"weight": torch.zeros(2, 28, 28), "bias": torch.zeros(2, 28)}, str(d / "params.safetensors"))


def _corrupt_nan(d):
    from safetensors.torch import save_file

    params = {"weight": torch.full((3, 28, 28), float("nan")), "bias": torch.zeros(3, 28)}
    save_file(params, str(d / "params.safetensors"))


def _corrupt_missing_key(d):
    from safetensors.torch import save_file

    save_file({"weight": torch.zeros(3, 28, 28)}, str(d / "params.safetensors"))


@pytest.mark.parametrize("corrupt,match", [
    (_corrupt_truncate, "params.safetensors is corrupted or truncated"),
    (_corrupt_garbage_config, "config.json is corrupted"),
    (_corrupt_format, "not a glt lens"),
    (_corrupt_missing_params, "does not exist"),
    (_corrupt_shapes, "do not fit this lens.*does not match its config.json"),
    (_corrupt_nan, "NaN"),
    (_corrupt_missing_key, "lacks tensor 'bias'"),
])
def test_corrupted_lens_folder_raises_naming_the_file(tiny_llama, tmp_path, corrupt, match):
    _random_lens(tiny_llama).save(tmp_path / "lens")
    corrupt(tmp_path / "lens")
    with pytest.raises(glt.GltError, match=match):
        load_lens(tmp_path / "lens", tiny_llama)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.mark.parametrize("payload,match", [
    (b"\x80\x04garbage", "could not be read safely"),
    (pickle.dumps({"0.weight": _Evil()}), "could not be read safely"),
])
def test_import_never_unpickles_objects(tiny_llama, tmp_path, payload, match):
    (tmp_path / "tl").mkdir()
    (tmp_path / "tl" / "params.pt").write_bytes(payload)
    (tmp_path / "tl" / "config.json").write_text(json.dumps({"d_model": 28, "num_hidden_layers": 3}))
    with pytest.raises(glt.GltError, match=match):
        import_tuned_lens(tmp_path / "tl", tiny_llama)


@pytest.mark.parametrize("cfg,match", [
    ({"d_model": 28}, "num_hidden_layers"),
    ({"d_model": 28, "num_hidden_layers": 3, "lens_type": "other"}, "linear_tuned_lens"),
    ({"d_model": 32, "num_hidden_layers": 3}, "d_model=32"),
])
def test_import_bad_config_raises(tiny_llama, tmp_path, cfg, match):
    export_tuned_lens(_random_lens(tiny_llama), tmp_path / "tl")
    (tmp_path / "tl" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(glt.GltError, match=match):
        import_tuned_lens(tmp_path / "tl", tiny_llama)


def test_import_missing_keys_raises(tiny_llama, tmp_path):
    export_tuned_lens(_random_lens(tiny_llama), tmp_path / "tl")
    torch.save({"0.weight": torch.zeros(28, 28)}, tmp_path / "tl" / "params.pt")
    with pytest.raises(glt.GltError, match="'\\{i\\}.weight'"):
        import_tuned_lens(tmp_path / "tl", tiny_llama)


@pytest.mark.parametrize("where", ["no/such/folder", "file"])
def test_load_lens_bad_path_raises(tiny_llama, tmp_path, where):
    path = tmp_path / "f.txt" if where == "file" else tmp_path / where
    if where == "file":
        path.write_text("x")
    with pytest.raises(glt.GltError, match="not a folder"):
        load_lens(path, tiny_llama)


def test_default_lens_refuses_other_model(tiny_llama):
    with pytest.raises(glt.GltError, match="d_model=640"):
        load_lens("default", tiny_llama)


def test_export_rejects_logit_lens(tiny_llama, tmp_path):
    with pytest.raises(glt.GltError, match="TunedLens"):
        export_tuned_lens(LogitLens.from_model(tiny_llama), tmp_path / "x")


@pytest.mark.parametrize("name", ["default", "smollm2-135m"])
def test_shipped_report_claims_hold_in_its_heldout_evaluation(name):
    """The shipped lens's eval.json backs the report: tuned below least squares at every layer
    (paired, by more than 3 standard errors) and below the logit lens at every layer but the last."""
    from glt.core._assets import shipped_lens_dir
    from glt.lenses.fit._evaluate import LensEvaluation

    folder = shipped_lens_dir(name)
    ev = LensEvaluation.load(folder / "eval.json")
    assert ev.lenses == ("logit", "least_squares", "tuned") and ev.n_rows >= 1024
    kl = dict(zip(ev.lenses, ev.kl, strict=True))
    diff = (kl["tuned"] - kl["least_squares"])[:-1].double()  # [layer, row]; the final layer is 0
    se = diff.std(-1) / diff.shape[-1] ** 0.5
    assert bool((diff.mean(-1) < -3 * se).all()), diff.mean(-1) / se
    assert bool((kl["tuned"][:-1].mean(-1) < kl["logit"][:-1].mean(-1)).all())
    heldout = json.loads((folder / "config.json").read_text())["heldout"]
    for i, name in enumerate(ev.lenses):  # the config's summary is this evaluation's
        torch.testing.assert_close(torch.tensor(heldout["kl_mean"][name]), ev.kl[i].mean(-1))


def _beats_the_logit_lens(model, lens):
    """Read positions 1-8 of three held-out paragraphs with ``lens`` and the logit lens; assert the
    lens's mean KL to the final layer is lower at every layer but the last; return both read-outs."""
    from glt.data._wikipedia import wikipedia_paragraphs

    texts = [" ".join(p.split()[:40]) for p in wikipedia_paragraphs("heldout", max_paragraphs=40)[-3:]]
    stack = glt.capture_residuals(model, texts)
    mask = stack.mask.clone()
    mask[:, 0] = False  # BOS
    mask[:, 9:] = False
    tuned = glt.readout(stack, lens, positions=mask)
    logit = glt.readout(stack, LogitLens.from_model(model), positions=mask)
    assert tuned.n_rows >= 24
    kl_t, kl_l = tuned.kl_to_final.mean(1), logit.kl_to_final.mean(1)
    assert bool((kl_t[:-1] < kl_l[:-1]).all()), (kl_t, kl_l)
    return tuned, logit


@pytest.mark.integration
def test_default_lens_beats_logit_lens_on_heldout_positions(default_model):
    lens = load_lens("default", default_model)
    assert lens.n_layers == 18 and lens.config["model_load_name"] == "default"
    tuned, logit = _beats_the_logit_lens(default_model, lens)
    assert torch.equal(tuned.top1[-1], logit.top1[-1])
    bf16 = glt.load_model(dtype=torch.bfloat16)  # the shipped lens fits the model in bfloat16 too
    assert load_lens("default", bf16).unembed.W.dtype == torch.bfloat16


@pytest.mark.integration
def test_smollm2_lens_loads_by_name_and_beats_the_logit_lens_on_heldout_positions():
    model = glt.load_model("smollm2-135m")
    lens = load_lens("smollm2", model)  # the load_model aliases name the shipped lens too
    assert lens.n_layers == 30 and lens.config["model_load_name"] == "smollm2-135m"
    assert load_lens("smollm2-135m").config == lens.config  # without a model: loads the one it names
    _beats_the_logit_lens(model, lens)
    with pytest.raises(glt.GltError, match="was trained for d_model=576 but the model has d_model=640"):
        load_lens("smollm2-135m", glt.load_model("default"))


def test_load_lens_without_model_loads_the_named_model(tiny_root, tmp_path):
    from tests.helpers import make_tiny_folder

    folder = str(make_tiny_folder("llama", tiny_root))
    model = glt.load_model(folder)
    lens = _random_lens(model)
    lens.config["model_load_name"] = folder
    lens.save(tmp_path / "lens")
    back = load_lens(tmp_path / "lens")
    assert torch.equal(back.weight, lens.weight)
    del lens.config["model_load_name"]
    lens.save(tmp_path / "lens")
    with pytest.raises(glt.GltError, match="pass model="):
        load_lens(tmp_path / "lens")
