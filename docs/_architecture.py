"""Write ``docs/architecture.md`` and its diagram from glt's own import statements, and refuse to
write them when the code breaks the layering rules.

Run ``python docs/_architecture.py`` after adding, moving or removing a module, or after editing a
subpackage's ``__init__`` docstring (the page quotes it): the page and ``docs/img/architecture.svg``
are rewritten. ``python docs/_architecture.py --check`` writes nothing and exits 1 when either
file is stale. Both exit 1, naming every offending import, when the code breaks a rule:

* an import cycle among modules (imports inside functions count);
* an upward import: a subpackage importing one later in the pipeline (`LAYERS`);
* a study importing another study;
* an import of the package root ``glt`` (only ``glt/__init__.py`` re-exports, and nothing imports it);
* an import of a glt module inside a function without a comment saying which heavy optional
  dependency it defers;
* a module outside every layer (a new subpackage must be placed in `LAYERS`).

Imports are read with `ast`, never executed: every ``import glt...`` / ``from glt... import``
statement (relative ones resolved), at module level or inside functions; ``if TYPE_CHECKING:``
blocks are left out (they never run). ``tests/project/test_architecture.py`` rebuilds the page,
compares it with the committed one and checks the rules.
"""

import argparse
import ast
import sys
import textwrap
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PAGE = Path("docs/architecture.md")
SVG = Path("docs/img/architecture.svg")
PKG = "glt"
STUDIES = "glt.studies"

# The pipeline, in the order data flows. A subpackage may import only those before it. Every
# package under glt.studies is a study (listed ones first, in this order; new ones after them).
LAYERS = (
    "glt._version",
    "glt.core",
    "glt.data",
    "glt.lenses",
    "glt.lenses.fit",
    "glt.decoding",
    "glt.plotting",
    STUDIES,
    "glt.pipeline",
    "glt.compare",
    "glt.cli",
)
STUDY_ORDER = ("guess_then_refine", "part_of_speech", "fact_recall", "multiple_choice", "early_exit", "patching")
ROOT_MODULES = (PKG, f"{PKG}.__main__")  # the public namespace and ``python -m glt``: above every layer


class ArchitectureError(Exception):
    """The code breaks a layering rule; the message lists every offending import."""


@dataclass(frozen=True)
class Import:
    """One import statement's edge: ``source`` (a module) imports ``target`` (a glt module)."""

    source: str
    target: str
    line: int
    in_function: bool
    comment: str


@dataclass(frozen=True)
class Module:
    name: str
    path: Path  # relative to the repository root
    lines: int
    doc: str
    exports: tuple[str, ...]

    @property
    def summary(self) -> str:
        """The docstring's first paragraph, on one line."""
        return " ".join(self.doc.split("\n\n")[0].split())


@dataclass(frozen=True)
class Package:
    modules: dict[str, Module]
    imports: tuple[Import, ...]
    units: tuple[str, ...]  # LAYERS with STUDIES expanded into the studies, in pipeline order

    def unit(self, module: str) -> str:
        """The layer (subpackage or study) ``module`` belongs to; the root modules are their own."""
        if module in ROOT_MODULES:
            return PKG
        owners = [u for u in (*self.units, STUDIES) if module == u or module.startswith(u + ".")]
        return max(owners, key=len) if owners else ""

    def rank(self, unit: str) -> int:
        """Position in the pipeline: studies share one rank; the root comes after everything."""
        if unit == PKG:
            return len(LAYERS)
        if unit == STUDIES or unit.startswith(STUDIES + "."):
            return LAYERS.index(STUDIES)
        return LAYERS.index(unit)

    def members(self, unit: str) -> list[Module]:
        return [m for name, m in sorted(self.modules.items()) if self.unit(name) == unit]

    def unit_edges(self) -> dict[tuple[str, str], int]:
        """``{(importer, imported): number of module-to-module edges}`` between different layers."""
        out: dict[tuple[str, str], int] = defaultdict(int)
        for s, t in sorted({(i.source, i.target) for i in self.imports}):
            a, b = self.unit(s), self.unit(t)
            if a != b:
                out[a, b] += 1
        return dict(out)


# ---------------------------------------------------------------------------------------------
# Reading the code


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _exports(tree: ast.Module) -> tuple[str, ...]:
    for node in tree.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets) and node.value is not None:
                return tuple(ast.literal_eval(node.value))
    return ()


def _type_checking_nodes(tree: ast.Module) -> set[int]:
    return {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for n in ast.walk(node)}


def scan(repo: Path = REPO) -> Package:
    """Every module of ``repo/glt`` with its docstring, size, ``__all__`` and glt imports."""
    root = repo / PKG
    files = sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts and "assets" not in p.parts)
    names = {_module_name(p, root): p for p in files}

    def resolve(dotted: str) -> str | None:
        parts = dotted.split(".")
        for i in range(len(parts), 0, -1):
            if ".".join(parts[:i]) in names:
                return ".".join(parts[:i])
        return None

    modules, imports = {}, []
    for name, path in names.items():
        text = path.read_text("utf-8")
        lines = text.splitlines()
        tree = ast.parse(text, filename=str(path))
        skip = _type_checking_nodes(tree)
        is_pkg = path.name == "__init__.py"
        modules[name] = Module(name, path.relative_to(repo), len(lines), ast.get_docstring(tree) or "",
                               _exports(tree))

        def visit(node: ast.AST, in_function: bool, name: str = name, lines: list[str] = lines,
                  skip: set[int] = skip, is_pkg: bool = is_pkg) -> None:
            for child in ast.iter_child_nodes(node):
                inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
                targets: list[str | None] = []
                if isinstance(child, ast.ImportFrom) and id(child) not in skip:
                    base = child.module or ""
                    if child.level:
                        here = name.split(".") if is_pkg else name.split(".")[:-1]
                        here = here[: len(here) - (child.level - 1)]
                        base = ".".join(here + ([base] if base else []))
                    if base == PKG or base.startswith(PKG + "."):
                        for alias in child.names:
                            sub = resolve(f"{base}.{alias.name}")
                            targets.append(sub if sub not in (None, resolve(base)) else resolve(base))
                elif isinstance(child, ast.Import) and id(child) not in skip:
                    targets = [resolve(a.name) for a in child.names if a.name == PKG or a.name.startswith(PKG + ".")]
                line = lines[child.lineno - 1] if targets else ""
                comment = line.split("#", 1)[1].strip() if "#" in line else ""
                for target in targets:
                    if target and target != name:
                        imports.append(Import(name, target, child.lineno, inside, comment))
                visit(child, inside)

        visit(tree, False)
    studies = sorted((n for n in names if n.startswith(STUDIES + ".") and n.count(".") == 2),
                     key=lambda n: (STUDY_ORDER.index(n.rsplit(".", 1)[1]) if n.rsplit(".", 1)[1] in STUDY_ORDER
                                    else len(STUDY_ORDER), n))
    units: list[str] = []
    for layer in LAYERS:  # a layer without modules (not written yet) is left out
        units += studies if layer == STUDIES else [layer] if any(n == layer or n.startswith(layer + ".")
                                                                 for n in names) else []
    return Package(modules, tuple(imports), tuple(units))


# ---------------------------------------------------------------------------------------------
# The rules


def _cycles(nodes: list[str], edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in nodes:
        if v not in index:
            connect(v)
    return sorted(found)


def violations(pkg: Package) -> list[str]:
    """Every broken rule, one line each naming the import (empty when the house is in order)."""
    out = []
    for name, mod in sorted(pkg.modules.items()):
        if not pkg.unit(name):
            out.append(f"{mod.path}: module {name} is in no layer: put its subpackage in LAYERS "
                       "(docs/_architecture.py), in pipeline order")
    group = [i for i in pkg.imports if i.source == STUDIES]
    out += [f"{pkg.modules[i.source].path}:{i.line}: {STUDIES} imports {i.target}: the studies' namespace "
            "imports nothing" for i in group]
    for i in pkg.imports:
        where = f"{pkg.modules[i.source].path}:{i.line}"
        a, b = pkg.unit(i.source), pkg.unit(i.target)
        if i.target == PKG:
            out.append(f"{where}: {i.source} imports the package root {PKG}: import from the module that "
                       "defines the name (the root only re-exports)")
        elif a and b and a != b and pkg.rank(b) > pkg.rank(a):
            out.append(f"{where}: {i.source} ({a}) imports {i.target} ({b}), which comes later in the "
                       "pipeline: move the shared code down into the lower layer")
        elif a and b and a != b and pkg.rank(a) == pkg.rank(b) and a != STUDIES:
            out.append(f"{where}: study {a} imports another study ({i.target}): move the shared code "
                       "down (decoding, plotting, data or core)")
        if i.in_function and not i.comment:
            out.append(f"{where}: {i.source} imports {i.target} inside a function without a comment: "
                       "import at module level, or say which heavy optional dependency it defers")
    edges: dict[str, set[str]] = defaultdict(set)
    for i in pkg.imports:
        edges[i.source].add(i.target)
    for cycle in _cycles(sorted(pkg.modules), edges):
        out.append(f"import cycle among modules: {' -> '.join(cycle)} (counting imports inside functions)")
    unit_edges: dict[str, set[str]] = defaultdict(set)
    for a, b in pkg.unit_edges():
        unit_edges[a].add(b)
    for cycle in _cycles(sorted(set(unit_edges) | {b for a in unit_edges for b in unit_edges[a]}), unit_edges):
        out.append(f"import cycle among subpackages: {' -> '.join(cycle)}")
    return out


def check(pkg: Package) -> None:
    """Raise `ArchitectureError` listing every broken rule."""
    found = violations(pkg)
    if found:
        raise ArchitectureError(f"glt breaks {len(found)} layering rule(s):\n" + "\n".join(found))


# ---------------------------------------------------------------------------------------------
# The page

_INTRO = """\
The folder layout is the architecture. `glt/` holds one subpackage per stage of the pipeline, in
the order data flows: a model is loaded and its residual stream captured (`glt.core`), lenses turn
each layer's residual into logits (`glt.lenses`, fitted by `glt.lenses.fit`), the read-out engine
reduces every layer's logits to ranks and probabilities in one streamed pass (`glt.decoding`), the
studies turn read-outs into the paper's analyses (`glt.studies.*`), `glt study` runs them all with
a report (`glt.pipeline`), `glt compare` overlays such runs (`glt.compare`), and `glt.cli` is the
command line. Each subpackage is a public namespace of short
private modules (`glt/core/_capture.py`, ...), re-exported explicitly by its `__init__`
(`ResidualStack as ResidualStack`, with `__all__`); `glt/__init__.py` re-exports the public API, so
users write `glt.readout`, never a private module."""

_READING = """\
Boxes from the bottom up follow the pipeline; each arrow is at least one import statement and
points from the importer to the imported subpackage (colour: the importer). `glt` itself (the
public namespace, `glt/__init__.py`) sits above everything: it re-exports from every box and no
module imports it. `glt/__main__.py` (`python -m glt`) imports only `glt.cli`."""

_RULES = """\
1. **Imports point one way**: a subpackage imports only subpackages before it in the pipeline
   (below it in the diagram). Code two layers need lives in the lower one.
2. **No study imports another study.** What two studies share moves down (into `glt.decoding`,
   `glt.plotting`, `glt.data` or `glt.core`); `glt.pipeline` is where studies meet.
3. **Nothing imports the package root** `glt`: modules import the module that defines a name;
   `glt/__init__.py` only re-exports, and the version lives in `glt._version`.
4. **Imports sit at module level.** An import inside a function only defers a heavy optional
   dependency (spaCy, Triton, pyarrow, pandas, ...), with a comment saying which when it is one of
   glt's own modules. No import cycles, counting those inside functions.

`python docs/_architecture.py` refuses to write this page when a rule breaks, naming each
offending import, and `tests/project/test_architecture.py` runs the same check with the tests
(and fails when this page is not what the code gives)."""

_WHERE = """\
### A new lens

A lens is the object that turns a layer's residual into logits. It goes in `glt/lenses/` as a new
private module (`glt/lenses/_<name>.py`), re-exported by `glt/lenses/__init__.py` and, if users
should reach it as `glt.<Name>`, by `glt/__init__.py`. {lens_contract} Anything it needs to be
*fitted* goes in `glt/lenses/fit/`. It imports `glt.core` and `glt/lenses/` only, and every function that takes
a lens (the read-out, the studies, the evaluation) then takes it unchanged. Tests go in
`tests/lenses/`. To offer it in `glt study`, `StudyContext.lens` in `glt/pipeline/_context.py`
builds lenses by name.

### A new study

A study is a subpackage `glt/studies/<name>/` with short private modules: `_run.py` (the public
function, decorated `@checked`, taking a model or a read-out and returning a result), `_result.py`
(a frozen dataclass saved and loaded through glt's one result codec, in `glt.core`), `_data.py` if it
loads data, and `_plots.py` (`plot_<name>(result, ax=None)` returning the figure, registered with
`glt.plotting.register_plot(ResultClass, plot_fn)`). Its `__init__.py` re-exports the public names
with `__all__`, and `glt/__init__.py` re-exports those users should call as `glt.<name>`. It imports
only `glt.core`, `glt.data`, `glt.lenses`, `glt.decoding` and `glt.plotting`, never another study.
To run it in `glt study`, add a `StudySpec` in `glt/pipeline/_specs.py` (or its own
`glt/pipeline/_specs_<name>.py`) and list it in `specs()` in `glt/pipeline/_plan.py`. Tests go in
`tests/studies/<name>/`, the API page in `docs/api/` (and `mkdocs.yml`'s nav); then run
`python docs/_architecture.py` (a new study is picked up by itself, after those in `STUDY_ORDER`).

### A new model loader

Models are loaded in `glt/core/_models.py`: `load_model` resolves a name (the embedded default,
SmolLM2, a `.gguf` file, a local folder or a hub name) to a TransformerLens model on either
TransformerLens major version. A new source is a new branch of that resolution (and, if it brings
a heavy dependency, an import inside the function that needs it, with a comment); when it grows
past a few functions it becomes its own private module in `glt/core/` that `_models.py` calls.
Everything above `glt.core` takes the model as it comes, so nothing else changes. Tests go in
`tests/core/`."""


def _wrap(text: str) -> str:
    """Re-flow the plain-prose paragraphs of ``text`` to 100 columns (headings stay as they are)."""
    paragraphs = text.split("\n\n")
    return "\n\n".join(p if p.startswith("#") else textwrap.fill(" ".join(p.split()), 100, break_long_words=False,
                                                                  break_on_hyphens=False) for p in paragraphs)


def _esc(text: str) -> str:
    """Table-cell safe: a literal ``|`` would end the cell."""
    return text.replace("|", "\\|")


def _slug(unit: str) -> str:
    """The heading's anchor as MkDocs (and GitHub) make it: dots dropped, underscores kept."""
    return unit.replace(".", "")


def _lens_contract(pkg: Package) -> str:
    """What a lens must offer: the `Lens` protocol when ``glt.lenses`` exports one."""
    if "Lens" in pkg.modules["glt.lenses"].exports:
        return ("It satisfies `glt.Lens`, a `typing.Protocol` (no subclassing needed): a `name`, an "
                "`unembed` (`glt.Unembed`, the model's final norm, unembedding and soft-cap), "
                "`transform_stack(resid)` over a whole `[layer, ...]` stack and "
                "`check_compatible(n_residuals, d_model)`; tuned-lens's `transform_hidden(h, idx)` and "
                "`lens(h, idx)` are welcome too.")
    return ("It offers what `glt.LogitLens` and `glt.TunedLens` share: an `unembed` (`glt.Unembed`), "
            "`transform_stack(resid)` over a whole `[layer, ...]` stack, `check_compatible(n_residuals, "
            "d_model)`, and tuned-lens's `transform_hidden(h, idx)` and `lens(h, idx)`.")


def render(pkg: Package) -> str:
    """The Markdown of ``docs/architecture.md``."""
    units = pkg.units
    edges = pkg.unit_edges()
    n_statements = len({(i.source, i.target) for i in pkg.imports})
    deferred = [i for i in pkg.imports if i.in_function]
    biggest = max(pkg.modules.values(), key=lambda m: m.lines)
    lines = [
        "# Architecture",
        "",
        "<!-- Generated by docs/_architecture.py from glt's source: do not edit by hand. Change the",
        "     code, the subpackages' __init__ docstrings or that script, then run",
        "     `python docs/_architecture.py`. -->",
        "",
        _INTRO,
        "",
        "## The pipeline",
        "",
        "| # | Subpackage | What it holds | Modules | Lines |",
        "|---|---|---|---:|---:|",
    ]
    for unit in units:
        mods = pkg.members(unit)
        head = pkg.modules[unit].summary if unit in pkg.modules else ""
        lines.append(f"| {pkg.rank(unit)} | [`{unit}`](#{_slug(unit)}) | {_esc(head)} | {len(mods)} | "
                     f"{sum(m.lines for m in mods):,} |")
    root = pkg.members(PKG)
    lines += [
        f"| | `{PKG}` | The public namespace: re-exports every subpackage's public API (`glt.__all__`). | "
        f"{len(root)} | {sum(m.lines for m in root):,} |",
        "",
        "## Dependencies",
        "",
        "![glt's subpackages and the imports between them](img/architecture.svg)",
        "",
        _READING,
        "",
        f"{len(pkg.modules)} modules in {len(units)} subpackages; {n_statements} import edges between "
        f"modules, {sum(1 for a, _ in edges if a != PKG)} between subpackages (not counting `glt`'s "
        f"re-exports); 0 import cycles; {len(deferred)} imports of glt "
        f"modules inside functions; the largest module is `{biggest.path.as_posix()}` "
        f"({biggest.lines} lines).",
        "",
        "| Subpackage | Imports (module edges) | Imported by |",
        "|---|---|---|",
    ]
    for unit in units:
        out = [f"`{b}` ({n})" for (a, b), n in sorted(edges.items(), key=lambda e: units.index(e[0][1]) if
                                                      e[0][1] in units else -1) if a == unit]
        into = [f"`{a}`" for (a, b) in sorted(edges, key=lambda e: units.index(e[0]) if e[0] in units else 99)
                if b == unit and a != PKG]
        lines.append(f"| `{unit}` | {', '.join(out) or '(nothing in glt)'} | {', '.join(into) or '(only `glt`)'} |")
    lines += ["", "## The rules", "", _RULES, ""]
    if deferred:
        lines += ["The imports of glt modules that sit inside a function today:", "",
                  "| Where | Imports | Why |", "|---|---|---|"]
        lines += [f"| `{pkg.modules[i.source].path.as_posix()}:{i.line}` | `{i.target}` | {_esc(i.comment)} |"
                  for i in deferred]
        lines.append("")
    lines += ["## The subpackages", ""]
    seen_studies = False
    for unit in units:
        if unit.startswith(STUDIES + ".") and not seen_studies:
            seen_studies = True
            lines += [f"### {STUDIES}", "", pkg.modules[STUDIES].doc.strip(), ""]
        level = "####" if unit.startswith(STUDIES + ".") else "###"
        mod = pkg.modules.get(unit)
        folder = (mod.path.parent if mod and mod.path.name == "__init__.py" else Path(PKG)).as_posix()
        lines += [f"{level} {unit}", ""]
        if mod and mod.path.name == "__init__.py":
            lines += [mod.doc.strip(), ""]
            if mod.exports:
                lines += ["Exports: " + ", ".join(f"`{n}`" for n in mod.exports) + ".", ""]
        lines += [f"| Module (in `{folder}/`) | Lines | Summary |", "|---|---:|---|"]
        for m in pkg.members(unit):
            if m.path.name != "__init__.py" or m.name == STUDIES:
                lines.append(f"| `{m.path.name}` | {m.lines} | {_esc(m.summary)} |")
            else:
                lines.append(f"| `__init__.py` | {m.lines} | The public names, re-exported. |")
        lines.append("")
    lines += ["## Where new things go", "", _wrap(_WHERE.format(lens_contract=_lens_contract(pkg))), ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# The diagram: boxes bottom-up in pipeline order, imports as arcs on the right. Hand-written SVG
# (no plotting library, no fonts embedded) so that the same code always gives the same bytes.

_COLOURS = ("#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#8c564b", "#7f7f7f",
            "#bcbd22", "#17becf", "#332288", "#882255")  # one per layer while there are at most 12
_BOX_W, _BOX_H, _GAP, _LEFT, _TOP = 300, 34, 12, 64, 70


def _colour(pkg: Package, unit: str) -> str:
    return _COLOURS[pkg.rank(unit) % len(_COLOURS)]


def draw(pkg: Package) -> str:
    """The SVG of the subpackages (top: CLI, bottom: core) and the imports between them."""
    order = [PKG, *reversed(pkg.units)]  # top to bottom
    y = {u: _TOP + i * (_BOX_H + _GAP) for i, u in enumerate(order)}
    right = _LEFT + _BOX_W
    edges = [(a, b) for (a, b) in pkg.unit_edges() if a != PKG]
    span = {e: order.index(e[1]) - order.index(e[0]) for e in edges}
    reach = {e: 20 + 26 * span[e] for e in edges}
    height = y[order[-1]] + _BOX_H + 40
    width = right + int(0.75 * max(reach.values(), default=0)) + 40
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="DejaVu Sans Mono, Menlo, Consolas, monospace">',
        "<title>glt: subpackages in pipeline order and the imports between them</title>",
        "<defs>",
    ]
    for i, c in enumerate(_COLOURS):
        out.append(f'<marker id="arrow{i}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
                   f'markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="{c}"/></marker>')
    out += [
        "</defs>",
        f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
        f'<text x="{_LEFT}" y="28" font-size="15" font-weight="bold" fill="#222">glt: subpackages and '
        "their imports</text>",
        f'<text x="{_LEFT}" y="48" font-size="11" fill="#555">from the import statements '
        "(docs/_architecture.py); arrow: importer to imported</text>",
    ]
    studies = [u for u in order if u.startswith(STUDIES + ".")]
    if studies:
        top, bottom = y[studies[0]] - 5, y[studies[-1]] + _BOX_H + 5
        out += [
            f'<rect x="{_LEFT - 30}" y="{top}" width="{_BOX_W + 36}" height="{bottom - top}" rx="6" '
            'fill="#f2f2f2" stroke="none"/>',
            f'<text transform="translate({_LEFT - 12},{(top + bottom) // 2}) rotate(-90)" text-anchor="middle" '
            f'font-size="12" fill="#555">{STUDIES}</text>',
        ]
    axis_top, axis_bottom = y[order[1]] + _BOX_H // 2, y[order[-1]] + _BOX_H // 2
    out += [
        f'<line x1="14" y1="{axis_bottom}" x2="14" y2="{axis_top}" stroke="#999" stroke-width="1.5" '
        'marker-end="url(#arrow7)"/>',
        f'<text transform="translate(26,{(axis_top + axis_bottom) // 2}) rotate(-90)" text-anchor="middle" '
        'font-size="11" fill="#777">pipeline order</text>',
    ]
    # Ports: imports leave from the lower half of the right edge (longest arc highest) and arrive
    # in the upper half (longest arc lowest), so arcs sharing an end nest without crossing there.
    port_out, port_in = {}, {}
    for unit in order:
        leaving = sorted((e for e in edges if e[0] == unit), key=lambda e: (-span[e], e[1]))
        for k, e in enumerate(leaving):
            port_out[e] = y[unit] + _BOX_H / 2 + (k + 1) * (_BOX_H / 2) / (len(leaving) + 1)
        arriving = sorted((e for e in edges if e[1] == unit), key=lambda e: (span[e], e[0]))
        for k, e in enumerate(arriving):
            port_in[e] = y[unit] + (k + 1) * (_BOX_H / 2) / (len(arriving) + 1)
    for e in sorted(edges, key=lambda e: (-span[e], e)):
        c = _COLOURS.index(_colour(pkg, e[0]))
        y0, y1, w = port_out[e], port_in[e], reach[e]
        out.append(f'<path d="M{right},{y0:.1f} C{right + w},{y0:.1f} {right + w},{y1:.1f} {right + 1},{y1:.1f}" '
                   f'fill="none" stroke="{_COLOURS[c]}" stroke-width="1.3" stroke-opacity="0.85" '
                   f'marker-end="url(#arrow{c})"/>')
    for unit in order:
        n = len(pkg.members(unit))
        if unit == PKG:
            out += [
                f'<rect x="{_LEFT}" y="{y[unit]}" width="{_BOX_W}" height="{_BOX_H}" rx="4" fill="#ffffff" '
                'stroke="#555" stroke-dasharray="4 3"/>',
                f'<text x="{_LEFT + 10}" y="{y[unit] + 15}" font-size="13" font-weight="bold" fill="#222">{PKG}'
                "</text>",
                f'<text x="{_LEFT + 10}" y="{y[unit] + 28}" font-size="10" fill="#555">re-exports the public API '
                "of every box below</text>",
            ]
            continue
        label = unit.removeprefix(STUDIES + ".") if unit.startswith(STUDIES + ".") else unit
        out += [
            f'<rect x="{_LEFT}" y="{y[unit]}" width="{_BOX_W}" height="{_BOX_H}" rx="4" fill="#ffffff" '
            f'stroke="{_colour(pkg, unit)}" stroke-width="2"/>',
            f'<text x="{_LEFT + 10}" y="{y[unit] + 22}" font-size="13" font-weight="bold" fill="#222">{label}</text>',
            f'<text x="{right - 10}" y="{y[unit] + 22}" font-size="10" fill="#777" text-anchor="end">'
            f"{n} module{'s' if n != 1 else ''}</text>",
        ]
    out.append("</svg>")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------


def build(repo: Path = REPO) -> dict[Path, str]:
    """``{path relative to repo: text}`` of the page and the diagram; `ArchitectureError` first if a
    rule breaks."""
    pkg = scan(repo)
    check(pkg)
    return {PAGE: render(pkg), SVG: draw(pkg)}


def _stale(pages: dict[Path, str], repo: Path = REPO) -> list[Path]:
    return [p for p, text in pages.items() if not (repo / p).is_file() or (repo / p).read_text("utf-8") != text]


def stale(repo: Path = REPO) -> list[Path]:
    """The generated files whose text in ``repo`` differs from a fresh build."""
    return _stale(build(repo), repo)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if the files are stale")
    args = parser.parse_args(argv)
    try:
        pages = build()
    except ArchitectureError as e:
        print(e, file=sys.stderr)
        return 1
    if args.check:
        old = _stale(pages)
        for p in old:
            print(f"{p} is stale: run python docs/_architecture.py", file=sys.stderr)
        return 1 if old else 0
    for p, text in pages.items():
        target = REPO / p
        if not target.is_file() or target.read_text("utf-8") != text:
            tmp = target.with_name(f".{target.name}.tmp")
            tmp.write_text(text, "utf-8")
            tmp.replace(target)
            print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
