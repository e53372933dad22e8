"""``glt compare RUN_DIR RUN_DIR ... --out DIR``: study runs overlaid on a normalised depth axis.

Each RUN_DIR is the ``--out`` folder of a ``glt study`` run (any model, any lens; a run read with
two lenses gives two series). Depth is ``residual index / n_layers``: 0 = embeddings, 1 = final
residual. The report lists what differs between the runs (glt version, settings, data, missing
stages) at the top. See `glt.compare`.

Example::

    glt study --model default --quick --out gemma-study
    glt study --model smollm2-135m --quick --out smollm2-study
    glt compare gemma-study smollm2-study --out gemma-vs-smollm2
"""

import argparse
from typing import Any

from glt.compare._report import compare_runs

__all__ = ["register", "run"]


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``compare`` command to ``subparsers``."""
    p = subparsers.add_parser(
        "compare", help="overlay study runs (models, lenses) on a normalised depth axis",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", metavar="RUN_DIR", nargs="+", help="--out folders of `glt study` runs (two or more)")
    p.add_argument("--out", default="glt-compare", help="output folder (default: glt-compare)")
    p.add_argument("--force", action="store_true",
                   help="write into --out even if it holds files other than an earlier comparison")
    return p


def run(args: argparse.Namespace) -> int:
    """Execute a parsed ``glt compare``; returns the exit status."""
    cmp = compare_runs(args.runs, out=args.out, force=args.force)
    print(f"compared {len(cmp.series)} series from {len(cmp.runs)} runs"
          + (f"; {len(cmp.differences)} differences listed at the top of the report" if cmp.differences else ""))
    print(f"report: {args.out}/report.html and {args.out}/report.md")
    return 0
