"""The public API checks its arguments: a wrongly typed one raises GltError naming it."""

import inspect
import typing

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


# ------------------------------------------------------------------------------ string options
def _lens() -> glt.LogitLens:
    return glt.LogitLens(glt.Unembed(torch.nn.Identity(), torch.eye(3), None), n_layers=1)


def _stack() -> glt.ResidualStack:
    return glt.ResidualStack(torch.zeros(2, 1, 2, 3), torch.zeros(1, 2, dtype=torch.long),
                             torch.ones(1, 2, dtype=torch.bool), ("embed", "final"))


# (call with the bad value, function, argument, allowed values, bad value): every public string option
LITERALS = [
    (lambda v: glt.readout(_stack(), _lens(), positions=v), "readout", "positions", ("last",), "first"),
    (lambda v: glt.run_guess_then_refine(None, _lens(), cuts=v), "run_guess_then_refine", "cuts", ("all", "random"),
     "every"),
    (lambda v: glt.run_pos_study(None, _lens(), construction=v), "run_pos_study", "construction", ("first", "every"),
     "all"),
    (lambda v: glt.run_multiple_choice(None, _lens(), task=v), "run_multiple_choice", "task",
     ("mmlu", "sst2", "mrpc", "rte"), "mnli"),
    (lambda v: glt.load_mc_dataset(v), "load_mc_dataset", "task", ("mmlu", "sst2", "mrpc", "rte"), "mnli"),
    (lambda v: glt.format_mc_prompt(glt.MCExample("q", ("a", "b"), 0), task=v), "format_mc_prompt", "task",
     ("mmlu", "sst2", "mrpc", "rte"), "MMLU"),
    (lambda v: glt.patch_layers(None, "a", "b", target_options=[" a"], source_options=[" b"], position=v),
     "patch_layers", "position", ("last",), "first"),
    (lambda v: glt.wikipedia_paragraphs(v), "wikipedia_paragraphs", "split", ("train", "heldout", "all"), "test"),
    (lambda v: glt.read_mquake("x.json", kind=v), "read_mquake", "kind", ("cloze", "question"), "chat"),
    (lambda v: glt.plot_onset_curves([], kind=v), "plot_onset_curves", "kind", ("first", "stable", "both"), "last"),
    (lambda v: glt.plot_onset_curves([], stat=v), "plot_onset_curves", "stat", ("mean", "median"), "max"),
    (lambda v: glt.plot_token_heatmap(None, color=v), "plot_token_heatmap", "color", ("prob", "rank"), "blue"),
    (lambda v: glt.plot_fact_onsets(None, kind=v), "plot_fact_onsets", "kind", ("first", "stable", "both"), "x"),
    (lambda v: glt.plot_fact_onsets(None, outcome=v), "plot_fact_onsets", "outcome", ("correct", "incorrect"), "all"),
    (lambda v: glt.plot_fact_ranks(None, outcome=v), "plot_fact_ranks", "outcome", ("correct", "incorrect"), "all"),
    (lambda v: glt.plot_pos_onsets(None, subset=v), "plot_pos_onsets", "subset", ("correct", "incorrect", "all"),
     "some"),
    (lambda v: glt.plot_pos_onsets(None, kind=v), "plot_pos_onsets", "kind", ("first", "stable", "both"), "x"),
    (lambda v: glt.plot_pos_ranks(None, subset=v), "plot_pos_ranks", "subset", ("correct", "incorrect", "all"), "x"),
    (lambda v: glt.plot_mc_format(None, measure=v), "plot_mc_format", "measure",
     ("option_mass", "format_inside", "format_rank"), "decision_agree"),
    (lambda v: glt.plot_mc_decision(None, measure=v), "plot_mc_decision", "measure",
     ("decision_agree", "decision_rank", "choice_prob", "gold_prob"), "option_mass"),
    (lambda v: glt.plot_early_exit(None, metric=v), "plot_early_exit", "metric", ("agreement", "accuracy"), "speed"),
]


@pytest.mark.parametrize("call,fn,arg,allowed,bad", LITERALS, ids=[f"{c[1]}-{c[2]}" for c in LITERALS])
def test_a_wrong_string_option_names_the_argument_the_allowed_values_and_what_arrived(call, fn, arg, allowed, bad):
    with pytest.raises(glt.GltError, match=rf"^{fn}: argument {arg} must be ") as e:
        call(bad)
    msg = str(e.value)
    assert all(repr(a) in msg for a in allowed), msg
    assert f"got str {bad!r}: pass one of those" in msg


def test_the_string_options_are_literals_in_the_signatures():
    """Each option above is a ``Literal`` of exactly the values listed (the table cannot drift)."""
    for _, fn, arg, allowed, _ in LITERALS:
        hint = inspect.signature(getattr(glt, fn)).parameters[arg].annotation
        literals = [a for a in (hint, *typing.get_args(hint)) if typing.get_origin(a) is typing.Literal]
        assert [v for lit in literals for v in typing.get_args(lit)] == list(allowed), (fn, arg)


def test_mc_task_names_are_the_tasks_defined():
    from glt.studies.multiple_choice._data import _TASKS, MC_TASKS

    assert tuple(_TASKS) == MC_TASKS


def test_a_failed_check_in_a_called_function_is_not_blamed_on_the_caller():
    """Under jaxtyping's pytest hook every glt function is checked; a mismatch inside a call the
    checked function makes is a glt bug, raised unchanged rather than renamed as the caller's."""
    from beartype import beartype
    from jaxtyping import TypeCheckError, jaxtyped

    @jaxtyped(typechecker=beartype)
    def inner(k: typing.Literal["a"]) -> None:
        pass

    def outer(x: int) -> None:
        inner(k="b")

    with pytest.raises(TypeCheckError, match="inner"):
        checked(outer)(1)
    with pytest.raises(glt.GltError, match="outer: argument x must be int, got str 'y'"):
        checked(outer)("y")
