"""The `glt.Lens` contract: glt's lenses satisfy it, a lens of your own works, a non-lens is refused.

Every public function taking a lens is annotated ``Lens`` (or ``Lens | None``): handed something
else it raises GltError naming ``lens`` and the members a lens needs, before any work is done.
"""

import inspect
import typing

import pytest
import torch
from torch import nn

import glt
from glt.core._capture import ResidualStack
from glt.lenses._protocol import _MEMBERS, Lens

D_MODEL, D_VOCAB, N_LAYERS = 5, 11, 3  # distinct primes: a swapped axis fails


def _unembed() -> glt.Unembed:
    return glt.Unembed(nn.Identity(), torch.randn(D_MODEL, D_VOCAB, generator=torch.Generator().manual_seed(0)), None)


class ScaledLens:
    """A lens of one's own, subclassing nothing: every residual index scaled by ``1 + idx``."""

    name = "scaled"

    def __init__(self, unembed: glt.Unembed) -> None:
        self.unembed = unembed

    def transform_stack(self, resid: torch.Tensor) -> torch.Tensor:
        scale = torch.arange(1, resid.shape[0] + 1, dtype=resid.dtype).view(-1, *([1] * (resid.ndim - 1)))
        return resid * scale

    def check_compatible(self, n_residuals: int, d_model: int) -> None:
        if d_model != self.unembed.d_model:
            raise glt.GltError(f"lens was built for d_model={self.unembed.d_model}, got {d_model}")


class ModuleLens(nn.Module):
    """The same as a torch module, whose ``unembed`` lives in ``_modules`` (not found by a static
    attribute lookup, which Python >= 3.12's runtime protocols use)."""

    name = "module"

    def __init__(self, unembed: glt.Unembed) -> None:
        super().__init__()
        self.unembed = unembed

    def transform_stack(self, resid: torch.Tensor) -> torch.Tensor:
        return resid

    def check_compatible(self, n_residuals: int, d_model: int) -> None:
        pass


def _stack(batch: int = 2, pos: int = 7) -> ResidualStack:
    resid = torch.randn(N_LAYERS + 1, batch, pos, D_MODEL, generator=torch.Generator().manual_seed(1))
    tokens = torch.zeros(batch, pos, dtype=torch.long)
    labels = ("embed", *(f"block {i}" for i in range(1, N_LAYERS)), "final")
    return ResidualStack(resid, tokens, torch.ones(batch, pos, dtype=torch.bool), labels)


# ------------------------------------------------------------------------------ who is a lens
def test_glt_lenses_and_lenses_of_ones_own_are_lenses():
    u = _unembed()
    for lens in (glt.LogitLens(u, N_LAYERS), glt.TunedLens(u, N_LAYERS), ScaledLens(u), ModuleLens(u)):
        assert isinstance(lens, glt.Lens), type(lens).__name__
    assert glt.Lens is Lens and glt.lenses.Lens is Lens and "Lens" in glt.__all__


class _Without:
    def __init__(self, missing: str) -> None:
        self.missing = missing
        self.unembed, self.name = _unembed(), "partial"

    def __getattribute__(self, key: str):
        if key == object.__getattribute__(self, "missing"):
            raise AttributeError(key)
        return object.__getattribute__(self, key)

    def transform_stack(self, resid):
        return resid

    def check_compatible(self, n_residuals, d_model):
        pass


@pytest.mark.parametrize("value", [None, "logit", 3, object(), glt.LogitLens, {"unembed": 1, "name": "x"},
                                   *[_Without(m) for m in _MEMBERS]],
                         ids=lambda v: f"without {v.missing}" if isinstance(v, _Without) else repr(v)[:20])
def test_what_lacks_a_member_is_not_a_lens(value):
    assert not isinstance(value, glt.Lens)


def test_a_member_that_must_be_called_must_be_callable():
    lens = ScaledLens(_unembed())
    lens.transform_stack = "not a function"
    assert not isinstance(lens, glt.Lens)


def test_glt_lenses_match_the_protocol_signatures():
    """Static-ish: every method of the protocol has the same parameters and annotations on
    LogitLens and TunedLens, and every attribute's type is what the protocol declares."""
    hints = typing.get_type_hints(Lens)
    assert set(_MEMBERS) == set(hints) | {n for n, v in vars(Lens).items() if inspect.isfunction(v)
                                          and not n.startswith("_")}
    u = _unembed()
    for lens in (glt.LogitLens(u, N_LAYERS), glt.TunedLens(u, N_LAYERS)):
        for member in _MEMBERS:
            want = getattr(Lens, member, None)
            if inspect.isfunction(want):
                got = inspect.signature(getattr(type(lens), member))
                assert list(got.parameters) == list(inspect.signature(want).parameters), member
                for name, p in inspect.signature(want).parameters.items():  # jaxtyping types compare by text
                    assert str(got.parameters[name].annotation) == str(p.annotation), (type(lens).__name__, member)
                assert str(got.return_annotation) == str(inspect.signature(want).return_annotation), member
            else:
                assert isinstance(getattr(lens, member), hints[member]), member


# ------------------------------------------------------------------------------ a lens of one's own works
def test_a_lens_of_ones_own_reads_out_like_the_equivalent_logit_lens():
    u, stack = _unembed(), _stack()
    mine = glt.readout(stack, ScaledLens(u), top_k=3)
    scaled = ResidualStack(ScaledLens(u).transform_stack(stack.resid), stack.tokens, stack.mask, stack.labels)
    ref = glt.readout(scaled, glt.LogitLens(u, N_LAYERS), top_k=3)
    assert mine.lens == "scaled" and ref.lens == "logit"
    assert torch.equal(mine.ranks, ref.ranks) and torch.equal(mine.topk_ids, ref.topk_ids)
    torch.testing.assert_close(mine.kl_to_final, ref.kl_to_final)
    with pytest.raises(glt.GltError, match="d_model=5"):
        bad = ResidualStack(torch.zeros(N_LAYERS + 1, 1, 2, 7), stack.tokens[:1, :2], stack.mask[:1, :2], stack.labels)
        glt.readout(bad, ScaledLens(u))


# ------------------------------------------------------------------------------ a non-lens is refused
def _calls(tiny_llama):
    """(function, call with ``lens`` replaced by the given value) for every public function taking a lens."""
    return [
        ("readout", lambda x: glt.readout(_stack(), x)),
        ("sharded_readout", lambda x: glt.sharded_readout(tiny_llama, ["a b"], lens=x)),
        ("run_guess_then_refine", lambda x: glt.run_guess_then_refine(tiny_llama, x, ["a b"], progress=False)),
        ("run_pos_study", lambda x: glt.run_pos_study(tiny_llama, x, ["a b"], progress=False)),
        ("run_fact_recall", lambda x: glt.run_fact_recall(tiny_llama, x, [("a", " b")], progress=False)),
        ("run_multiple_choice", lambda x: glt.run_multiple_choice(tiny_llama, x, progress=False)),
        ("patch_layers", lambda x: glt.patch_layers(tiny_llama, "a", "b", target_options=[" a"],
                                                    source_options=[" b"], lens=x)),
        ("sublayer_split", lambda x: glt.sublayer_split(tiny_llama, x, ["a b"], progress=False)),
    ]


@pytest.mark.parametrize("value", ["tuned", object(), glt.LogitLens, torch.zeros(3)],
                         ids=["a lens's name", "object", "the class", "a tensor"])
def test_every_public_function_taking_a_lens_refuses_a_non_lens(tiny_llama, value):
    for fn, call in _calls(tiny_llama):
        with pytest.raises(glt.GltError, match=rf"^{fn}: argument lens must be a Lens \(an object with name, "
                                               r"unembed, transform_stack, check_compatible\)") as e:
            call(value)
        assert f"got {type(value).__name__}" in str(e.value), fn


def test_the_table_covers_every_public_function_taking_a_lens(tiny_llama):
    """A new public function annotated ``Lens`` must join the table above."""
    covered = {fn for fn, _ in _calls(tiny_llama)}
    taking = set()
    for name in glt.__all__:
        obj = getattr(glt, name)
        if inspect.isfunction(obj):
            params = inspect.signature(obj).parameters
            if "lens" in params and Lens in (params["lens"].annotation, *typing.get_args(params["lens"].annotation)):
                taking.add(name)
    assert taking == covered


def test_evaluate_lens_checks_every_lens_of_the_mapping(tiny_llama):
    """The signature's check looks at one entry (beartype: the first); the function checks the rest."""
    good = glt.LogitLens.from_model(tiny_llama)
    with pytest.raises(glt.GltError, match=r"evaluate_lens: argument lenses must be .*Lens"):
        glt.evaluate_lens(tiny_llama, {"bad": "logit"}, ["a b c"])
    with pytest.raises(glt.GltError, match=r"lenses\['bad'\] must be a glt.Lens .* got str"):
        glt.evaluate_lens(tiny_llama, {f"good{i}": good for i in range(20)} | {"bad": "logit"}, ["a b c"],
                          progress=False)


def test_export_wants_a_tuned_lens(tiny_llama, tmp_path):
    with pytest.raises(glt.GltError, match="export_tuned_lens: argument lens must be TunedLens, got LogitLens"):
        glt.export_tuned_lens(glt.LogitLens.from_model(tiny_llama), tmp_path / "x")
