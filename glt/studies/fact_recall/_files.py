"""Fact-recall data from files the user provides, in the published MQuAKE / CounterFact formats.

* `read_counterfact`: a CounterFact file (Meng et al. 2022), one fact per item, the true target;
* `read_mquake`: an MQuAKE file (Zhong et al. 2023), its single-hop facts, deduplicated by default.

Both return a tuple of `glt.Fact`, like the loaders of the offline fact sets (`glt.studies.fact_recall._data`).
A file that is missing, is not JSON or strays from the published format raises `glt.GltError`
naming the file (and the item and field at fault).
"""

import json
import os
from pathlib import Path
from typing import Any, Literal

from glt.core._check import checked
from glt.core._errors import GltError
from glt.studies.fact_recall._data import Fact

__all__ = ["read_counterfact", "read_mquake"]


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


@checked
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


@checked
def read_mquake(
    path: str | os.PathLike, *, kind: Literal["cloze", "question"] = "cloze", dedupe: bool = True
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
