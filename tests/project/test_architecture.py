"""The layering rules hold, and ``docs/architecture.md`` is what the code gives.

``docs/_architecture.py`` reads every glt import statement (with `ast`) and refuses to write the
page when a rule breaks: an import cycle, an upward import, a study importing another study, an
import of the package root, an in-function import of a glt module without a comment, a module in
no layer. Here: the real package breaks none; the committed page and diagram equal a fresh build;
and a small fake package breaking each rule is caught, naming the offending import.
"""

import importlib.util
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def _load_generator():
    spec = importlib.util.spec_from_file_location("glt_docs_architecture", ROOT / "docs" / "_architecture.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


arch = _load_generator()


def test_the_layering_rules_hold():
    problems = arch.violations(arch.scan(ROOT))
    assert not problems, "glt breaks its layering rules (docs/architecture.md, 'The rules'):\n" + "\n".join(problems)


def test_every_layer_is_found():
    pkg = arch.scan(ROOT)
    expected = {"glt._version", "glt.core", "glt.data", "glt.lenses", "glt.lenses.fit", "glt.decoding",
                "glt.plotting", "glt.pipeline", "glt.cli"} | {f"glt.studies.{s}" for s in arch.STUDY_ORDER}
    assert expected <= set(pkg.units)
    assert all(pkg.unit(name) for name in pkg.modules), "a module in no layer"
    assert pkg.unit("glt.decoding._readout") == "glt.decoding"
    assert pkg.unit("glt.lenses.fit._train") == "glt.lenses.fit"
    assert pkg.unit("glt.lenses._tuned") == "glt.lenses"
    assert pkg.unit("glt.__main__") == "glt"
    # readout is imported by the studies: the edge is seen, pointing down
    assert ("glt.studies.early_exit", "glt.decoding") in pkg.unit_edges()


def test_the_page_and_diagram_equal_a_fresh_build():
    built = arch.build(ROOT)
    assert set(built) == {Path("docs/architecture.md"), Path("docs/img/architecture.svg")}
    stale = [str(p) for p, text in built.items()
             if not (ROOT / p).is_file() or (ROOT / p).read_text("utf-8") != text]
    assert not stale, f"{stale} differ from what the code gives: run `python docs/_architecture.py`"
    assert arch.build(ROOT) == built  # deterministic


def test_the_page_is_in_the_nav_and_the_readme_links_it():
    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text("utf-8"))["nav"]
    assert "architecture.md" in str(nav)
    assert "(docs/architecture.md)" in (ROOT / "README.md").read_text("utf-8")


def _write(repo: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = repo / "glt" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, "utf-8")
    return repo


_CLEAN = {
    "__init__.py": '"""root"""\nfrom glt.cli._main import main as main\n',
    "_version.py": '"""version"""\n__version__ = "0"\n',
    "core/__init__.py": '"""core"""\n',
    "core/_errors.py": '"""errors"""\nfrom glt._version import __version__\n',
    "core/_io.py": '"""io"""\nfrom glt.core._errors import __version__\n',
    "lenses/__init__.py": '"""lenses"""\n__all__ = ["Thing"]\n',
    "decoding/__init__.py": '"""decoding"""\n',
    "decoding/_readout.py": ('"""readout"""\nfrom typing import TYPE_CHECKING\nfrom ..core import _io\n'
                             'if TYPE_CHECKING:\n    from glt.cli._main import main\n\n\n'
                             'def f():\n    from glt.decoding import _kernel  # imports Triton\n'),
    "decoding/_kernel.py": '"""kernel"""\n',
    "studies/__init__.py": '"""studies"""\n',
    "studies/alpha/__init__.py": '"""alpha"""\n',
    "studies/alpha/_run.py": '"""alpha run"""\nfrom glt.decoding._readout import f\n',
    "studies/beta/__init__.py": '"""beta"""\n',
    "studies/beta/_run.py": '"""beta run"""\nimport glt.core._io\n',
    "cli/__init__.py": '"""cli"""\n',
    "cli/_main.py": ('"""main"""\nfrom glt.studies.alpha._run import f\nfrom glt.studies.beta import _run\n\n\n'
                     'def main():\n    pass\n'),
}


def test_a_clean_fake_package_passes_and_renders(tmp_path):
    repo = _write(tmp_path, _CLEAN)
    pkg = arch.scan(repo)
    assert arch.violations(pkg) == []
    # relative import resolved; TYPE_CHECKING import left out; the deferred import kept, with its comment
    assert ("glt.decoding._readout", "glt.core._io") in {(i.source, i.target) for i in pkg.imports}
    assert not any(i.source == "glt.decoding._readout" and i.target.startswith("glt.cli") for i in pkg.imports)
    deferred = [i for i in pkg.imports if i.in_function]
    assert [(i.target, i.comment) for i in deferred] == [("glt.decoding._kernel", "imports Triton")]
    # layers without modules are left out; studies are found by themselves
    assert pkg.units == ("glt._version", "glt.core", "glt.lenses", "glt.decoding", "glt.studies.alpha",
                         "glt.studies.beta", "glt.cli")
    page = arch.render(pkg)
    assert "#### glt.studies.alpha" in page and "| `_readout.py` | 9 | readout |" in page
    assert arch.draw(pkg) == arch.draw(arch.scan(repo))


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"core/_io.py": '"""io"""\nfrom glt.decoding._readout import f\n'},
         "glt.core._io (glt.core) imports glt.decoding._readout (glt.decoding), which comes later"),
        ({"studies/beta/_run.py": '"""beta"""\nfrom glt.studies.alpha._run import f\n'},
         "study glt.studies.beta imports another study (glt.studies.alpha._run)"),
        ({"core/_io.py": '"""io"""\nimport glt\n'}, "glt.core._io imports the package root glt"),
        ({"core/_io.py": '"""io"""\nfrom glt import GltError\n'}, "glt.core._io imports the package root glt"),
        ({"decoding/_kernel.py": '"""kernel"""\nfrom glt.decoding._readout import f\n'},
         "import cycle among modules: glt.decoding._kernel -> glt.decoding._readout"),
        ({"core/_io.py": '"""io"""\n\n\ndef g():\n    from glt.core import _errors\n'},
         "glt/core/_io.py:5: glt.core._io imports glt.core._errors inside a function without a comment"),
        ({"extras/__init__.py": '"""new"""\n'}, "module glt.extras is in no layer"),
        ({"studies/__init__.py": '"""studies"""\nfrom glt.core import _io\n'}, "the studies' namespace imports"),
    ],
    ids=["upward", "study-to-study", "import-root", "from-root", "cycle", "in-function", "no-layer", "group"],
)
def test_each_broken_rule_is_caught(tmp_path, files, expected):
    repo = _write(tmp_path, {**_CLEAN, **files})
    problems = arch.violations(arch.scan(repo))
    assert any(expected in p for p in problems), problems
    with pytest.raises(arch.ArchitectureError, match="layering rule"):
        arch.build(repo)
