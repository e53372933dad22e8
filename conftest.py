"""Suite-wide pytest hooks: the tutorial notebooks run once, and the docs show that run's outputs.

``--nbmake`` (in ``addopts``) executes every notebook in ``notebooks/``. For each one that passes,
the hook below writes the executed copy, outputs included (figures, tables, printed numbers, the
live layer explorer), to ``build/tutorials/<name>.ipynb`` (``build/`` is ignored by git; the
committed notebooks stay without outputs and are never written). Output on stderr (progress bars,
library warnings) is left out of the copy, the rest is kept as it ran. A notebook that fails has its
copy removed, so the docs never show outputs of a notebook that no longer runs. ``docs/_hooks.py``
renders those copies in place of the bare notebooks when their cells match the notebook's (see
there for what happens without one).

Order: tests marked ``after_notebooks`` (the strict docs build and the docs pages in the browser)
are moved after every other test, so within one pytest run they read the copies that this run's
notebooks wrote. The hook runs last (``trylast``), after any plugin that shuffles the order.
"""

import os
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent
NOTEBOOKS = ROOT / "notebooks"
EXECUTED = ROOT / "build" / "tutorials"  # docs/_hooks.py reads the same folder
_SAVED = pytest.StashKey[set]()


def pytest_configure(config):
    config.stash[_SAVED] = set()


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    late = [item for item in items if item.get_closest_marker("after_notebooks")]
    if late:
        items[:] = [item for item in items if not item.get_closest_marker("after_notebooks")] + late


def _tutorial(item) -> Path | None:
    """The notebook of an nbmake item if it is one of ``notebooks/``, else None."""
    if not getattr(item, "nbmake", False):
        return None
    path = Path(item.path).resolve()
    return path if path.parent == NOTEBOOKS.resolve() else None


def _write_atomic(path: Path, text: str) -> None:
    """Readers (a docs build in another process) see the old copy or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    notebook = _tutorial(item)
    if notebook is None:
        return (yield)
    import nbformat
    from nbmake.nb_run import NotebookRun

    runs = []
    execute = NotebookRun.execute

    def keep(self):
        result = execute(self)
        runs.append(result)
        return result

    NotebookRun.execute = keep
    try:
        outcome = yield
    except BaseException:
        (EXECUTED / notebook.name).unlink(missing_ok=True)
        raise
    finally:
        NotebookRun.execute = execute
    if not runs:
        raise RuntimeError(f"{notebook.name} passed but conftest.py did not see nbmake execute it (nbmake's "
                           "NotebookRun.execute changed?): build/tutorials gets no executed copy")
    nb = runs[-1].nb
    dropped = 0
    for cell in nb.cells:  # progress bars and library warnings: noise on a docs page
        if cell.cell_type == "code":
            kept = [o for o in cell.outputs if not (o.output_type == "stream" and o.name == "stderr")]
            dropped, cell.outputs = dropped + len(cell.outputs) - len(kept), kept
    nb.metadata["glt_executed"] = {"by": "pytest --nbmake", "source": f"notebooks/{notebook.name}",
                                   "stderr_outputs_left_out": dropped}
    _write_atomic(EXECUTED / notebook.name, nbformat.writes(nb))
    item.config.stash[_SAVED].add(notebook.name)
    return outcome


@pytest.fixture(scope="session")
def executed_notebooks(request) -> set[str]:
    """Names of the notebooks that this pytest run executed and wrote to ``build/tutorials``."""
    return request.config.stash[_SAVED]
