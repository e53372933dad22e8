"""Multiple-choice prompts in the paper's format, and the option-symbol permutation control.

MMLU questions (`glt.studies.multiple_choice._data`) are rendered as in the paper::

    Question: <question>
    (A) <choice 0>
    (B) <choice 1>
    (C) <choice 2>
    (D) <choice 3>
    Answer:

with each shot followed by `` <letter>`` and shots separated by a blank line. The GLUE tasks end
their rendered input in a cue: ``sst2`` ``Sentiment:`` -> negative / positive, ``mrpc``
``Answer:`` -> No / Yes and ``rte`` ``Answer:`` -> Yes / No.

An option's *symbol* is what the model must write after the cue (``A`` or ``positive``); its
*content* is what it means (the choice text, or the label word). For the binary tasks symbol and
content coincide unless a permutation control relabels or swaps them.

Example:
    >>> ex = MCExample("2 + 2 =", ("3", "4", "5", "22"), answer=1)
    >>> print(format_mc_prompt(ex).text)
    Question: 2 + 2 =
    (A) 3
    (B) 4
    (C) 5
    (D) 22
    Answer:
"""

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from glt.core._check import checked
from glt.core._errors import GltError
from glt.studies.multiple_choice._data import MCExample, MCTask, _Task, _task

__all__ = [
    "MCPrompt",
    "check_permute_symbols",
    "control_prompts",
    "derangement",
    "format_mc_prompt",
    "permute_example",
]


@dataclass(frozen=True)
class MCPrompt:
    """A rendered prompt: its text (ending in the cue), option symbols and contents, gold index.

    Attributes:
        text: the whole prompt, shots included, ending in the answer cue.
        symbols: the option symbols as written (e.g. ``("A", "B", "C", "D")``).
        contents: the option contents, in the same order.
        answer: index of the gold option.
        id: the example's identifier.
        n_shots: how many solved examples precede the question.
    """

    text: str
    symbols: Sequence[str]
    contents: Sequence[str]
    answer: int
    id: str = ""
    n_shots: int = 0

    def __post_init__(self) -> None:
        n = len(self.symbols)
        if not isinstance(self.text, str) or not self.text.strip():
            raise GltError(f"prompt {self.id!r}: text must be a non-empty string, got {self.text!r:.60}")
        if n < 2 or len(self.contents) != n:
            raise GltError(f"prompt {self.id!r}: needs >= 2 symbols and one content per symbol, got "
                           f"{len(self.symbols)} symbols and {len(self.contents)} contents")
        if isinstance(self.answer, bool) or not isinstance(self.answer, int) or not 0 <= self.answer < n:
            raise GltError(f"prompt {self.id!r}: answer must be an int index in [0, {n}), got {self.answer!r}")
        object.__setattr__(self, "symbols", tuple(self.symbols))
        object.__setattr__(self, "contents", tuple(self.contents))


def derangement(n: int, rng: random.Random) -> tuple[int, ...]:
    """A random permutation of ``range(n)`` that moves every element (n >= 2).

    Example:
        >>> derangement(2, random.Random(0))
        (1, 0)
    """
    while True:
        p = list(range(n))
        rng.shuffle(p)
        if all(i != v for i, v in enumerate(p)):
            return tuple(p)


def permute_example(example: MCExample, order: Sequence[int]) -> MCExample:
    """Reorder the choices: new choice ``i`` is old choice ``order[i]``; the gold index follows.

    Example:
        >>> permute_example(MCExample("q", ("a", "b", "c"), 0), (2, 0, 1)).choices
        ('c', 'a', 'b')
    """
    if sorted(order) != list(range(len(example.choices))):
        raise GltError(f"order must permute range({len(example.choices)}), got {list(order)}")
    return MCExample(example.question, tuple(example.choices[i] for i in order),
                     list(order).index(example.answer), example.subject, example.id)


def _render(spec: _Task, ex: MCExample, symbols: Sequence[str], answered: bool) -> str:
    if spec.listed:
        lines = [f"Question: {ex.question}"] + [f"({s}) {c}" for s, c in zip(symbols, ex.choices, strict=True)]
        text = "\n".join(lines) + f"\n{spec.cue}"
    else:
        text = f"{ex.question}\n{spec.cue}"
    return text + (f" {symbols[ex.answer]}" if answered else "")


@checked
def format_mc_prompt(example: MCExample, shots: Sequence[MCExample] = (), *, task: MCTask = "mmlu",
                     symbols: Sequence[str] | None = None) -> MCPrompt:
    """Render shots (each answered) and the question into one prompt that ends in the cue.

    ``symbols`` default to the task's (``A``-``D``; the GLUE label words); the prompt never ends
    in a space, so the answer's own token is `` A`` / `` positive``.

    Example:
        >>> shot = MCExample("1 + 1 =", ("2", "3", "4", "5"), 0)
        >>> p = format_mc_prompt(MCExample("2 + 2 =", ("3", "4", "5", "6"), 1), [shot])
        >>> p.text.split("\\n\\n")[0].splitlines()[-1], p.symbols[p.answer], p.n_shots
        ('Answer: A', 'B', 1)
    """
    spec = _task(task)
    symbols = tuple(symbols) if symbols is not None else spec.symbols
    for ex in (*shots, example):
        if len(ex.choices) != len(symbols):
            raise GltError(
                f"example {ex.id!r} has {len(ex.choices)} choices but symbols={symbols} has "
                f"{len(symbols)}: pass one symbol per choice"
            )
    if len(set(symbols)) != len(symbols) or any(not s.strip() or s != s.strip() for s in symbols):
        raise GltError(f"symbols must be distinct non-empty strings without outer spaces, got {symbols}")
    parts = [_render(spec, s, symbols, True) for s in shots] + [_render(spec, example, symbols, False)]
    return MCPrompt("\n\n".join(parts), symbols, example.choices, example.answer, example.id, len(shots))


_RELABEL = ("W", "X", "Y", "Z")


def check_permute_symbols(permute: Any) -> tuple[str, tuple[str, ...] | None] | None:
    """Parse ``permute_symbols``: None (no control), ``("relabel", symbols)`` or ``("shuffle", None)``."""
    if permute is False or permute is None:
        return None
    if permute is True or permute == "relabel":
        return "relabel", None
    if permute == "shuffle":
        return "shuffle", None
    if (isinstance(permute, Sequence) and not isinstance(permute, str) and permute
            and all(isinstance(s, str) for s in permute)):
        return "relabel", tuple(permute)
    raise GltError(f"permute_symbols must be False, True, 'relabel', 'shuffle' or a list of "
                   f"symbols, got {permute!r}")


def control_prompts(task: MCTask, pairs: Sequence[tuple[MCExample, Sequence[MCExample]]],
                    permute_symbols: Any, *, seed: int = 0) -> tuple[list[MCPrompt], str]:
    """Prompts for the option-symbol control, and a description of it.

    ``"relabel"`` (or True) writes the options with other symbols (W, X, Y, Z by default, or the
    given list); ``"shuffle"`` deranges every question's contents across the unchanged symbols
    (shots included; for a binary task this swaps the label words).

    Example:
        >>> ex = MCExample("Review: fine", ("negative", "positive"), 1)
        >>> p, mode = control_prompts("sst2", [(ex, [])], "shuffle")
        >>> p[0].symbols[p[0].answer], p[0].contents[p[0].answer], mode
        ('negative', 'positive', 'shuffle (seed 0)')
    """
    parsed = check_permute_symbols(permute_symbols)
    if parsed is None:
        raise GltError("permute_symbols is False: there is no control to build")
    mode, symbols = parsed
    out, rng = [], random.Random(seed)
    for ex, shots in pairs:
        if mode == "relabel":
            syms = symbols or _RELABEL[: len(ex.choices)]
            out.append(format_mc_prompt(ex, shots, task=task, symbols=syms))
        else:
            perm = [permute_example(e, derangement(len(e.choices), rng)) for e in (*shots, ex)]
            out.append(format_mc_prompt(perm[-1], perm[:-1], task=task))
    if mode == "relabel":
        return out, f"relabel {','.join(out[0].symbols) if out else ''}"
    return out, f"shuffle (seed {seed})"
