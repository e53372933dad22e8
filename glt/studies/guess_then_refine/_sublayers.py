"""Guess-then-refine inside a block: is an early guess overturned by the attention or by the MLP?

`sublayer_split` captures every block's input, its mid residual (after attention, before the
MLP: ``blocks.{b}.hook_resid_mid``) and its output, decodes all three with a lens that reads
mid residuals (the logit lens; the tuned and Jacobian lenses have no ``resid_mid`` translator
and raise GltError), and asks of each *guess* which sublayer removed it.

Definitions, per read position (a prefix, as in `glt.run_guess_then_refine`) and block ``b``:

* ``pre``, ``mid``, ``post``: the lens top-1 at the block's input (residual index ``b``:
  ``embed`` for block 0), at its mid residual (``resid_mid b``) and at its output (residual
  index ``b + 1``); the *final* top-1 is the read-out's tracked token at the final residual
  (the lowest id among maximal logits);
* a **guess** at block ``b``: ``pre`` falls in one of ``guess_buckets`` of the frequency table
  (default the top bucket, Top 1-10) and differs from the final top-1 (the model will
  overturn it somewhere);
* the **fate** of a guess in block ``b`` (`FATES`, a partition of the guesses):
  ``attention`` (``mid != pre`` and ``post != pre``: attention removed it and the MLP did not
  bring it back), ``mlp`` (``mid == pre``, ``post != pre``: it survived attention, the MLP
  removed it), ``restored`` (``mid != pre``, ``post == pre``: attention removed it, the MLP put it
  back) and ``kept`` (still the top-1 at the block's output);
* the **rank change** across a sublayer: the final top-1's 0-based rank after it minus before it
  (attention: ``mid - pre``; MLP: ``post - mid``); negative means the final token moved up.

Every aggregate carries its N (guesses per block; positions for the all-position top-1 change
rates). The prefix made of BOS alone is not read (as in `glt.run_guess_then_refine`); every other
position is, including a text's last (no gold token is needed here).
"""

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from glt.core._capture import iter_residuals, label_sites, model_tokenizer
from glt.core._check import checked, layer_indices
from glt.core._codec import Format, Saved
from glt.core._errors import GltError
from glt.core._models import model_name
from glt.data._frequency import TokenFrequency
from glt.data._wikipedia import WIKI_SOURCE, wikipedia_paragraphs
from glt.decoding._readout import readout
from glt.lenses._logit import LogitLens
from glt.lenses._protocol import Lens, require_resid_mid
from glt.plotting._curves import register_plot
from glt.plotting._style import OKABE_ITO, glt_style, new_axes
from glt.studies.guess_then_refine._inputs import resolve_frequency, token_ids

__all__ = ["FATES", "SublayerSplit", "plot_sublayer_split", "sublayer_split"]

#: What became of a guess in a block: removed by attention, removed by the MLP, removed by
#: attention and put back by the MLP, or still the top-1 at the block's output.
FATES: tuple[str, ...] = ("attention", "mlp", "restored", "kept")
_FATE_COLORS = {"attention": OKABE_ITO["vermillion"], "mlp": OKABE_ITO["blue"],
                "restored": OKABE_ITO["orange"], "kept": "#d9d9d9"}


def _median(x: Tensor) -> float:
    return float(torch.quantile(x.double(), 0.5)) if x.numel() else float("nan")


def _mean(x: Tensor) -> float:
    return float(x.double().mean()) if x.numel() else float("nan")


def _share(k: int, n: int) -> float:
    return k / n if n else float("nan")


@dataclass(frozen=True, eq=False)
class SublayerSplit(Saved):
    """Per-position top-1 tokens at every block's input, mid residual and output, and the split
    of early guesses into those overturned by attention and by the MLP (see the module docstring).

    Attributes:
        model, lens, data_source: provenance.
        layer_labels: the ``2 * n_layers + 1`` residuals read, in order (``embed``,
            ``resid_mid 0``, ``resid_pre 1``, ..., ``resid_mid {n_layers-1}``, ``final``).
        bucket_labels: labels of the frequency buckets (``bucket`` indexes them).
        guess_buckets: the buckets whose top-1s count as guesses.
        early_layers: the blocks pooled as "early" in `headline` (block ``b`` reads residual
            index ``b``).
        frequency: provenance of the frequency table.
        counts: texts seen / used and every position not read, by reason.
        text_index, pos_index: ``[n]`` which text and token position each read prefix ends at.
        top1: ``[layer, n]`` the lens top-1 at each residual (the last is the final top-1).
        bucket: ``[layer, n]`` the frequency bucket of ``top1``.
        rank_final: ``[layer, n]`` 0-based rank of the final top-1 at each residual.
    """

    _format: ClassVar[Format] = Format("glt.SublayerSplit", "sublayer split result", "re-run sublayer_split and save",
                                       sizes={"layer": "layer_labels"})

    model: str
    lens: str
    data_source: str
    layer_labels: tuple[str, ...]
    bucket_labels: tuple[str, ...]
    guess_buckets: tuple[int, ...]
    early_layers: tuple[int, ...]
    frequency: dict
    counts: dict
    text_index: Int[Tensor, " n"]
    pos_index: Int[Tensor, " n"]
    top1: Int[Tensor, "layer n"]
    bucket: Int[Tensor, "layer n"]
    rank_final: Int[Tensor, "layer n"]

    def __post_init__(self) -> None:
        sites = label_sites(self.layer_labels)
        n = sum(not s.mid for s in sites) - 1
        if n < 1 or sorted(s.index for s in sites if s.mid) != list(range(n)):
            raise GltError(f"layer_labels must name every block's input, mid residual and output "
                           f"(layer_labels(n_layers, resid_mid=True)), got {self.layer_labels}")
        if any(not 0 <= b < len(self.bucket_labels) for b in self.guess_buckets) or not self.guess_buckets:
            raise GltError(f"guess_buckets must be bucket indices in [0, {len(self.bucket_labels)}), "
                           f"got {self.guess_buckets}")

    # ------------------------------------------------------------------ indices
    @property
    def n_positions(self) -> int:
        return int(self.top1.shape[1])

    @property
    def n_layers(self) -> int:
        """Number of blocks (arrays hold ``2 * n_layers + 1`` residuals)."""
        return (len(self.layer_labels) - 1) // 2

    @property
    def _where(self) -> tuple[list[int], list[int], list[int]]:
        """Rows of ``top1`` holding each block's input, mid residual and output."""
        sites = label_sites(self.layer_labels)
        boundary = {s.index: i for i, s in enumerate(sites) if not s.mid}
        mid = {s.index: i for i, s in enumerate(sites) if s.mid}
        blocks = range(self.n_layers)
        return [boundary[b] for b in blocks], [mid[b] for b in blocks], [boundary[b + 1] for b in blocks]

    def _at(self, values: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        pre, mid, post = self._where
        return values[pre], values[mid], values[post]

    # ------------------------------------------------------------------ per position
    @property
    def guess(self) -> Bool[Tensor, "block n"]:
        """True where the block's input top-1 is a guess: in `guess_buckets` and not the final top-1."""
        pre, _, _ = self._where
        in_bucket = torch.isin(self.bucket[pre], torch.tensor(self.guess_buckets, dtype=torch.long))
        return in_bucket & (self.top1[pre] != self.top1[-1:])

    @property
    def fate(self) -> Int[Tensor, "block n"]:
        """Index into `FATES` of what the block did to its input's top-1 (every position)."""
        pre, mid, post = self._at(self.top1)
        gone_mid, gone_post = mid != pre, post != pre
        return torch.where(gone_mid, torch.where(gone_post, 0, 2), torch.where(gone_post, 1, 3))

    def rank_change(self, sublayer: str) -> Int[Tensor, "block n"]:
        """Change of the final top-1's rank across ``sublayer`` (``"attention"`` or ``"mlp"``) in
        every block, at every position (after minus before; negative: the final token moved up)."""
        pre, mid, post = self._at(self.rank_final)
        if sublayer == "attention":
            return mid - pre
        if sublayer == "mlp":
            return post - mid
        raise GltError(f"sublayer must be 'attention' or 'mlp', got {sublayer!r}")

    def top1_changed(self, sublayer: str) -> Bool[Tensor, "block n"]:
        """True where the top-1 changes across ``sublayer`` (``"attention"``: input to mid;
        ``"mlp"``: mid to output) in every block, at every position."""
        pre, mid, post = self._at(self.top1)
        if sublayer == "attention":
            return mid != pre
        if sublayer == "mlp":
            return post != mid
        raise GltError(f"sublayer must be 'attention' or 'mlp', got {sublayer!r}")

    # ------------------------------------------------------------------ aggregates
    @property
    def n_guesses(self) -> Int[Tensor, " block"]:
        """Guesses per block (the N behind every per-block share)."""
        return self.guess.sum(1)

    @property
    def fate_counts(self) -> Int[Tensor, "block fate"]:
        """Guesses per block and `FATES` entry (rows sum to `n_guesses`)."""
        g = self.guess
        out = torch.zeros(self.n_layers, len(FATES), dtype=torch.long)
        return out.scatter_add_(1, self.fate, g.long())

    @property
    def fate_share(self) -> Float[Tensor, "block fate"]:
        """`fate_counts` over `n_guesses` (NaN in a block without guesses)."""
        n = self.n_guesses.double()[:, None]
        return torch.where(n > 0, self.fate_counts.double() / n.clamp_min(1), torch.nan)

    def _pooled(self, blocks: Sequence[int]) -> dict[str, Any]:
        idx = list(blocks)
        g = self.guess[idx]
        n = int(g.sum())
        counts = self.fate_counts[idx].sum(0)
        out: dict[str, Any] = {"n_guesses": n}
        out.update({f"n_{f}": int(counts[k]) for k, f in enumerate(FATES)})
        out.update({f"share_{f}": _share(int(counts[k]), n) for k, f in enumerate(FATES)})
        for sub in ("attention", "mlp"):
            out[f"top1_changed_{sub}"] = _share(int(self.top1_changed(sub)[idx][g].sum()), n)
            delta = self.rank_change(sub)[idx][g]
            out[f"rank_change_{sub}_mean"] = _mean(delta)
            out[f"rank_change_{sub}_median"] = _median(delta)
        n_all = self.n_positions * len(idx)
        out["n_positions"] = n_all
        for sub in ("attention", "mlp"):
            out[f"all_top1_changed_{sub}"] = _share(int(self.top1_changed(sub)[idx].sum()), n_all)
        return out

    def headline(self, layers: Sequence[int] | None = None) -> dict[str, Any]:
        """The split pooled over blocks ``layers`` (default `early_layers`): N guesses, the count
        and share of each fate, the share whose top-1 changes across each sublayer, the mean and median
        rank change of the final token across each sublayer over the guesses, and, over all
        ``n_positions`` (positions x blocks), how often each sublayer changes the top-1.

        Example:
            >>> # glt.sublayer_split(model).headline()["share_attention"]
        """
        layers = self.early_layers if layers is None else layers
        idx = layer_indices(layers, name="layers", last=self.n_layers - 1, what="block indices")
        return {"early_layers": list(idx), **self._pooled(idx)}

    def to_dataframe(self) -> Any:
        """One row per block: its input's label, N guesses, the count and share of each fate,
        top-1 changes and the final token's rank change (mean, median) across attention and MLP,
        and the all-position top-1 change rates with their N (`headline` per block)."""
        import pandas as pd

        pre, _, _ = self._where
        return pd.DataFrame([{"block": b, "input_label": self.layer_labels[pre[b]], **self._pooled([b])}
                             for b in range(self.n_layers)])


# ---------------------------------------------------------------------- the run
def _plan(model: Any, texts: Iterable[Any], max_positions: int | None
          ) -> tuple[list[tuple[int, list[int], int]], dict[str, int]]:
    """``(text index, forward ids, first read position)`` per text; every later position is read."""
    bos = getattr(model_tokenizer(model), "bos_token_id", None)
    n_ctx = int(model.cfg.n_ctx)
    counts = {"n_texts_seen": 0, "n_texts_used": 0, "skipped_empty_text": 0, "skipped_too_short": 0,
              "skipped_bos_only_prefix": 0, "skipped_beyond_context": 0, "unread_after_max_positions": 0,
              "n_texts_unused": 0}
    plan, budget = [], max_positions if max_positions is not None else -1
    for i, text in enumerate(texts):
        if budget == 0:
            counts["n_texts_unused"] = len(texts) - i if hasattr(texts, "__len__") else -1
            break
        counts["n_texts_seen"] += 1
        if isinstance(text, str) and not text.strip():
            counts["skipped_empty_text"] += 1
            continue
        ids = token_ids(model, text, i)
        first = 1 if bos is not None and ids[:1] == [bos] else 0
        counts["skipped_beyond_context"] += max(0, len(ids) - n_ctx)
        ids = ids[:n_ctx]
        if len(ids) <= first:
            counts["skipped_too_short"] += 1
            continue
        counts["skipped_bos_only_prefix"] += first
        n = len(ids) - first
        take = n if budget < 0 else min(n, budget)
        counts["unread_after_max_positions"] += n - take
        plan.append((i, ids[: first + take], first))
        counts["n_texts_used"] += 1
        budget -= take if budget > 0 else 0
    return plan, counts


@checked
def sublayer_split(
    model: Any,
    lens: Lens | None = None,
    texts: Iterable[Any] | None = None,
    *,
    frequency: TokenFrequency | str | os.PathLike | None = None,
    max_positions: int | None = 1000,
    batch_size: int = 8,
    guess_buckets: Sequence[int] = (0,),
    early_layers: Sequence[int] | None = None,
    source: str | None = None,
    progress: bool = True,
) -> SublayerSplit:
    """Read every prefix at each block's input, mid residual and output, and split the early
    guesses by the sublayer (attention or MLP) that overturned them (definitions: module docstring).

    The read-out is `glt.readout`'s (exact ranks, streamed over the vocabulary) on stacks captured
    with ``resid_mid=True``, one batch at a time.

    Args:
        model: a TransformerLens model whose blocks run attention then MLP (parallel-attention
            models have no mid residual: GltError).
        lens: a lens that reads mid-block residuals; default (and today the only one in glt) the
            logit lens. A tuned or Jacobian lens raises GltError before any forward pass.
        texts: strings or token id lists; default: the held-out Wikipedia paragraphs.
        frequency: the `glt.TokenFrequency` that defines the buckets (or a name / folder for
            `glt.load_frequency`); default: the shipped table for the default model.
        max_positions: stop after this many read positions (None: read everything).
        batch_size: texts per forward pass (results do not depend on it).
        guess_buckets: bucket indices whose top-1s count as guesses (default: the top bucket).
        early_layers: blocks pooled in `SublayerSplit.headline`; default the first quarter
            without block 0 (which reads the embeddings): ``1 .. max(1, n_layers // 4)``, the
            blocks whose inputs are `glt.run_guess_then_refine`'s early layers.
        source: a description of ``texts`` for provenance.
        progress: show a tqdm progress bar.

    Returns:
        A frozen `SublayerSplit` (``to_dataframe()`` per block, ``headline()``, ``save``/``load``).

    Example:
        >>> # split = glt.sublayer_split(glt.load_model(), texts=glt.wikipedia_paragraphs("heldout")[:32])
        >>> # split.to_dataframe()[["block", "n_guesses", "share_attention", "share_mlp"]]
    """
    if max_positions is not None and (not isinstance(max_positions, int) or max_positions < 1):
        raise GltError(f"max_positions must be a positive int or None, got {max_positions!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise GltError(f"batch_size must be a positive int, got {batch_size!r}")
    lens = LogitLens.from_model(model) if lens is None else lens
    require_resid_mid(lens)
    n_layers = int(model.cfg.n_layers)
    lens.check_compatible(n_layers + 1, int(model.cfg.d_model))
    early = (tuple(range(1, 1 + max(1, n_layers // 4))) if early_layers is None
             else layer_indices(early_layers, name="early_layers", last=n_layers - 1, what="block indices"))
    frequency = resolve_frequency(model, frequency, lens.unembed.d_vocab)
    buckets = layer_indices(guess_buckets, name="guess_buckets", last=frequency.n_buckets - 1,
                            what=f"bucket indices of {frequency.labels}")
    if texts is None:
        texts, source = wikipedia_paragraphs("heldout"), source or f"{WIKI_SOURCE}, held-out paragraphs"
    if isinstance(texts, str):
        raise GltError("texts must be a list of texts, got one string: wrap it in a list")
    plan, counts = _plan(model, texts, max_positions)
    if counts["n_texts_seen"] == 0:
        raise GltError("texts is empty: pass at least one text")
    if not plan:
        raise GltError(f"no readable prefix in the {counts['n_texts_seen']} texts ({counts}): pass longer texts")

    parts: dict[str, list[Tensor]] = {k: [] for k in ("text_index", "pos_index", "top1", "rank_final")}
    stacks = iter_residuals(model, [ids for _, ids, _ in plan], batch_size=batch_size, resid_mid=True)
    batches = range(0, len(plan), batch_size)
    labels: tuple[str, ...] = ()
    for start, stack in tqdm(zip(batches, stacks, strict=True), total=len(batches),
                             disable=not progress, desc="sublayer split"):
        items = plan[start : start + batch_size]
        read = stack.mask.clone()
        for b, (_, _, first) in enumerate(items):
            read[b, :first] = False
        r = readout(stack, lens, positions=read, top_k=1)
        bi = r.batch_index.cpu()
        top1 = r.top1.cpu().clone()
        top1[-1] = r.targets[:, 0].cpu()  # the tracked final top-1 (lowest id among ties)
        parts["text_index"].append(torch.tensor([it[0] for it in items], dtype=torch.long)[bi])
        parts["pos_index"].append(r.pos_index.cpu())
        parts["top1"].append(top1)
        parts["rank_final"].append(r.ranks[..., 0].cpu())
        labels = stack.labels
    cat = {k: torch.cat(v, -1) for k, v in parts.items()}
    return SublayerSplit(
        model=model_name(model), lens=lens.name, data_source=source or "user texts", layer_labels=tuple(labels),
        bucket_labels=frequency.labels, guess_buckets=buckets, early_layers=early,
        frequency=frequency.provenance(), counts=counts, bucket=frequency.bucket_of(cat["top1"]), **cat,
    )


# ---------------------------------------------------------------------- the plot
@checked
def plot_sublayer_split(result: SublayerSplit, *, ax: Any = None, min_n: int = 10, title: str | None = None) -> Any:
    """What became of the guesses in each block: 100% stacked bars of `FATES` (removed by
    attention, by the MLP, removed and restored, kept), N guesses above each bar.

    Args:
        result: a `glt.SublayerSplit`.
        ax: axes to draw into; default a new figure.
        min_n: leave blocks with fewer guesses than this empty (stated on the figure).
        title: axes title.

    Returns:
        The figure or the given axes; the container of fate ``f`` has heights
        ``result.fate_share[:, f]`` where ``result.n_guesses >= min_n`` (else 0).
    """
    share = np.nan_to_num(result.fate_share.numpy())
    n = result.n_guesses.numpy()
    ok = n >= min_n
    x = np.arange(result.n_layers)
    labels = {"attention": "overturned by attention", "mlp": "overturned by the MLP",
              "restored": "removed by attention, restored by the MLP", "kept": "kept through the block"}
    with glt_style():
        fig, axes = new_axes(ax, figsize=(8.0, 4.0))
        bottom = np.zeros(len(x))
        for k, f in enumerate(FATES):
            h = np.where(ok, share[:, k], 0.0)
            axes.bar(x, h, bottom=bottom, width=0.82, color=_FATE_COLORS[f], label=labels[f],
                     edgecolor="white", linewidth=0.4)
            bottom += h
        for b in x:
            axes.text(b, 1.01, f"{int(n[b]):,}", ha="center", va="bottom", fontsize=6.5,
                      rotation=90 if len(x) > 20 else 0,
                      color=OKABE_ITO["black"] if ok[b] else OKABE_ITO["grey"])
        axes.set_ylim(0, 1.12)
        axes.set_xticks(x, [str(b) for b in x])
        axes.set_xlim(-0.5, len(x) - 0.5)
        axes.set_xlabel("block (its input is residual index = block; N guesses above each bar)")
        axes.set_ylabel("share of the block's guesses")
        axes.grid(axis="x", visible=False)
        axes.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8,
                    title=f"guess = input top-1 in {', '.join(result.bucket_labels[b] for b in result.guess_buckets)},"
                          "\nnot the final top-1", title_fontsize=8)
        axes.text(1.0, -0.16, f"blocks with < {min_n} guesses left empty", transform=axes.transAxes,
                  ha="right", va="top", fontsize=7.5, color=OKABE_ITO["grey"])
        axes.set_title(title or f"Which sublayer overturns a guess ({result.lens} lens; "
                                f"N = {int(n.sum()):,} guesses over {result.n_positions:,} positions)", loc="left")
    return fig if ax is None else ax


register_plot(SublayerSplit, plot_sublayer_split)
