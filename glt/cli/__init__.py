"""The ``glt`` command line (``glt study``, ``glt inspect``, ``glt lens ...``).

`main` (`_main`) parses the command line: ``glt inspect TEXT`` decodes every layer of one text,
``glt study`` calls `glt.pipeline`, and ``glt lens train|eval|import|export`` (`_lens`) drives
`glt.lenses` and `glt.lenses.fit`. Every user error prints ``glt: error: <message>`` and exits
with status 2. The top of the pipeline: nothing in glt imports it but ``python -m glt``.
"""

from glt.cli._main import (
    main as main,
)

__all__ = [
    "main",
]
