"""The documentation is true of the code: it builds strictly, and everything it names exists.

* ``mkdocs build --strict`` succeeds (API pages from docstrings, tutorials, lens report), after
  the notebooks (``after_notebooks``), and every tutorial that this run executed is rendered with
  that run's outputs (``build/tutorials``, see the root ``conftest.py``), the others with a note;
* every Python code block in ``docs/**/*.md`` and the README compiles, every ``glt.<name>`` it
  (or any inline code span) mentions exists, and every keyword argument passed to a glt callable
  is a parameter of it;
* every ``glt <command> --option`` in a bash block is an option of that command;
* the tutorial notebooks use the public API only (``glt.<name>`` in ``glt.__all__``) with
  existing keyword arguments;
* every parameter a docstring's ``Args:`` section documents exists in the signature (names
  documented together as ``a, b: ...`` are checked one by one).
"""

import ast
import dataclasses
import importlib
import importlib.util
import inspect
import json
import pkgutil
import re
from pathlib import Path

import pytest

import glt

ROOT = Path(__file__).resolve().parents[2]
DOC_FILES = sorted((ROOT / "docs").rglob("*.md")) + [ROOT / "README.md"]
DOC_FILES = [p for p in DOC_FILES if "tutorials" not in p.relative_to(ROOT).parts]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))
_FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.S | re.M)
_GLT_NAME = re.compile(r"(?<![\w.])glt((?:\.[A-Za-z_]\w*)+)")
_GLT_NAME_UNQUOTED = re.compile(r"(?<![\w.\"'])glt((?:\.[A-Za-z_]\w*)+)")


def _blocks(path: Path, lang: str) -> list[str]:
    return [m.group(2) for m in _FENCE.finditer(path.read_text("utf-8")) if m.group(1) == lang]


def _resolve(dotted: str):
    """``glt.a.b`` -> the object, importing private submodules (``glt._x.y``) as needed."""
    parts = dotted.split(".")[1:]
    obj = glt
    for i, part in enumerate(parts):
        if hasattr(obj, part):
            obj = getattr(obj, part)
            continue
        if inspect.ismodule(obj):
            try:
                obj = importlib.import_module(".".join(["glt", *parts[: i + 1]]))
                continue
            except ImportError:
                pass
        raise AttributeError(f"{dotted}: {'.'.join(['glt', *parts[:i]])} has no attribute {part!r}")
    return obj


def _calls(tree: ast.AST):
    """Yield (dotted name, keyword names, line) of every call of ``glt.<...>(...)``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            chain, f = [], node.func
            while isinstance(f, ast.Attribute):
                chain.append(f.attr)
                f = f.value
            if isinstance(f, ast.Name) and f.id == "glt" and chain:
                kws = [k.arg for k in node.keywords if k.arg is not None]
                yield "glt." + ".".join(reversed(chain)), kws, node.lineno


def _check_call(dotted: str, kws: list[str]) -> list[str]:
    obj = _resolve(dotted)
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return []
    names = set(sig.parameters)
    if obj is glt.train_tuned_lens:  # its **overrides are the fields of its config
        names |= {f.name for f in dataclasses.fields(glt.TrainConfig)}
    elif any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        return []
    return [f"{dotted}() has no parameter {k!r}" for k in kws if k not in names]


def _python_problems(source: str, where: str, public_only: bool) -> list[str]:
    try:
        tree = ast.parse(source)
        compile(tree, where, "exec")
    except SyntaxError as e:
        return [f"{where}: does not compile: {e}"]
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            chain, f = [node.attr], node.value
            while isinstance(f, ast.Attribute):
                chain.append(f.attr)
                f = f.value
            if isinstance(f, ast.Name) and f.id == "glt" and len(chain) == 1:
                name = chain[0]
                if public_only and name not in glt.__all__:
                    problems.append(f"{where}: glt.{name} is not public (not in glt.__all__)")
                elif not hasattr(glt, name):
                    problems.append(f"{where}: glt.{name} does not exist")
        if public_only and isinstance(node, (ast.Import, ast.ImportFrom)):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            if any(m.startswith("glt.") for m in mods):
                problems.append(f"{where}: imports a private glt module ({mods}): use glt.<name>")
    for dotted, kws, line in _calls(tree):
        try:
            problems += [f"{where}:{line}: {p}" for p in _check_call(dotted, kws)]
        except AttributeError:
            if dotted.count(".") > 1:  # glt.X.y: only glt.X is checked above
                problems.append(f"{where}:{line}: {dotted} does not exist")
    return problems


@pytest.mark.after_notebooks
def test_mkdocs_build_strict(docs_site):
    assert docs_site.returncode == 0, docs_site.log[-6000:]
    site = docs_site.path
    for page in ("index.html", "tutorials/02_guess_then_refine/index.html", "lens/report/index.html",
                 "lens/smollm2-135m/report/index.html", "lens/jacobian/report/index.html",
                 "api/early_exit/index.html", "benchmarks/index.html", "cli/index.html",
                 "architecture/index.html", "img/architecture.svg"):
        assert (site / page).is_file(), f"{page} missing from the built site"
    # every public name has an entry (an anchor ``id="glt.<module>.<name>"``) on an API page
    api = "".join(p.read_text("utf-8") for p in sorted((site / "api").glob("*/index.html")))
    undocumented = [n for n in glt.__all__ if not re.search(rf'id="glt\.[\w.]*\.{re.escape(n)}"', api)]
    assert not undocumented, f"public names on no API page (docs/api/*.md): {undocumented}"


@pytest.mark.after_notebooks
def test_tutorial_pages_show_the_outputs_of_this_run(docs_site):
    """A notebook this run executed is rendered with its outputs (never executed a second time);
    any other tutorial page shows its code under a note saying the outputs are missing and why."""
    assert docs_site.returncode == 0, "the docs build failed: see test_mkdocs_build_strict"
    log = docs_site.log
    for nb in NOTEBOOKS:
        page = (docs_site.path / "tutorials" / nb.stem / "index.html").read_text("utf-8")
        # output cells in the markup (the inline stylesheet names the class too: not counted)
        outputs = len(re.findall(r'class="[^"]*\bjp-OutputArea-output\b', page))
        if "glt-no-outputs" in page:
            assert nb.name not in docs_site.executed, f"{nb.name} ran in this session but its page has no outputs"
            assert outputs == 0 and f"tutorials/{nb.name}: rendered without outputs" in log
            continue
        assert f"tutorials/{nb.name}: rendered with its outputs from build/tutorials/{nb.name}" in log
        assert outputs > 0, f"{nb.name}: rendered from its executed copy but the page shows no output"
        assert re.search(r'class="[^"]*\bjp-RenderedText\b', page) and 'data-mime-type="text/plain"' in page
        if nb.name == "01_quickstart.ipynb":  # the live explorer: its data and inline script survive rendering
            assert page.count('class="glt-x"') == 1 and 'class="glt-x-data"' in page
            assert "data-glt-ready" in page and 'src="data:image/png;base64,' in page
    if docs_site.executed:
        print(f"rendered with this run's outputs: {sorted(docs_site.executed)}")
    else:
        print("no notebook ran in this session: pages render build/tutorials copies where current, code only elsewhere")


def test_tutorial_renders_its_executed_copy_only_when_the_cells_match(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("glt_docs_hooks", ROOT / "docs" / "_hooks.py")
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    monkeypatch.setattr(hooks, "ROOT", tmp_path)
    monkeypatch.setattr(hooks, "EXECUTED", tmp_path / "build" / "tutorials")
    cells = [{"cell_type": "markdown", "metadata": {}, "source": ["# T\n", "text"]},
             {"cell_type": "code", "metadata": {}, "source": "print(1)", "outputs": [], "execution_count": None}]
    source = tmp_path / "notebooks" / "01_t.ipynb"
    source.parent.mkdir()
    source.write_text(json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    assert hooks._executed_copy(source) == (None, "no executed copy in build/tutorials/01_t.ipynb")
    ran = [cells[0] | {"source": "# T\ntext"}, cells[1] | {"outputs": [{"output_type": "stream", "name": "stdout",
                                                                       "text": ["1\n"]}], "execution_count": 1}]
    copy = tmp_path / "build" / "tutorials" / "01_t.ipynb"
    copy.parent.mkdir(parents=True)
    copy.write_text(json.dumps({"cells": ran, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    assert hooks._executed_copy(source) == (copy, "")  # the same cells, sources split into lines or not
    ran[1]["source"] = "print(2)"
    copy.write_text(json.dumps({"cells": ran, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    assert hooks._executed_copy(source) == (None, "build/tutorials/01_t.ipynb was executed from other cells: the "
                                            "notebook changed since")
    copy.write_text("{not json")
    assert "is not a readable notebook" in hooks._executed_copy(source)[1]


@pytest.mark.parametrize("path", DOC_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_python_blocks_compile_and_name_real_api(path):
    problems = []
    for i, block in enumerate(_blocks(path, "python")):
        problems += _python_problems(block, f"{path.name} block {i}", public_only=False)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("path", DOC_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_glt_name_in_the_text_exists(path):
    text = path.read_text("utf-8")
    missing = []
    for m in _GLT_NAME.finditer(text):
        dotted = "glt" + m.group(1)
        try:
            _resolve(dotted)
        except AttributeError as e:
            missing.append(str(e))
    assert not missing, f"{path.name}: " + "; ".join(sorted(set(missing)))


def _cli_options() -> dict[str, set[str]]:
    from glt.cli._main import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return {name: {s for a in p._actions for s in a.option_strings} for name, p in sub.choices.items()}


@pytest.mark.parametrize("path", DOC_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_cli_commands_in_bash_blocks_exist(path):
    options = _cli_options()
    problems = []
    for block in _blocks(path, "bash"):
        for cmd in re.split(r"&&|\n|;", block):
            words = cmd.split()
            if len(words) < 2 or words[0] != "glt":
                continue
            if words[1] not in options:
                problems.append(f"`glt {words[1]}` is not a glt command ({sorted(options)})")
                continue
            problems += [f"`glt {words[1]}` has no option {w}" for w in words[2:]
                         if w.startswith("--") and w.split("=")[0] not in options[words[1]]]
    assert not problems, f"{path.name}: " + "; ".join(problems)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_use_the_public_api(path):
    nb = json.loads(path.read_text("utf-8"))
    problems = []
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code":
            continue
        src = "".join(cell["source"])
        src = "\n".join("pass" if line.lstrip().startswith(("%", "!")) else line for line in src.splitlines())
        problems += _python_problems(src, f"{path.name} cell {i}", public_only=True)
    assert not problems, "\n".join(problems)


def _args_documented(doc: str) -> list[str]:
    """Parameter names of a Google docstring's ``Args:`` section (``a, b:`` gives both)."""
    lines = doc.expandtabs().splitlines()
    names: list[str] = []
    for i, line in enumerate(lines):
        if line.strip() not in ("Args:", "Arguments:", "Parameters:"):
            continue
        base = len(line) - len(line.lstrip())
        item_indent = None
        for item in lines[i + 1 :]:
            if not item.strip():
                continue
            indent = len(item) - len(item.lstrip())
            if indent <= base:
                break
            item_indent = item_indent or indent
            if indent == item_indent:
                m = re.match(r"\s*([\w*, ]+?)(?:\s*\([^)]*\))?:(\s|$)", item)
                if m:
                    names += [n.strip().lstrip("*") for n in m.group(1).split(",") if n.strip()]
    return names


def _documented_callables():
    for info in pkgutil.walk_packages(glt.__path__, "glt."):  # every subpackage's modules too
        mod = importlib.import_module(info.name)
        for name, obj in vars(mod).items():
            if name.startswith("__") or getattr(obj, "__module__", None) != mod.__name__:
                continue
            if inspect.isfunction(obj):
                yield f"{mod.__name__}.{name}", obj
            elif inspect.isclass(obj):
                for attr, member in vars(obj).items():
                    fn = member.__func__ if isinstance(member, (classmethod, staticmethod)) else member
                    if inspect.isfunction(fn) and (attr == "__init__" or not attr.startswith("__")):
                        yield f"{mod.__name__}.{name}.{attr}", fn


def test_documented_arguments_exist():
    problems = []
    for where, fn in _documented_callables():
        if not fn.__doc__:
            continue  # (inspect.getdoc would inherit a base class's docstring)
        doc = inspect.cleandoc(fn.__doc__)
        params = inspect.signature(fn).parameters
        if any(p.kind is p.VAR_KEYWORD for p in params.values()):
            continue
        problems += [f"{where}: documents {n!r}, not a parameter" for n in _args_documented(doc)
                     if n not in params]
    assert not problems, "\n".join(problems)


def test_args_parser_reads_combined_names():
    doc = """Do it.

    Args:
        a, b: two at once, which
            continues here: with a colon.
        c (int): typed.

    Returns:
        x: not an argument.
    """
    assert _args_documented(inspect.cleandoc(doc)) == ["a", "b", "c"]


def _docstrings():
    """(module file, line, docstring) of every module, class and function docstring in glt."""
    for path in sorted((ROOT / "glt").rglob("*.py")):
        tree = ast.parse(path.read_text("utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node, clean=False)
                if doc:
                    yield path.relative_to(ROOT / "glt").as_posix(), getattr(node, "lineno", 1), doc


def test_docstrings_name_real_api():
    """A docstring (an API page) that says ``glt.<name>`` means a name that exists."""
    missing = []
    for name, line, doc in _docstrings():
        for m in _GLT_NAME_UNQUOTED.finditer(doc):  # "glt.Readout" in quotes is a file's format tag
            dotted = "glt" + m.group(1)
            try:
                _resolve(dotted)
            except AttributeError:
                missing.append(f"glt/{name}:{line}: {dotted}")
    assert not missing, "\n".join(sorted(set(missing)))
