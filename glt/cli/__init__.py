"""The ``glt`` command line (``glt study``, ``glt inspect``, ``glt lens ...``)."""

from glt.cli._main import (
    main as main,
)

__all__ = [
    "main",
]
