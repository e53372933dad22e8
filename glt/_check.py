"""Argument checking for the public API: a wrongly typed argument raises GltError naming it.

Every public function of `glt` is wrapped (in ``glt/__init__.py``) by `checked`, which checks
its annotated parameters at call time with jaxtyping + beartype (types, tensor dtypes and the
named dimensions of shape annotations, e.g. ``Int[Tensor, "layer n"]``). A mismatch raises
`GltError` naming the function, the argument, what was expected, what arrived and the fix, rather
than an ``AttributeError`` from deep inside. Internal calls (e.g. ``glt._readout.readout``) are
not wrapped. A check failing on a *return value* is a glt bug and is raised unchanged.

Example:
    >>> import torch
    >>> from glt._onsets import compute_onsets
    >>> checked(compute_onsets)([[0, 1]], ks=(1,))
    Traceback (most recent call last):
    ...
    glt._errors.GltError: compute_onsets: argument ranks must be Int[Tensor, 'layer n'], got list: pass that type
"""

import functools
import inspect
import re
from collections.abc import Callable
from typing import Any, TypeVar

from beartype import beartype
from jaxtyping import TypeCheckError, jaxtyped

from glt._errors import GltError

__all__ = ["checked"]

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
