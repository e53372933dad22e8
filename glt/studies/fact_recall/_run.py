"""Multi-token fact recall: when does each answer token reach the top-k, teacher-forced?

Each `Fact` (prompt, answer) is fed as prompt + answer in ONE forward pass; the lens is read at
the positions that predict each answer token (the position just before it), and the tracked
token at answer position ``j`` is the gold answer token ``j``. Onsets are grouped per
(answer length ``n``, position ``j``) and reported separately for correct and incorrect
predictions, each with its N (the paper kept only correct ones).

Conventions:

* **joining and the leading space**: the answer is stripped of surrounding whitespace and joined
  to the prompt with one space (no space when the prompt already ends in whitespace). So
  ``" Paris"`` and ``"Paris"`` give the same result, and the answer tokens are those of
  ``" Paris"`` after ``"... is"`` (the paper's ``answer_token_w_space``; its length decides
  ``n``). The answer tokens are the tokens of the joined text after its longest common prefix
  with the prompt's own tokens (so a prompt's trailing space token merged into the answer, as in
  ``"is "`` + ``"Paris"``, is read at ``"is"``);
* **correct**: the final layer's top-1 equals the gold token. At ``j = 0`` the paper also accepts
  the answer's first token *without* the leading space (``"Paris"`` for ``" Paris"``); with
  ``accept_unspaced=True`` (default) glt does too, and then tracks that token (the model's own
  prediction, as the paper does). Later positions always track the gold token ``j``;
* **answer_correct**: every position of the answer is correct, i.e. greedy decoding reproduces
  the answer (up to that leading space);
* ranks are 0-based (``rank < k`` = inside the top-k); layers are residual indices (0 =
  embeddings, ``n_layers`` = final); onsets are `glt.decoding._onsets`' first crossing and stable onset;
* skipped facts are counted with a reason: the answer tokenises to nothing, no prompt token
  precedes the answer, prompt + answer exceed the model's context, or the answer has more than
  ``max_answer_tokens`` tokens.
"""

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from glt.core._capture import iter_residuals, layer_labels, model_tokenizer
from glt.core._check import checked
from glt.core._errors import GltError
from glt.core._models import model_name
from glt.decoding._onsets import K_GRID
from glt.decoding._readout import readout
from glt.lenses._protocol import Lens, lens_set
from glt.studies.fact_recall._data import Fact, load_glt_facts
from glt.studies.fact_recall._result import FactRecallResult

__all__ = ["SKIP_REASONS", "run_fact_recall"]

SKIP_EMPTY = "answer tokenises to nothing"
SKIP_NO_PROMPT = "no prompt token precedes the answer"
SKIP_CONTEXT = "prompt + answer exceed the model's context"
SKIP_LONG = "answer has more than max_answer_tokens tokens"
SKIP_REASONS = (SKIP_EMPTY, SKIP_NO_PROMPT, SKIP_CONTEXT, SKIP_LONG)


def join_answer(prompt: str, answer: str) -> str:
    """The text fed to the model: the stripped answer after the prompt, one space between.

    Example:
        >>> join_answer("The capital of France is", " Paris") == join_answer("The capital of France is", "Paris")
        True
        >>> join_answer("Answer:\\n", "Paris")
        'Answer:\\nParis'
    """
    sep = "" if not prompt or prompt[-1].isspace() else " "
    return prompt + sep + answer.strip()


@dataclass(frozen=True)
class _Item:
    index: int  # position in the caller's facts
    fact: Fact
    ids: tuple[int, ...]  # prompt + answer tokens
    start: int  # tokens before the answer; answer token j sits at start + j
    alt_first: int  # first token of the answer without a leading space


def _encode(tok: Any, text: str, special: bool = True) -> list[int]:
    """Token ids as `glt.tokenize` gives them (the tokenizer's own special tokens, e.g. BOS)."""
    return [int(t) for t in tok(text, add_special_tokens=special)["input_ids"]]


def _prepare(
    tok: Any, facts: Sequence[Fact], n_ctx: int, max_answer_tokens: int
) -> tuple[list[_Item], list[tuple[int, str]]]:
    """Tokenise every fact; return the analysable items and ``(index, reason)`` skips."""
    items, skipped = [], []
    for i, f in enumerate(facts):
        answer = f.answer.strip()
        full = _encode(tok, join_answer(f.prompt, answer)) if answer else []
        prompt_ids = _encode(tok, f.prompt)
        start = 0
        while start < min(len(full), len(prompt_ids)) and full[start] == prompt_ids[start]:
            start += 1
        n = len(full) - start
        if not answer or n == 0:
            skipped.append((i, SKIP_EMPTY))
        elif start == 0:
            skipped.append((i, SKIP_NO_PROMPT))
        elif len(full) > n_ctx:
            skipped.append((i, SKIP_CONTEXT))
        elif n > max_answer_tokens:
            skipped.append((i, SKIP_LONG))
        else:
            bare = _encode(tok, answer, special=False)
            alt = bare[0] if bare else full[start]
            items.append(_Item(i, f, tuple(full), start, int(alt)))
    return items, skipped


def _as_facts(facts: Any) -> tuple[Fact, ...]:
    if facts is None:
        return load_glt_facts()
    if isinstance(facts, (str, Fact)) or not isinstance(facts, Sequence):
        raise GltError(
            f"facts must be a list of glt.Fact (or (prompt, answer) pairs), got "
            f"{type(facts).__name__}: wrap a single fact in a list"
        )
    if len(facts) == 0:
        raise GltError("facts is empty: pass at least one glt.Fact, or None for glt's own facts")
    out = []
    for i, f in enumerate(facts):
        if isinstance(f, Fact):
            out.append(f)
        elif isinstance(f, dict) and "prompt" in f and "answer" in f:
            out.append(Fact.from_dict({"source": "user", **f}))
        elif isinstance(f, (tuple, list)) and len(f) == 2 and all(isinstance(x, str) for x in f):
            out.append(Fact(f[0], f[1], source="user"))
        else:
            raise GltError(
                f"facts[{i}] must be a glt.Fact, a (prompt, answer) pair of strings or a dict "
                f"with 'prompt' and 'answer', got {f!r:.80}"
            )
    return tuple(out)


def _check_options(ks: Any, max_answer_tokens: Any, batch_size: Any) -> tuple[int, ...]:
    for name, v in (("max_answer_tokens", max_answer_tokens), ("batch_size", batch_size)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise GltError(f"{name} must be an int >= 1, got {v!r}")
    if isinstance(ks, (int, str)) or not isinstance(ks, Sequence) or len(ks) == 0:
        raise GltError(f"ks must be a non-empty sequence of ints >= 1 (e.g. glt K_GRID), got {ks!r}")
    if not all(isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in ks):
        raise GltError(f"ks must hold ints >= 1, got {tuple(ks)!r}")
    return tuple(int(k) for k in ks)


def _resolve(
    targets: Int[Tensor, "row 2"],
    top1: Int[Tensor, "layer row"],
    ranks: Int[Tensor, "layer row 2"],
    logprobs: Float[Tensor, "layer row 2"],
) -> dict[str, Tensor]:
    """Pick the tracked token per row: the alternative (column 1) where the final top-1 is it
    and it differs from the gold (column 0), else the gold.

    Example:
        >>> t = torch.tensor([[4, 9], [4, 9], [5, 5]])
        >>> top1 = torch.tensor([[1, 1, 1], [9, 4, 5]])
        >>> ranks = torch.tensor([[[3, 0], [2, 7], [0, 0]], [[1, 0], [0, 2], [0, 0]]])
        >>> out = _resolve(t, top1, ranks, ranks.float())
        >>> out["tracked"].tolist(), out["correct"].tolist(), out["ranks"].tolist()
        ([9, 4, 5], [True, True, True], [[0, 2, 0], [0, 0, 0]])
    """
    gold, alt = targets[:, 0], targets[:, 1]
    use_alt = (top1[-1] == alt) & (alt != gold)
    idx = use_alt.long().view(1, -1, 1).expand(ranks.shape[0], -1, 1)
    return {
        "gold": gold, "tracked": torch.where(use_alt, alt, gold),
        "correct": (top1[-1] == gold) | use_alt,
        "ranks": ranks.gather(2, idx)[..., 0], "logprobs": logprobs.gather(2, idx)[..., 0],
    }


def _collect(
    model: Any, lenses: dict[str, Lens], items: Sequence[_Item], batch_size: int, progress: bool,
    accept_unspaced: bool,
) -> dict[str, dict[str, Tensor]]:
    """One forward pass per batch; read every answer-predicting position with each lens; resolve
    tracking. Returns ``{lens name: {field: tensor}}``."""
    parts: dict[str, dict[str, list[Tensor]]] = {name: {} for name in lenses}
    bar = tqdm(total=len(items), unit="fact", desc="fact recall", disable=not progress)
    stacks = iter_residuals(model, [list(it.ids) for it in items], batch_size=batch_size)
    for b0, stack in zip(range(0, len(items), batch_size), stacks, strict=False):
        batch = items[b0 : b0 + batch_size]
        where = torch.zeros_like(stack.mask)
        gold, alt, fact, pos = [], [], [], []
        for bi, it in enumerate(batch):
            n = len(it.ids) - it.start
            where[bi, it.start - 1 : len(it.ids) - 1] = True  # position start+j-1 predicts token j
            for j in range(n):
                gold.append(it.ids[it.start + j])
                alt.append(it.alt_first if (j == 0 and accept_unspaced) else it.ids[it.start + j])
                fact.append(b0 + bi)
                pos.append(j)
        targets = torch.tensor([gold, alt], dtype=torch.long).T
        for name, lens in lenses.items():  # the same residuals, decoded by every lens
            r = readout(stack, lens, targets=targets.to(stack.mask.device), top_k=1, positions=where)
            resolved = _resolve(targets, r.top1.cpu(), r.ranks.cpu(), r.target_logprobs.cpu())
            resolved.update(row_fact=torch.tensor(fact, dtype=torch.long),
                            row_position=torch.tensor(pos, dtype=torch.long),
                            top1=r.top1.cpu(), max_prob=r.max_prob.cpu())
            for key, val in resolved.items():
                parts[name].setdefault(key, []).append(val)
        bar.update(len(batch))
    bar.close()
    return {name: {k: torch.cat(v, -1) for k, v in part.items()} for name, part in parts.items()}


@checked
def run_fact_recall(
    model: Any,
    lens: Lens | Sequence[Lens],
    facts: Sequence[Any] | None = None,
    *,
    ks: Sequence[int] = K_GRID,
    max_answer_tokens: int = 3,
    accept_unspaced: bool = True,
    batch_size: int = 8,
    progress: bool = True,
) -> FactRecallResult | dict[str, FactRecallResult]:
    """Teacher-forced multi-token fact recall: answer-token onsets per (length, position).

    Args:
        model: a TransformerLens model with a tokenizer.
        lens: a `glt.Lens` for ``model`` (`glt.LogitLens`, `glt.TunedLens`), or a list of lenses
            with distinct names: each batch is then run once and decoded by every lens, and the
            result is ``{lens.name: FactRecallResult}`` (each equal to that lens's result alone).
        facts: `glt.Fact` items, ``(prompt, answer)`` pairs or dicts; None = glt's own facts
            (`glt.load_facts("glt")`).
        ks: the thresholds of the onset curves (default the paper's log grid 1..10^4).
        max_answer_tokens: longer answers are skipped (the paper: 3).
        accept_unspaced: at answer position 0 also accept the answer's first token without its
            leading space (the paper's rule; see the module docstring).
        batch_size: facts per forward pass (results do not depend on it).
        progress: show a progress bar.

    Returns:
        A frozen `FactRecallResult`; facts that could not be analysed are in ``.skipped``.

    Raises:
        GltError: bad arguments, an empty fact list, or no fact left to analyse.

    Example:
        >>> # model = glt.load_model("default")
        >>> # r = glt.run_fact_recall(model, glt.LogitLens.from_model(model))
        >>> # r.summary(ks=(1, 10))  -> N and median onsets per (length, position, outcome)
    """
    facts = _as_facts(facts)
    ks = _check_options(ks, max_answer_tokens, batch_size)
    tok = model_tokenizer(model)
    if tok is None:
        raise GltError("model has no tokenizer: load it with glt.load_model or attach one")
    n_layers, d_model = int(model.cfg.n_layers), int(model.cfg.d_model)
    lenses, single = lens_set(lens)
    for one in lenses.values():
        one.check_compatible(n_layers + 1, d_model)
    items, skipped = _prepare(tok, facts, int(model.cfg.n_ctx), max_answer_tokens)
    if not items:
        counts = dict(Counter(r for _, r in skipped))
        raise GltError(
            f"none of the {len(facts)} facts can be analysed (skipped: {counts}): pass facts "
            f"whose answers have 1..max_answer_tokens={max_answer_tokens} tokens and fit the "
            "context"
        )
    results = {name: FactRecallResult(
        model=model_name(model), lens=name,
        sources=tuple(dict.fromkeys(it.fact.source for it in items)), ks=ks,
        layer_labels=layer_labels(n_layers), max_answer_tokens=max_answer_tokens,
        accept_unspaced=bool(accept_unspaced), n_input=len(facts),
        facts=tuple(it.fact for it in items), fact_index=tuple(it.index for it in items),
        skipped=tuple(skipped), answer_tokens=tuple(tuple(it.ids[it.start:]) for it in items),
        **rows,
    ) for name, rows in _collect(model, lenses, items, batch_size, progress, accept_unspaced).items()}
    return results[next(iter(lenses))] if single else results
