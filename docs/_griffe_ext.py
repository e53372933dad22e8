"""Griffe extension for the API pages: read ``Example:`` as Google's ``Examples:`` section.

glt's docstrings title their doctest sections ``Example:``; griffe knows only ``Examples:`` and
would render the former as an admonition of plain text, so the doctests would lose their code
formatting. The docstrings themselves stay as they are (pytest runs them as doctests).
"""

import re

import griffe

_EXAMPLE = re.compile(r"^(\s*)Example:[ \t]*$", re.MULTILINE)


class ExampleSections(griffe.Extension):
    """Rename ``Example:`` section headers to ``Examples:`` in every loaded docstring."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: object) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _EXAMPLE.sub(r"\1Examples:", obj.docstring.value)
