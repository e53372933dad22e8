"""The public API checks its arguments: a wrongly typed one raises GltError naming it."""

import inspect

import pytest
import torch

import glt
from glt._check import checked


def test_every_public_function_is_checked():
    funcs = [n for n in glt.__all__ if inspect.isfunction(getattr(glt, n))]
    assert len(funcs) > 40
    assert [n for n in funcs if not getattr(getattr(glt, n), "__glt_checked__", False)] == []


def test_wrapping_keeps_name_doc_and_signature():
    assert glt.readout.__name__ == "readout"
    assert glt.readout.__doc__ == glt._readout.readout.__doc__
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
