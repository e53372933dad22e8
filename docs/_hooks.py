"""MkDocs hooks: pages that live outside ``docs/``, added at build time (nothing is copied by hand).

* the tutorials (``docs/tutorials``, a symlink to ``notebooks/``) with their outputs: mkdocs-jupyter
  never executes a notebook (``execute: false``); the test run does, once (``pytest --nbmake``), and
  the root ``conftest.py`` writes each executed notebook to ``build/tutorials/``. A tutorial page
  renders that copy when its cells are the notebook's cells (type and source, so an edited notebook
  is not shown with outputs of its old code); otherwise it renders the bare notebook, code only,
  under a note saying so and how to get the outputs (the build still succeeds: a docs-only run or
  a fresh clone has no copies). ``GLT_DOCS_REQUIRE_OUTPUTS=1`` turns that fallback into an error,
  for a build that is published;

* ``lens/report.md``, ``lens/smollm2-135m/report.md`` and ``lens/jacobian/report.md`` (+ their
  figures): the reports of the shipped lenses (two tuned lenses and the default model's Jacobian
  lens), ``glt/assets/lenses/{default,smollm2-135m,default-jacobian}/report.md``, or a page saying
  that this build ships none;
* ``cli.md``: the ``glt`` command line, its ``--help`` texts rendered from the argument parser
  (so the page cannot drift from the code);
* ``benchmarks.md`` / ``performance.md``: written by the benchmark scripts into ``docs/``; a
  page saying so is generated while a checkout has none, so the nav never dangles.
"""

import html
import json
import logging
import os
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parent.parent
LENSES = {"lens": ROOT / "glt" / "assets" / "lenses" / "default",  # docs folder -> shipped lens folder
          "lens/smollm2-135m": ROOT / "glt" / "assets" / "lenses" / "smollm2-135m",
          "lens/jacobian": ROOT / "glt" / "assets" / "lenses" / "default-jacobian"}
_LENS_SKIP = {".safetensors", ".pt", ".bin"}
EXECUTED = ROOT / "build" / "tutorials"  # written by the root conftest.py (pytest --nbmake)
log = logging.getLogger("mkdocs.hooks.glt")
_without_outputs: dict[str, str] = {}  # src_uri of a tutorial shown without outputs -> why

_NO_OUTPUTS = """<div class="admonition note glt-no-outputs"><p class="admonition-title">Outputs not shown</p>
<p>This page was built from the notebook without its outputs ({why}). The test run executes the
tutorials once and keeps each executed copy in <code>build/tutorials/</code>; build the docs after
<code>python -m pytest notebooks/</code> (the full test run does both, in that order) to see the
figures, tables and printed numbers.</p></div>
"""

_NO_REPORT = """# Shipped tuned lens: training report

This build of glt ships no training report: `glt/assets/lenses/{name}/report.md` is missing.
The report is written next to the lens by `benchmarks/train_default_lens.py`.
"""

_NO_BENCH = """# {title}

This page is written by the benchmark scripts in `benchmarks/` (see
`benchmarks/bench_readout.py`); this checkout does not hold their results yet.
"""


def _add(files: Files, config, src_uri: str, *, path: Path | None = None, content: str | None = None) -> None:
    if files.get_file_from_path(src_uri) is not None:
        return
    if path is not None:
        files.append(File.generated(config, src_uri, abs_src_path=str(path)))
    else:
        files.append(File.generated(config, src_uri, content=content))


def _cli_page() -> str:
    import argparse

    from glt.cli._main import build_parser

    parser = build_parser()
    parts = [
        "# Command line",
        "",
        "`glt` is installed with the package. The texts below are the commands' own `--help`.",
        "",
        "```text",
        parser.format_help().rstrip(),
        "```",
    ]
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, p in sub.choices.items():
        parts += ["", f"## glt {name}", "", "```text", p.format_help().rstrip(), "```"]
    return "\n".join(parts) + "\n"


def _cells(path: Path) -> list[tuple[str, str]]:
    cells = json.loads(path.read_text("utf-8"))["cells"]
    return [(c["cell_type"], "".join(c["source"]) if isinstance(c["source"], list) else c["source"]) for c in cells]


def _executed_copy(source: Path) -> tuple[Path | None, str]:
    """``(build/tutorials/<name>, "")`` when it holds this notebook's cells, else ``(None, why not)``."""
    copy = EXECUTED / source.name
    if not copy.is_file():
        return None, f"no executed copy in {copy.relative_to(ROOT)}"
    try:
        same = _cells(copy) == _cells(source)
    except (ValueError, KeyError, TypeError) as e:
        return None, f"{copy.relative_to(ROOT)} is not a readable notebook: {e}"
    if not same:
        return None, f"{copy.relative_to(ROOT)} was executed from other cells: the notebook changed since"
    return copy, ""


def _tutorials(files: Files, config) -> None:
    """Swap each tutorial for its executed copy (before mkdocs-jupyter picks the notebooks up)."""
    _without_outputs.clear()
    for f in list(files):
        if not (f.src_uri.startswith("tutorials/") and f.src_uri.endswith(".ipynb") and f.abs_src_path):
            continue
        name = f.src_uri.removeprefix("tutorials/")
        if "/" in name or not name[:1].isdigit():
            continue
        copy, why = _executed_copy(Path(f.abs_src_path))
        if copy is not None:  # same page (src_uri), read from build/: build/tutorials/<name> is the copy
            files.remove(f)
            files.append(File(f.src_uri, src_dir=str(EXECUTED.parent), dest_dir=config.site_dir,
                              use_directory_urls=config.use_directory_urls))
            log.info("%s: rendered with its outputs from %s", f.src_uri, copy.relative_to(ROOT))
        else:
            _without_outputs[f.src_uri] = why
            log.info("%s: rendered without outputs (%s)", f.src_uri, why)
    if _without_outputs and os.environ.get("GLT_DOCS_REQUIRE_OUTPUTS", "") not in ("", "0"):
        raise PluginError("GLT_DOCS_REQUIRE_OUTPUTS is set but tutorials have no executed copy: "
                          + "; ".join(f"{k}: {v}" for k, v in sorted(_without_outputs.items()))
                          + ". Run `python -m pytest notebooks/` first (it writes build/tutorials/).")


@event_priority(100)  # first: mkdocs-jupyter wraps the notebooks in its own on_files
def on_files(files: Files, config) -> Files:
    _tutorials(files, config)
    _add(files, config, "cli.md", content=_cli_page())
    for docs_dir, lens in LENSES.items():
        report = lens / "report.md"
        if report.is_file():
            for f in sorted(p for p in lens.rglob("*") if p.is_file()):
                if f.suffix not in _LENS_SKIP and f.name != "report.md":
                    _add(files, config, f"{docs_dir}/{f.relative_to(lens).as_posix()}", path=f)
            _add(files, config, f"{docs_dir}/report.md", path=report)
        else:
            _add(files, config, f"{docs_dir}/report.md", content=_NO_REPORT.format(name=lens.name))
    for name, title in (("benchmarks.md", "Benchmarks"), ("performance.md", "Performance")):
        _add(files, config, name, content=_NO_BENCH.format(title=title))
    return files


def on_page_content(html_text: str, page, config, files) -> str:
    why = _without_outputs.get(page.file.src_uri)
    return html_text if why is None else _NO_OUTPUTS.format(why=html.escape(why)) + html_text
