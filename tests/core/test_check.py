"""The public API checks its arguments: a wrongly typed one raises GltError naming it."""

import inspect

import numpy as np
import pytest
import torch

import glt
from glt.core._check import checked, layer_indices


def test_every_public_function_is_checked():
    funcs = [n for n in glt.__all__ if inspect.isfunction(getattr(glt, n))]
    assert len(funcs) > 40
    assert [n for n in funcs if not getattr(getattr(glt, n), "__glt_checked__", False)] == []


def test_wrapping_keeps_name_doc_and_signature():
    assert glt.readout.__name__ == "readout"
    assert glt.readout.__doc__ == glt.decoding._readout.readout.__doc__
    assert "stack" in inspect.signature(glt.readout).parameters
    assert checked(glt.readout) is glt.readout  # idempotent


@pytest.mark.parametrize("call,arg", [
    (lambda: glt.compute_onsets([[0, 1]], ks=(1,)), "ranks"),
    (lambda: glt.compute_onsets(torch.zeros(2, 3), ks=(1,)), "ranks"),  # float, not int
    (lambda: glt.first_crossing(torch.zeros(2, 3, dtype=torch.long), "1"), "k"),
])
def test_wrong_type_names_the_argument_expected_and_got(call, arg):
    with pytest.raises(glt.GltError, match=rf"argument {arg} must be .*, got "):
        call()


def test_glt_errors_from_inside_pass_through_unchanged():
    with pytest.raises(glt.GltError, match="ks must hold integer thresholds"):
        glt.compute_onsets(torch.zeros(3, 2, dtype=torch.long), ks=("a",))


@pytest.mark.parametrize("value,want", [
    ([0, 4], (0, 4)), (range(1, 3), (1, 2)), ((np.int64(2), torch.tensor(3)), (2, 3)), ([3, 1], (3, 1)),
])
def test_layer_indices_accept_any_integer_type(value, want):
    got = layer_indices(value, name="layers", last=4)
    assert got == want and all(type(x) is int for x in got)


@pytest.mark.parametrize("value", [[], [5], [-1], [1.0], [1.5], ["1"], "12", 3, [True], None,
                                   [np.bool_(True)], [torch.tensor(True)], [torch.tensor(1.0)]])
def test_layer_indices_refuse_what_is_not_an_index(value):
    with pytest.raises(glt.GltError, match=r"exit_layers must be residual indices in \[0, 4\], got"):
        layer_indices(value, name="exit_layers", last=4)


@pytest.mark.parametrize("value", [[2, 1], [1, 1]])
def test_increasing_layer_indices_refuse_unsorted_or_repeated(value):
    assert layer_indices(value, name="layers", last=4) == tuple(value)
    with pytest.raises(glt.GltError, match="increasing, distinct translator indices in .0, 4.*pass None"):
        layer_indices(value, name="layers", last=4, increasing=True, what="translator indices", fix="pass None")
