"""Docs tell the truth: every argument and attribute a docstring documents exists in the code.

Google-style ``Args:`` sections (one or several comma-separated names per entry) of every public
function, method and class of `glt` must name parameters of its signature; ``Attributes:`` of
dataclasses must name fields. (mkdocs's griffe check cannot read comma-separated entries.)
"""

import dataclasses
import inspect
import re

import pytest

import glt

_ENTRY = re.compile(r"^(\s+)(\*{0,2}[A-Za-z_][\w]*(?:, \*{0,2}[A-Za-z_][\w]*)*)(?: \([^)]*\))?:(?:\s|$)")


def _section(doc: str, title: str) -> list[str]:
    lines = doc.splitlines()
    names: list[str] = []
    for i, line in enumerate(lines):
        if line.strip() != f"{title}:":
            continue
        base = len(line) - len(line.lstrip())
        indent = None
        for entry in lines[i + 1 :]:
            if entry.strip() and len(entry) - len(entry.lstrip()) <= base:
                break
            m = _ENTRY.match(entry)
            if m and (indent is None or len(m.group(1)) == indent):
                indent = len(m.group(1))
                names += [n.lstrip("*") for n in m.group(2).split(", ")]
    return names


def _public_objects():
    for name in glt.__all__:
        obj = getattr(glt, name)
        if inspect.isfunction(obj):
            yield name, obj
        elif inspect.isclass(obj):
            yield name, obj
            for mname, meth in vars(obj).items():
                fn = getattr(meth, "__func__", meth)
                if inspect.isfunction(fn) and not mname.startswith("_") and fn.__doc__:
                    yield f"{name}.{mname}", fn


CASES = list(_public_objects())


@pytest.mark.parametrize("name,obj", CASES, ids=[c[0] for c in CASES])
def test_documented_arguments_exist(name, obj):
    doc = inspect.getdoc(obj) or ""
    target = obj.__init__ if inspect.isclass(obj) and not dataclasses.is_dataclass(obj) else obj
    documented = _section(doc, "Args")
    if not documented:
        return
    params = set(inspect.signature(target).parameters)
    if dataclasses.is_dataclass(obj):
        params |= {f.name for f in dataclasses.fields(obj)}
    missing = [n for n in documented if n not in params]
    assert not missing, f"{name} documents arguments it does not take: {missing}"


@pytest.mark.parametrize("name,obj", [c for c in CASES if dataclasses.is_dataclass(c[1])],
                         ids=[c[0] for c in CASES if dataclasses.is_dataclass(c[1])])
def test_documented_attributes_are_fields(name, obj):
    documented = _section(inspect.getdoc(obj) or "", "Attributes")
    fields = {f.name for f in dataclasses.fields(obj)}
    props = {n for n, v in vars(obj).items() if isinstance(v, property)}
    missing = [n for n in documented if n not in fields | props]
    assert not missing, f"{name} documents attributes it does not have: {missing}"
    assert documented, f"{name} has no Attributes section"


def test_the_parser_reads_comma_separated_entries():
    doc = "X.\n\nArgs:\n    a, b: two.\n    c (int): one.\n        continued: not an entry.\n"
    assert _section(doc, "Args") == ["a", "b", "c"]
