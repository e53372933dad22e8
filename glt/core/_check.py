"""Argument checking for the public API: a wrongly typed argument raises GltError naming it.

Every public function of `glt` is decorated with `checked` where it is defined, which checks its
annotated parameters at call time with jaxtyping + beartype (types, tensor dtypes and the named
dimensions of shape annotations, e.g. ``Int[Tensor, "layer n"]``; the allowed values of a
``Literal`` string option; the members of a protocol such as `glt.Lens`). A mismatch raises
`GltError` naming the function, the argument, what was expected (a ``Literal``'s values listed),
what arrived and the fix, rather than an ``AttributeError`` from deep inside. A check failing on a
*return value*, or in a function the checked one calls, is a glt bug and is raised unchanged.

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
import types
from collections.abc import Callable, Iterable
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

from beartype import beartype
from beartype.door import is_bearable
from jaxtyping import TypeCheckError, jaxtyped

from glt.core._errors import GltError

__all__ = ["check_type", "checked", "layer_indices"]

F = TypeVar("F", bound=Callable[..., Any])
_PARAM = re.compile(r"typechecking parameter '(\w+)'")


def _describe(annotation: Any) -> str:
    """``annotation`` in words: ``one of 'a', 'b'`` for a Literal, ``X or None`` for a union, a
    protocol with its members."""
    origin = get_origin(annotation)
    if origin is Literal:
        values = ", ".join(repr(v) for v in get_args(annotation))
        return f"one of {values}" if len(get_args(annotation)) > 1 else values
    if origin is Union or origin is types.UnionType:
        args = get_args(annotation)
        parts = [_describe(a) for a in args]
        for i, a in enumerate(args):  # "X or a sequence of X" reads "X, or a list of them"
            if getattr(get_origin(a), "__name__", "") == "Sequence" and get_args(a)[0] in args:
                parts[i] = "a list of them"
        return ", ".join(parts[:-1]) + " or " + parts[-1]
    if annotation is type(None):
        return "None"
    if origin is not None and getattr(origin, "__name__", "") == "Sequence" and len(get_args(annotation)) == 1:
        return f"a sequence of {_describe(get_args(annotation)[0]).removeprefix('a ')}"
    if isinstance(annotation, type) and getattr(annotation, "_is_protocol", False):
        members = [n for n in (*getattr(annotation, "__annotations__", {}), *vars(annotation)) if not n.startswith("_")]
        return f"a {annotation.__name__} (an object with {', '.join(dict.fromkeys(members))})"
    text = getattr(annotation, "__name__", None) if isinstance(annotation, type) else None
    if text and annotation.__module__.split(".")[0] == "torch":
        text = "torch." + text  # torch.dtype, torch.Tensor
    text = text or str(annotation).replace("typing.", "").replace("collections.abc.", "")
    return text.removeprefix("<class '").removesuffix("'>")


def _got(value: Any) -> str:
    """What arrived: the type, with the value for scalars and the shape and dtype for arrays."""
    if value is None:
        return "None"
    got = type(value).__name__
    if isinstance(value, (str, bytes, bool, int, float)):
        return got + f" {value!r:.60}"
    shape = getattr(value, "shape", None)
    got += f" of shape {tuple(shape)}" if shape is not None else ""
    dtype = getattr(value, "dtype", None)
    return got + (f" and dtype {dtype}" if dtype is not None else "")


def _fix(annotation: Any) -> str:
    several = get_origin(annotation) in (Literal, Union, types.UnionType) and len(get_args(annotation)) > 1
    if several:
        return "pass one of those"
    protocol = isinstance(annotation, type) and getattr(annotation, "_is_protocol", False)
    return "pass an object with those members" if protocol else "pass that type"


def check_type(value: Any, annotation: Any, *, name: str) -> None:
    """GltError naming ``name`` unless ``value`` matches ``annotation`` (the message of `checked`).

    For values that reach glt other than as a checked function's argument, such as the fields of
    a config dataclass.

    Example:
        >>> check_type("adam", Literal["sgd", "adam"], name="optimizer")
        >>> check_type("lbfgs", Literal["sgd", "adam"], name="optimizer")
        Traceback (most recent call last):
        ...
        glt.core._errors.GltError: optimizer must be one of 'sgd', 'adam', got str 'lbfgs': pass one of those
    """
    if not is_bearable(value, annotation):
        raise GltError(f"{name} must be {_describe(annotation)}, got {_got(value)}: {_fix(annotation)}")


def checked(fn: F) -> F:
    """``fn`` with its parameters checked at call time; a mismatch raises `GltError`."""
    if getattr(fn, "__glt_checked__", False):
        return fn
    inner = jaxtyped(typechecker=beartype)(fn)
    sig = inspect.signature(fn)
    where = f"{fn.__module__}.{fn.__qualname__}"

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return inner(*args, **kwargs)
        except TypeCheckError as e:
            msg = str(e)
            found = _PARAM.search(msg)
            # only this function's own parameters: a check failing in a call it makes (as under
            # jaxtyping's pytest hook, which checks every glt function) is raised unchanged
            if not msg.startswith(f"Type-check error whilst checking the parameters of {where}.") or not found \
                    or found.group(1) not in sig.parameters:
                raise
            name = found.group(1)
            try:
                value = sig.bind_partial(*args, **kwargs).arguments.get(name)
            except TypeError:
                value = None
            annotation = sig.parameters[name].annotation
            raise GltError(
                f"{fn.__name__}: argument {name} must be {_describe(annotation)}, got {_got(value)}: "
                + _fix(annotation)
                + (" (shapes must agree with the other arguments)" if hasattr(value, "shape") else "")
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
