"""One codec for every saved result: a tag with a version, one non-finite rule, declared fields.

Every file glt saves carries two keys, in its JSON object or in its safetensors metadata:

* ``"format": "glt.<Kind>"``: what the file holds (``glt.Readout``, ``glt.PosResult``, ...);
* ``"version": <int>``: the layout version of that kind (safetensors metadata holds strings,
  so there it is the same integer written as a string).

Loading checks both. Another kind, no tag, or a damaged version raises `GltError` naming the
file, the expected tag, what arrived and the fix; a version newer than this glt reads raises
`GltError` asking to upgrade glt. The tags glt 0.1.0 wrote (``"format": "glt.PosResult/1"``,
``"kind": "glt.MultipleChoiceResult"``, ...) are listed per kind in `Format.legacy` and load as
version 1: files written by an older glt keep loading.

Fields are declared by the annotations of the result dataclass:

* tensors by their jaxtyping annotation: ``Float[Tensor, "layer n"]`` is stored as nested lists
  (or a safetensors tensor) and loads as float32, ``Int[...]`` as int64, ``Bool[...]`` as bool.
  Named dims must agree across the fields and with the lengths `Format.sizes` names (e.g.
  ``{"layer": "layer_labels"}``), otherwise loading raises GltError;
* **non-finite rule**: in fields declared float (``float``, ``Float`` tensors, and floats inside
  tuples, named tuples and nested dataclasses) NaN is stored as JSON ``null``, +inf as the string
  ``"inf"`` and -inf as ``"-inf"``, and they load back as NaN, +inf and -inf. Saving never fails
  on a non-finite float; an untyped ``dict`` field loads exactly as JSON holds it (null stays None);
* ``tuple[X, ...]``, fixed tuples, ``dict[K, V]``, ``X | None``, nested dataclasses and named
  tuples are rebuilt from their annotations; a value of the wrong type raises GltError.

A result class subclasses `Saved` and declares its `Format` as ``_format``; it gets
``save(path) -> Path`` (atomic) and ``load(path)``, plus ``to_json()`` / ``from_json(data)``.

Example:
    >>> import dataclasses, math, tempfile
    >>> from typing import ClassVar
    >>> from jaxtyping import Float
    >>> @dataclasses.dataclass(frozen=True)
    ... class Demo(Saved):
    ...     _format: ClassVar[Format] = Format("glt.Demo", "demo result", sizes={"layer": "labels"})
    ...     labels: tuple[str, ...]
    ...     x: Float[torch.Tensor, "layer row"]
    >>> d = Demo(("embed", "final"), torch.tensor([[0.5, math.nan], [math.inf, -math.inf]]))
    >>> d.to_json()
    {'format': 'glt.Demo', 'version': 1, 'labels': ['embed', 'final'], 'x': [[0.5, None], ['inf', '-inf']]}
    >>> Demo.load(d.save(Path(tempfile.mkdtemp()) / "demo.json")).x.tolist()
    [[0.5, nan], [inf, -inf]]
"""

import dataclasses
import functools
import json
import math
import os
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
from jaxtyping import AbstractArray, Bool, Float, Int
from torch import Tensor

from glt._version import __version__
from glt.core._errors import GltError
from glt.core._io import atomic_write_text, malformed, read_json

__all__ = ["Format", "Saved", "encode", "read_tagged", "tensor_fields", "write_tagged"]

_INF, _NEG_INF = "inf", "-inf"
_STORAGE = {Float: torch.float32, Int: torch.int64, Bool: torch.bool}
_SIZED = (tuple, list, dict, str)
T = TypeVar("T", bound="Saved")


@dataclasses.dataclass(frozen=True, eq=False)
class Format:
    """The tag of one kind of saved file and how loading it talks about it.

    Attributes:
        tag: the ``format`` value, ``"glt.<Kind>"``.
        what: how error messages call the file (``"part-of-speech result"``).
        fix: what to do about a damaged file (``"rerun the study"``).
        version: the layout version this glt writes; files up to it load.
        legacy: ``(key, value)`` tags older glt versions wrote instead (loaded as version
            ``data.get("version", 1)``), e.g. ``(("format", "glt.PosResult/1"),)``.
        sizes: named dims bound to a field's length, e.g. ``{"layer": "layer_labels"}``.
        source: what writes such files, for the "pass a file written by ..." hint.
    """

    tag: str
    what: str
    fix: str = "delete it and compute it again"
    version: int = 1
    legacy: tuple[tuple[str, str], ...] = ()
    sizes: Mapping[str, str] = dataclasses.field(default_factory=dict)
    source: str = ""

    def header(self) -> dict[str, Any]:
        """``{"format": tag, "version": version}``, the first keys of every file."""
        return {"format": self.tag, "version": self.version}

    def check(self, data: Any, path: Any) -> int:
        """The file's version, once ``data`` (its parsed JSON or metadata) is known to be this kind.

        Raises GltError naming ``path`` when it is another kind, untagged, damaged or newer.
        """
        source = self.source or f"{self.tag.removeprefix('glt.')}.save()"
        if not isinstance(data, dict):
            raise GltError(f"{path} is not a glt {self.what} (it holds a JSON {type(data).__name__}, not an "
                           f"object): pass a file written by {source}")
        if data.get("format") == self.tag:
            version = data.get("version")
        elif any(data.get(key) == value for key, value in self.legacy):
            version = data.get("version", 1)
        else:
            key = next((k for k in ("format", *(k for k, _ in self.legacy)) if k in data), "format")
            got = f"{key} {data.get(key)!r:.60}" if key in data else "no format tag"
            raise GltError(f"{path} is not a glt {self.what} ({got}, expected format {self.tag!r}): pass a "
                           f"file written by {source}")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise GltError(f"{self.what} {path} is malformed (version {version!r}, expected an integer from 1 "
                           f"to {self.version}): {self.fix}")
        if version > self.version:
            raise GltError(f"{self.what} {path} is {self.tag} version {version}, newer than this glt "
                           f"{__version__} reads (up to version {self.version}): upgrade glt "
                           "(pip install --upgrade glt) to load it")
        return version


def _float_out(x: float) -> float | str | None:
    if math.isfinite(x):
        return x
    return None if math.isnan(x) else _INF if x > 0 else _NEG_INF


def _floats_out(v: Any) -> Any:
    return [_floats_out(x) for x in v] if isinstance(v, list) else _float_out(v)


def encode(value: Any) -> Any:
    """``value`` as JSON-ready data: tensors become nested lists, dataclasses dicts of their init
    fields, named tuples and tuples lists, and non-finite floats follow the non-finite rule.

    Example:
        >>> encode({"p": torch.tensor([1.0, float("nan")]), "taus": (0.5, float("-inf"))})
        {'p': [1.0, None], 'taus': [0.5, '-inf']}
    """
    if isinstance(value, Tensor):
        t = value.detach().cpu()
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            return _floats_out(t.tolist())
        return t.tolist()
    if isinstance(value, float):
        return _float_out(value)
    if value is None or isinstance(value, (str, int)):
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value) if f.init}
    if isinstance(value, Mapping):
        return {str(k): encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode(v) for v in value]
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return encode(value.tolist())
    raise TypeError(f"glt cannot save a {type(value).__name__}: this is a bug in glt, please report it")


def _dumps(obj: dict[str, Any]) -> str:
    """Strict JSON, one top-level key per line (the tag first) and each value on one line: readable
    headers, and the C encoder for the arrays (an indented dump runs json's Python encoder)."""
    return "{\n" + ",\n".join(f" {json.dumps(str(k))}: {json.dumps(v, allow_nan=False, separators=(',', ':'))}"
                               for k, v in obj.items()) + "\n}\n"


def write_tagged(path: str | os.PathLike, fmt: Format, payload: Mapping[str, Any]) -> Path:
    """Write ``fmt``'s tag and ``payload`` (encoded) to ``path`` as JSON, atomically."""
    return atomic_write_text(path, _dumps({**fmt.header(), **encode(payload)}), fmt.what)


def read_tagged(path: str | os.PathLike, fmt: Format) -> dict[str, Any]:
    """Read a JSON file written with ``fmt``'s tag (GltError naming the file otherwise)."""
    data = read_json(path, fmt.what)
    fmt.check(data, path)
    return data


# ------------------------------------------------------------------ decoding from annotations
def _float_in(x: Any, where: str) -> float:
    if x is None:
        return math.nan
    if x == _INF or x == _NEG_INF:
        return float(x)
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        return float(x)
    raise ValueError(f"{where} holds {x!r:.40}, expected a number, null (NaN), 'inf' or '-inf'")


def _floats_in(v: Any, where: str) -> Any:
    return [_floats_in(x, where) for x in v] if isinstance(v, list) else _float_in(v, where)


def _is_array(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, AbstractArray)


def _tensor(tp: Any, value: Any, where: str) -> Tensor:
    """A declared tensor field from nested lists (or a tensor), in its storage dtype."""
    kind = tp.dtype
    want = _STORAGE[kind]
    if isinstance(value, Tensor):
        t = value
    elif kind is Float:
        try:  # fast path: every entry a finite number
            t = torch.tensor(value, dtype=want)
        except (TypeError, ValueError, RuntimeError):
            t = torch.tensor(_floats_in(value, where), dtype=want)
    else:
        t = torch.tensor(value)
    if t.numel():
        if kind is Float and not t.is_floating_point() and isinstance(value, Tensor):
            raise TypeError(f"{where} is {t.dtype}, expected a float dtype")
        if kind is Int and (t.is_floating_point() or t.is_complex() or t.dtype == torch.bool):
            raise TypeError(f"{where} is {t.dtype}, expected int64")
        if kind is Bool and t.dtype != torch.bool:
            raise TypeError(f"{where} is {t.dtype}, expected bool")
    return t.to(want)


def _dims(tp: Any) -> tuple[str | int, ...]:
    out: list[str | int] = []
    for token in tp.dim_str.split():
        if token.isdigit():
            out.append(int(token))
        elif token.isidentifier():
            out.append(token)
        else:
            raise TypeError(f"{tp}: a saved tensor field needs named or fixed dims, not {token!r}")
    return tuple(out)


@functools.cache
def _schema(cls: type) -> tuple[dict[str, Any], dict[str, tuple[str | int, ...]]]:
    """``(annotations, {tensor field: dims})`` of a dataclass, read once."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    return {n: hints[n] for n in names}, {n: _dims(hints[n]) for n in names if _is_array(hints[n])}


def tensor_fields(cls: type) -> dict[str, torch.dtype]:
    """The declared tensor fields of a result dataclass and their storage dtypes, in field order."""
    hints, dims = _schema(cls)
    return {name: _STORAGE[hints[name].dtype] for name in dims}


def _check_shapes(cls: type, kw: dict[str, Any], where: str) -> None:
    """Bind every named dim once (from `Format.sizes`, then the tensors in field order), check that
    every tensor agrees, and give empty tensors that JSON flattened their declared shape."""
    _, dims = _schema(cls)
    fmt = getattr(cls, "_format", None)
    bound: dict[str | int, tuple[int, str]] = {}
    for dim, name in (fmt.sizes if fmt else {}).items():
        if isinstance(kw.get(name), _SIZED):
            bound[dim] = (len(kw[name]), f"len({name})")
    for name, ds in dims.items():
        t = kw.get(name)
        if t is None:
            continue
        if t.ndim != len(ds):
            if t.numel():
                raise ValueError(f"{where}{name} has shape {tuple(t.shape)}, expected {len(ds)} dims "
                                 f"[{' '.join(map(str, ds))}]")
            continue
        want = tuple(d if isinstance(d, int) else bound.get(d, (n, ""))[0] for d, n in zip(ds, t.shape, strict=True))
        if want != tuple(t.shape):
            bad = next(d for d, w, n in zip(ds, want, t.shape, strict=True) if w != n)
            why = f"{bad} = {bound[bad][0]} from {bound[bad][1]}" if bad in bound else f"fixed size {bad}"
            raise ValueError(f"{where}{name} has shape {tuple(t.shape)}, expected {want} "
                             f"[{' '.join(map(str, ds))}] ({why})")
        for d, n in zip(ds, t.shape, strict=True):
            bound.setdefault(d, (n, name))
    for name, ds in dims.items():
        t = kw.get(name)
        if t is not None and t.ndim != len(ds):
            shape = tuple(d if isinstance(d, int) else bound.get(d, (0, ""))[0] for d in ds)
            if math.prod(shape) != 0:
                raise ValueError(f"{where}{name} is empty, expected shape {shape} [{' '.join(map(str, ds))}]")
            kw[name] = t.reshape(shape)



def _decode_dataclass(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise TypeError(f"{where.rstrip('.') or cls.__name__} must be a JSON object, got {type(data).__name__}")
    hints, _ = _schema(cls)
    kw: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if f.name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ValueError(f"field {where + f.name!r} is missing")
            continue
        kw[f.name] = _decode(hints[f.name], data[f.name], f"{where}{f.name}")
    _check_shapes(cls, kw, where)
    try:
        return cls(**kw)
    except GltError as e:  # the class's own validation: a malformed file, reported with its path
        raise ValueError(f"{where.rstrip('.') or cls.__name__}: {e}") from e


def _decode(tp: Any, v: Any, where: str) -> Any:
    """``v`` (parsed JSON) rebuilt as annotation ``tp`` says; TypeError/ValueError if it cannot be."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if _is_array(tp):
        return _tensor(tp, v, where)
    if tp is float:
        return _float_in(v, where)
    if tp in (int, bool, str):
        if not isinstance(v, tp) or (tp is int and isinstance(v, bool)):
            raise TypeError(f"{where} is {type(v).__name__} {v!r:.40}, expected {tp.__name__}")
        return v
    if origin in (typing.Union, types.UnionType):
        if v is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _decode(inner[0], v, where) if len(inner) == 1 else v
    if isinstance(tp, type) and issubclass(tp, tuple) and hasattr(tp, "_fields"):  # a named tuple
        if not isinstance(v, list) or len(v) != len(tp._fields):
            raise TypeError(f"{where} must be a list of {len(tp._fields)} ({', '.join(tp._fields)}), got {v!r:.60}")
        hints = typing.get_type_hints(tp)
        return tp(*(_decode(hints.get(n, Any), x, f"{where}.{n}") for n, x in zip(tp._fields, v, strict=True)))
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return _decode_dataclass(tp, v, f"{where}.")
    if tp in (tuple, list) or origin in (tuple, list, Sequence):
        if not isinstance(v, list):
            raise TypeError(f"{where} is {type(v).__name__}, expected a list")
        if not args:
            return tuple(v)
        if origin is not tuple or (len(args) == 2 and args[1] is Ellipsis):
            return tuple(_decode(args[0], x, f"{where}[{i}]") for i, x in enumerate(v))
        if len(v) != len(args):
            raise ValueError(f"{where} has {len(v)} entries, expected {len(args)}")
        return tuple(_decode(a, x, f"{where}[{i}]") for i, (a, x) in enumerate(zip(args, v, strict=True)))
    if tp is dict or origin in (dict, Mapping):
        if not isinstance(v, dict):
            raise TypeError(f"{where} is {type(v).__name__}, expected a JSON object")
        if not args:
            return v
        key, val = args
        return {(int(k) if key is int else k): _decode(val, x, f"{where}[{k!r}]") for k, x in v.items()}
    return v  # Any, or an annotation glt does not rebuild: as JSON holds it


class Saved:
    """Base of every saved result dataclass: one ``save`` / ``load`` pair through this codec.

    A subclass declares ``_format: ClassVar[Format]``; its fields are stored as the module
    docstring says. Results stored in another container (`glt.Readout`, safetensors) override
    `save` / `load` and reuse `Format.check` and `from_json`.
    """

    _format: ClassVar[Format]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not isinstance(cls.__dict__.get("_format"), Format):
            raise TypeError(f"{cls.__name__} subclasses Saved, so it must declare _format: ClassVar[Format]")

    def to_json(self) -> dict[str, Any]:
        """The JSON object `save` writes: the tag, then every field."""
        return {**self._format.header(), **encode(self)}

    @classmethod
    def from_json(cls: type[T], data: Any, *, source: Any = "data") -> T:
        """Rebuild a result from `to_json`'s output (or a file's parsed JSON); GltError naming
        ``source`` (the file) if it is another kind, newer, or malformed."""
        fmt = cls._format
        fmt.check(data, source)
        with malformed(source, fmt.what, fmt.fix):
            return _decode_dataclass(cls, data, "")

    def save(self, path: str | os.PathLike) -> Path:
        """Write the result to ``path`` as JSON, atomically; read it back with `load`."""
        return atomic_write_text(path, _dumps(self.to_json()), self._format.what)

    @classmethod
    def load(cls: type[T], path: str | os.PathLike) -> T:
        """Read a result written by `save` (or by an older glt); GltError naming the file if it is
        missing, damaged, another kind of file, or written by a newer glt."""
        return cls.from_json(read_json(path, cls._format.what), source=path)
