"""Argument checking for the public API: a wrongly typed argument raises GltError naming it.

Every public function of `glt` is wrapped (in ``glt/__init__.py``) by `checked`, which checks
its annotated parameters at call time with jaxtyping + beartype (types, tensor dtypes and the
named dimensions of shape annotations, e.g. ``Int[Tensor, "layer n"]``). A mismatch raises
`GltError` naming the function, the argument, what was expected, what arrived and the fix, rather
than an ``AttributeError`` from deep inside. Internal calls (e.g. ``glt.decoding._readout.readout``) are
not wrapped. A check failing on a *return value* is a glt bug and is raised unchanged.

Example:
    >>> import torch
    >>> from glt.decoding._onsets import compute_onsets
    >>> checked(compute_onsets)([[0, 1]], ks=(1,))
    Traceback (most recent call last):
    ...
    glt.core._errors.GltError: compute_onsets: argument ranks must be Int[Tensor, 'layer n'], got list: pass that type
"""

import functools
import inspect
import operator
import re
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from beartype import beartype
from jaxtyping import TypeCheckError, jaxtyped

from glt.core._errors import GltError

__all__ = ["checked", "layer_indices"]

F = TypeVar("F", bound=Callable[..., Any])
_PARAM = re.compile(r"typechecking parameter '(\w+)'")


def _describe(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) if isinstance(annotation, type) else None
    text = text or str(annotation).replace("typing.", "").replace("collections.abc.", "")
    return text.removeprefix("<class '").removesuffix("'>")


def checked(fn: F) -> F:
    """``fn`` with its parameters checked at call time; a mismatch raises `GltError`."""
    if getattr(fn, "__glt_checked__", False):
        return fn
    inner = jaxtyped(typechecker=beartype)(fn)
    sig = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return inner(*args, **kwargs)
        except TypeCheckError as e:
            msg = str(e)
            found = _PARAM.search(msg)
            if not msg.startswith("Type-check error whilst checking the parameters") or not found:
                raise
            name = found.group(1)
            try:
                value = sig.bind_partial(*args, **kwargs).arguments.get(name)
            except TypeError:
                value = None
            shape = getattr(value, "shape", None)
            got = type(value).__name__ + (f" of shape {tuple(shape)}" if shape is not None else "")
            dtype = getattr(value, "dtype", None)
            got += f" and dtype {dtype}" if dtype is not None else ""
            expected = _describe(sig.parameters[name].annotation)
            raise GltError(
                f"{fn.__name__}: argument {name} must be {expected}, got {got}: pass that type"
                + (" (shapes must agree with the other arguments)" if shape is not None else "")
            ) from None

    wrapper.__glt_checked__ = True  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]


def layer_indices(
    value: Any, *, name: str, last: int, increasing: bool = False, what: str = "residual indices",
    fix: str = "",
) -> tuple[int, ...]:
    """A non-empty list of layer indices in ``[0, last]`` as ints, or GltError naming ``name``.

    Elements may be Python ints or, where the caller's annotation admits them, NumPy integers
    and 0-d integer tensors (``operator.index``); floats, strings and bools (Python, NumPy or
    tensor) are refused rather than truncated. With ``increasing`` the indices must also be
    distinct and sorted.

    Example:
        >>> layer_indices(range(2, 5), name="layers", last=4, increasing=True)
        (2, 3, 4)
        >>> layer_indices([3, 1.5], name="layers", last=4)
        Traceback (most recent call last):
        ...
        glt.core._errors.GltError: layers must be residual indices in [0, 4], got [3, 1.5]
    """
    kind = ("increasing, distinct " if increasing else "") + what
    msg = f"{name} must be {kind} in [0, {last}], got {value!r:.80}" + (f"; {fix}" if fix else "")
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise GltError(msg)
    try:
        out = tuple(_index(x) for x in value)
    except TypeError:
        raise GltError(msg) from None
    if not out or any(not 0 <= x <= last for x in out):
        raise GltError(msg)
    if increasing and any(a >= b for a, b in zip(out, out[1:], strict=False)):
        raise GltError(msg)
    return out


def _index(x: Any) -> int:
    if isinstance(x, bool) or str(getattr(x, "dtype", "")) in ("bool", "torch.bool"):
        raise TypeError("a bool is not a layer index")
    return operator.index(x)
