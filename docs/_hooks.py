"""MkDocs hooks: pages that live outside ``docs/``, added at build time (nothing is copied by hand).

(The tutorials are ``docs/tutorials``, a symlink to ``notebooks/``, rendered by mkdocs-jupyter
without executing; pytest executes them with ``--nbmake``.)

* ``lens/report.md`` (+ its figures): the shipped tuned lens's training report,
  ``glt/assets/lenses/default/report.md``, or a page saying that this build ships none;
* ``cli.md``: the ``glt`` command line, its ``--help`` texts rendered from the argument parser
  (so the page cannot drift from the code);
* ``benchmarks.md`` / ``performance.md``: written by the benchmark scripts into ``docs/``; a
  page saying so is generated while a checkout has none, so the nav never dangles.
"""

from pathlib import Path

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parent.parent
LENS = ROOT / "glt" / "assets" / "lenses" / "default"
_LENS_SKIP = {".safetensors", ".pt", ".bin"}

_NO_REPORT = """# Shipped tuned lens: training report

This build of glt ships no training report: `glt/assets/lenses/default/report.md` is missing.
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


def on_files(files: Files, config) -> Files:
    _add(files, config, "cli.md", content=_cli_page())
    report = LENS / "report.md"
    if report.is_file():
        for f in sorted(p for p in LENS.rglob("*") if p.is_file()):
            if f.suffix not in _LENS_SKIP and f.name != "report.md":
                _add(files, config, f"lens/{f.relative_to(LENS).as_posix()}", path=f)
        _add(files, config, "lens/report.md", path=report)
    else:
        _add(files, config, "lens/report.md", content=_NO_REPORT)
    for name, title in (("benchmarks.md", "Benchmarks"), ("performance.md", "Performance")):
        _add(files, config, name, content=_NO_BENCH.format(title=title))
    return files
