"""JacobianLens: the lens contract, the index convention, A = J - I, folders and reference artefacts."""

import json
import os
import pickle

import pytest
import torch
from safetensors.torch import save_file

import glt
from glt.core._models import tl_major_version
from glt.lenses._jacobian import JacobianLens, export_jacobian_lens, import_jacobian_lens
from glt.lenses._logit import LogitLens
from glt.lenses._protocol import Lens
from glt.lenses._tuned import TunedLens, load_lens

TEXTS = ["the capital of france is paris and the river is in the city of paris",
         "she was in the city and he was not , but they had a river that was not in france"]
D, N = 28, 3  # the tiny models' d_model and n_layers
needs_tl4 = pytest.mark.skipif(tl_major_version() < 4, reason="TransformerLens's JacobianLens needs >= 4.3")


def _random_lens(model, seed: int = 0, scale: float = 0.2) -> JacobianLens:
    g = torch.Generator().manual_seed(seed)
    J = torch.eye(D) + scale * torch.randn(N, D, D, generator=g)
    return JacobianLens.from_model(model, {"n_prompts": 7}).set_jacobian(J, residual_0="fitted")


@pytest.fixture(scope="module")
def tl_lens(tiny_llama):
    """TransformerLens's own fit on the tiny llama: its layer l is the output of block l."""
    from transformer_lens.tools.analysis import JacobianLens as TLJacobianLens

    return TLJacobianLens.fit(tiny_llama, TEXTS, corpus="test", skip_first_positions=2, show_progress=False)


def test_identity_lens_is_the_logit_lens_through_readout(tiny_model):
    stack = glt.capture_residuals(tiny_model, TEXTS)
    a = glt.readout(stack, LogitLens.from_model(tiny_model), top_k=3)
    b = glt.readout(stack, JacobianLens.from_model(tiny_model), top_k=3)
    assert b.lens == "jacobian" and isinstance(JacobianLens.from_model(tiny_model), Lens)
    for name in ("ranks", "topk_ids", "targets"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    torch.testing.assert_close(a.kl_to_final, b.kl_to_final, rtol=1e-5, atol=1e-6)


def test_transform_equals_naive_loop_and_the_final_residual_is_the_identity(tiny_model):
    lens = _random_lens(tiny_model)
    resid = glt.capture_residuals(tiny_model, TEXTS).resid
    fast = lens.transform_stack(resid)
    for i in range(N + 1):
        naive = resid[i] if i == N else torch.einsum("oi,bpi->bpo", lens.jacobian[i], resid[i])
        torch.testing.assert_close(fast[i], naive, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(lens.transform_hidden(resid[i], i), naive, rtol=1e-5, atol=1e-5)
    assert torch.equal(fast[N], resid[N])
    torch.testing.assert_close(lens(resid[1], 1), lens.unembed(lens.transform_hidden(resid[1], 1)))


def test_equals_the_tuned_lens_with_translator_j_minus_identity(tiny_model):
    """``J h = h + (J - I) h``: the tuned lens with A = J - I, b = 0 reads the same logits."""
    lens = _random_lens(tiny_model)
    tuned = TunedLens.from_model(tiny_model)
    with torch.no_grad():
        tuned.weight.copy_(lens.jacobian - torch.eye(D))
    stack = glt.capture_residuals(tiny_model, TEXTS)
    a, b = glt.readout(stack, lens, top_k=4), glt.readout(stack, tuned, top_k=4)
    assert torch.equal(a.ranks, b.ranks) and torch.equal(a.topk_ids, b.topk_ids)
    torch.testing.assert_close(a.topk_logprobs, b.topk_logprobs, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(a.kl_to_final, b.kl_to_final, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(a.kl_to_final[1], glt.readout(stack, LogitLens.from_model(tiny_model)).kl_to_final[1])


@needs_tl4
def test_reference_layer_l_is_glt_residual_l_plus_1(tiny_llama, tl_lens, tmp_path):
    """The artefact's J[l] (output of block l) reads glt's residual l + 1, with the same logits as
    TransformerLens's own read-out; residual 0 is the identity; the final residual the model's."""
    tl_lens.save(str(tmp_path / "tl.pt"), dtype=torch.float32)
    lens = import_jacobian_lens(tmp_path / "tl.pt", tiny_llama)
    assert lens.residual_0 == "identity" and torch.equal(lens.jacobian[0], torch.eye(D))
    for layer in range(N - 1):
        assert torch.equal(lens.jacobian[layer + 1], tl_lens.jacobians[layer])
    assert lens.config["n_prompts"] == 2 and lens.config["reference_metadata"]["corpus"] == "test"
    theirs = tl_lens.readout(tiny_llama, TEXTS[0], return_full_logits=True)
    resid = glt.capture_residuals(tiny_llama, TEXTS[:1]).resid[:, 0]
    for layer in range(N - 1):
        torch.testing.assert_close(lens(resid[layer + 1], layer + 1), theirs.lens_logits[layer], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(lens(resid[N], N), theirs.lens_logits[N - 1], rtol=1e-4, atol=1e-4)


def test_folder_round_trip_through_load_lens(tiny_llama, tmp_path):
    lens = _random_lens(tiny_llama)
    lens.save(tmp_path / "jl")
    assert sorted(os.listdir(tmp_path / "jl")) == ["config.json", "params.safetensors"]
    cfg = json.loads((tmp_path / "jl" / "config.json").read_text())
    assert cfg["format"] == "glt-jacobian-lens" and cfg["lens_type"] == "jacobian_lens"
    assert cfg["n_layers"] == N and cfg["d_model"] == D and cfg["residual_0"] == "fitted" and cfg["n_prompts"] == 7
    assert cfg["unembed_hash"] == lens.unembed.fingerprint() and "hook_out" in cfg["layer_index_convention"]
    back = load_lens(tmp_path / "jl", tiny_llama)
    assert isinstance(back, JacobianLens) and back.residual_0 == "fitted" and back.config["n_prompts"] == 7
    assert torch.equal(back.jacobian, lens.jacobian)
    assert glt.readout(glt.capture_residuals(tiny_llama, TEXTS), back).lens == "jacobian"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_half_precision_folder_loads_as_the_rounded_float32_lens(tiny_llama, tmp_path, dtype):
    """The shipped lens is stored in float16: the file holds ``dtype``, config.json says so, and
    the loaded lens (float32) is the original rounded to ``dtype``, nothing else changed."""
    from safetensors import safe_open

    lens = _random_lens(tiny_llama)
    lens.save(tmp_path / "jl", dtype=dtype)
    with safe_open(str(tmp_path / "jl" / "params.safetensors"), "pt") as f:
        assert f.get_tensor("jacobian").dtype == dtype
    assert json.loads((tmp_path / "jl" / "config.json").read_text())["dtype"] == str(dtype).removeprefix("torch.")
    back = load_lens(tmp_path / "jl", tiny_llama)
    assert back.jacobian.dtype == torch.float32 and torch.equal(back.jacobian, lens.jacobian.to(dtype).float())
    assert back.residual_0 == lens.residual_0 and back.config["n_prompts"] == lens.config["n_prompts"]
    with pytest.raises(glt.GltError, match=r"dtype must be torch.float32, torch.float16 or torch.bfloat16"):
        lens.save(tmp_path / "bad", dtype=torch.int8)
    assert not (tmp_path / "bad").exists()


def test_load_lens_still_loads_tuned_lens_folders(tiny_llama, tmp_path):
    TunedLens.from_model(tiny_llama).save(tmp_path / "tuned")
    assert type(load_lens(tmp_path / "tuned", tiny_llama)) is TunedLens


@pytest.mark.parametrize("residual_0", ["fitted", "identity"])
def test_artefact_round_trip_is_exact_and_keeps_a_fitted_residual_0(tiny_llama, tmp_path, residual_0):
    lens = _random_lens(tiny_llama)
    if residual_0 == "identity":
        J = lens.jacobian.clone()
        J[0] = torch.eye(D)
        lens.set_jacobian(J, residual_0="identity")
    export_jacobian_lens(lens, tmp_path / "a.pt")
    payload = torch.load(tmp_path / "a.pt", weights_only=True)
    assert sorted(payload["J"]) == [0, 1] and payload["source_layers"] == [0, 1] and payload["d_model"] == D
    assert payload["n_prompts"] == 7 and payload["metadata"]["target_layer"] == N - 1
    assert ("glt_embed_J" in payload) == (residual_0 == "fitted")
    back = import_jacobian_lens(tmp_path / "a.pt", tiny_llama)
    assert back.residual_0 == residual_0 and torch.equal(back.jacobian, lens.jacobian)
    export_jacobian_lens(lens, tmp_path / "half.pt", dtype=torch.float16)
    half = import_jacobian_lens(tmp_path / "half.pt", tiny_llama)
    torch.testing.assert_close(half.jacobian, lens.jacobian, rtol=1e-3, atol=1e-3)


@needs_tl4
def test_transformer_lens_reads_the_exported_artefact(tiny_llama, tmp_path):
    from transformer_lens.tools.analysis import JacobianLens as TLJacobianLens

    lens = _random_lens(tiny_llama)
    export_jacobian_lens(lens, tmp_path / "a.pt")
    theirs = TLJacobianLens.load(str(tmp_path / "a.pt"))
    assert theirs.source_layers == [0, 1] and theirs.d_model == D and theirs.n_prompts == 7
    for layer in range(N - 1):
        assert torch.equal(theirs.jacobians[layer], lens.jacobian[layer + 1])


def _payload(**change):
    J = {layer: torch.eye(D) for layer in range(N - 1)}
    payload = {"J": J, "n_prompts": 3, "source_layers": [0, 1], "d_model": D}
    payload.update(change)
    return {k: v for k, v in payload.items() if v is not None}


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.mark.parametrize("content,match", [
    (b"\x80\x04garbage", "could not be read safely"),
    (pickle.dumps({"J": _Evil()}), "could not be read safely"),
    (_payload(J=None), "not a Jacobian lens artefact.*'J'"),
    ([1, 2], "not a Jacobian lens artefact"),
    (_payload(d_model=640), "fitted for d_model=640 but the model has d_model=28: fit or download"),
    (_payload(J={0: torch.eye(D)}), "block outputs \\[0\\] but the model's n_layers=3 needs every block output 0..1"),
    (_payload(J={layer: torch.eye(D) for layer in range(17)}), "n_layers=3"),
    (_payload(J={0: torch.eye(D), 1: torch.eye(5)}), "J\\[1\\] is \\(5, 5\\), expected a float \\[28, 28\\]"),
    (_payload(J={0: torch.eye(D), 1: "x"}), "J\\[1\\] is str"),
    (_payload(J=[torch.eye(D)]), "malformed"),
    (_payload(source_layers=[0]), "lists source_layers \\[0\\] but J holds \\[0, 1\\]"),
    (_payload(metadata={"target_layer": 5}), "targets block 5, not the model's final block 2"),
    (_payload(J={0: torch.eye(D), 1: torch.full((D, D), float("nan"))}), "NaN/inf"),
    (_payload(glt_embed_J=torch.eye(4)), "glt_embed_J must be a \\[28, 28\\] tensor"),
])
def test_malformed_artefacts_raise_naming_the_file(tiny_llama, tmp_path, content, match):
    f = tmp_path / "bad.pt"
    if isinstance(content, bytes):
        f.write_bytes(content)
    else:
        torch.save(content, f)
    with pytest.raises(glt.GltError, match=match) as info:
        import_jacobian_lens(f, tiny_llama)
    assert str(f) in str(info.value)


def test_artefact_path_errors_and_fingerprint_check(tiny_llama, tmp_path):
    with pytest.raises(glt.GltError, match="does not exist"):
        import_jacobian_lens(tmp_path / "missing.pt", tiny_llama)
    with pytest.raises(glt.GltError, match="is a folder"):
        import_jacobian_lens(tmp_path, tiny_llama)
    export_jacobian_lens(_random_lens(tiny_llama), tmp_path / "a.pt")
    payload = torch.load(tmp_path / "a.pt", weights_only=True)
    assert payload["metadata"]["glt_unembed_hash"] == LogitLens.from_model(tiny_llama).unembed.fingerprint()
    payload["metadata"]["glt_unembed_hash"] = "0123456789abcdef"  # as if exported for another model
    torch.save(payload, tmp_path / "other.pt")
    with pytest.raises(glt.GltError, match="unembedding hash 0123456789abcdef.*allow_mismatch=True"):
        import_jacobian_lens(tmp_path / "other.pt", tiny_llama)
    with pytest.warns(UserWarning, match="allow_mismatch=True"):
        import_jacobian_lens(tmp_path / "other.pt", tiny_llama, allow_mismatch=True)


def _corrupt_missing_key(d):
    save_file({"weight": torch.zeros(N, D, D)}, str(d / "params.safetensors"))


def _corrupt_shape(d):
    save_file({"jacobian": torch.zeros(2, D, D)}, str(d / "params.safetensors"))


def _corrupt_nan(d):
    save_file({"jacobian": torch.full((N, D, D), float("nan"))}, str(d / "params.safetensors"))


def _corrupt_config(key, value):
    def corrupt(d):
        cfg = json.loads((d / "config.json").read_text())
        cfg[key] = value
        (d / "config.json").write_text(json.dumps(cfg))
    return corrupt


@pytest.mark.parametrize("corrupt,match", [
    (_corrupt_missing_key, "lacks tensor 'jacobian'"),
    (_corrupt_shape, "holds \\(2, 28, 28\\) but this lens needs"),
    (_corrupt_nan, "NaN/inf"),
    (_corrupt_config("n_layers", 18), "n_layers=18"),
    (_corrupt_config("d_model", 640), "d_model=640"),
    (_corrupt_config("residual_0", "maybe"), "residual_0 must be 'fitted' or 'identity'"),
    (_corrupt_config("residual_0", "identity"), "residual_0='identity' but jacobian\\[0\\] is not the identity"),
])
def test_corrupted_folder_raises(tiny_llama, tmp_path, corrupt, match):
    _random_lens(tiny_llama).save(tmp_path / "jl")
    corrupt(tmp_path / "jl")
    with pytest.raises(glt.GltError, match=match):
        load_lens(tmp_path / "jl", tiny_llama)


@pytest.mark.parametrize("idx", [-1, 4])
def test_bad_index_and_depth_raise(tiny_llama, idx):
    lens = JacobianLens.from_model(tiny_llama)
    with pytest.raises(glt.GltError, match="idx"):
        lens.transform_hidden(torch.zeros(2, D), idx)
    with pytest.raises(glt.GltError, match="n_layers \\+ 1"):
        lens.transform_stack(torch.zeros(2, 3, D))
    with pytest.raises(glt.GltError, match="n_layers=3"):
        lens.check_compatible(19, D)


def test_export_rejects_other_lenses_and_bad_dtypes(tiny_llama, tmp_path):
    with pytest.raises(glt.GltError, match="lens"):
        export_jacobian_lens(TunedLens.from_model(tiny_llama), tmp_path / "x.pt")
    with pytest.raises(glt.GltError, match="floating dtype"):
        export_jacobian_lens(JacobianLens.from_model(tiny_llama), tmp_path / "x.pt", dtype=torch.int64)
    with pytest.raises(glt.GltError, match="is a folder"):
        export_jacobian_lens(JacobianLens.from_model(tiny_llama), tmp_path)
