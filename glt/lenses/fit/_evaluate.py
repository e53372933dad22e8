"""Held-out evaluation of lenses: per-layer KL to the final distribution and next-token loss.

For each read position ("row") and residual index, `evaluate_lens` records
``KL(p_final || p_lens)`` (0 at the final index by definition) and the cross-entropy of the
actual next token, for several lenses on the same rows, so their numbers compare pairwise.
Rows are every real position that has a next token inside its sequence, BOS positions excluded
(both counted in ``skipped``), optionally a seeded random subset of ``max_rows``.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from glt.core._capture import iter_residuals, layer_labels
from glt.core._check import checked
from glt.core._codec import Format, Saved
from glt.core._errors import GltError
from glt.core._models import model_name
from glt.lenses._logit import LogitLens
from glt.lenses._protocol import Lens
from glt.lenses._tuned import TunedLens
from glt.lenses.fit._data import plan_sequences
from glt.lenses.fit._loss import tiled_kl_ce

__all__ = ["LensEvaluation", "evaluate_lens", "finish_training"]


@dataclass(frozen=True, eq=False)
class LensEvaluation(Saved):
    """Per-row KL and cross-entropy of several lenses on the same held-out rows.

    Attributes:
        lenses: lens names, e.g. ``("logit", "least_squares", "tuned")``.
        layer_labels: one label per residual index (``embed`` ... ``final``).
        kl: ``[lens, layer, row]`` KL(final || lens) in nats (0 at the final index).
        ce: ``[lens, layer, row]`` cross-entropy of the next token in nats.
        model, data: provenance.
        skipped: rows not evaluated, by reason, with counts.
        compute_dtype: dtype of the logit matmuls.
    """

    _format: ClassVar[Format] = Format(
        "glt.LensEvaluation", "lens evaluation", "delete it and re-run the evaluation",
        legacy=(("kind", "glt.LensEvaluation"),), sizes={"lens": "lenses", "layer": "layer_labels"})

    lenses: tuple[str, ...]
    layer_labels: tuple[str, ...]
    kl: Float[Tensor, "lens layer row"]
    ce: Float[Tensor, "lens layer row"]
    model: str
    data: str
    skipped: dict[str, int] = field(default_factory=dict)
    compute_dtype: str = "torch.float32"

    @property
    def n_rows(self) -> int:
        return int(self.kl.shape[-1])

    def mean_kl(self, lens: str) -> Float[Tensor, " layer"]:
        """Mean KL per layer for lens ``lens``."""
        if lens not in self.lenses:
            raise GltError(f"lens must be one of {self.lenses}, got {lens!r}")
        return self.kl[self.lenses.index(lens)].mean(-1)

    def to_dataframe(self) -> Any:
        """One row per (lens, layer): KL mean / median / quartiles, CE mean, N."""
        import pandas as pd

        rows = []
        for i, name in enumerate(self.lenses):
            for j, label in enumerate(self.layer_labels):
                kl, ce = self.kl[i, j].double(), self.ce[i, j].double()
                quartiles = torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64)
                q = torch.quantile(kl, quartiles) if kl.numel() else [float("nan")] * 3
                rows.append({"lens": name, "layer": j, "layer_label": label,
                             "kl_mean": float(kl.mean()), "kl_q25": float(q[0]), "kl_median": float(q[1]),
                             "kl_q75": float(q[2]), "ce_mean": float(ce.mean()), "n": kl.numel()})
        return pd.DataFrame(rows)


@checked
def evaluate_lens(
    model: Any,
    lenses: Mapping[str, Lens],
    texts: Sequence[str],
    *,
    max_rows: int | None = None,
    seq_len: int = 256,
    batch_size: int = 8,
    row_chunk: int = 32,
    compute_dtype: torch.dtype = torch.float32,
    seed: int = 0,
    data_name: str | None = None,
    progress: bool = True,
) -> LensEvaluation:
    """Evaluate ``lenses`` (name -> lens) on held-out ``texts`` at the same rows.

    Example:
        >>> # ev = glt.evaluate_lens(model, {"logit": glt.LogitLens.from_model(model),
        >>> #                              "tuned": glt.load_lens("default", model)}, texts)
        >>> # ev.to_dataframe().pivot(index="layer", columns="lens", values="kl_mean")
    """


    if not isinstance(lenses, Mapping) or not lenses:
        raise GltError(
            "lenses must be a non-empty dict of name -> lens, e.g. {'logit': glt.LogitLens.from_model(model)}"
        )
    n_layers = int(model.cfg.n_layers)
    for name, lens in lenses.items():  # the signature's check samples one entry: check them all
        if not isinstance(lens, Lens):
            raise GltError(f"lenses[{name!r}] must be a glt.Lens (name, unembed, transform_stack, check_compatible), "
                           f"got {type(lens).__name__}: pass e.g. glt.LogitLens.from_model(model)")
        lens.check_compatible(n_layers + 1, int(model.cfg.d_model))
    seqs, bos = plan_sequences(model, texts, seq_len=seq_len)
    cand = [(i, p) for i, s in enumerate(seqs) for p in range(len(s) - 1) if s[p] != bos]
    skipped = {"bos_positions": sum(1 for s in seqs for t in s if t == bos),
               "last_positions_without_next_token": len(seqs)}
    if max_rows is not None and len(cand) > max_rows:
        pick = torch.randperm(len(cand), generator=torch.Generator().manual_seed(seed))[:max_rows]
        skipped["not_sampled"] = len(cand) - max_rows
        cand = sorted(cand[i] for i in pick.tolist())
    if not cand:
        raise GltError("texts give no evaluable positions (each needs a next token): pass longer texts")
    by_seq: dict[int, list[int]] = {}
    for i, p in cand:
        by_seq.setdefault(i, []).append(p)
    order = sorted(by_seq)
    trimmed = [seqs[i][: max(by_seq[i]) + 1] for i in order]  # causal: later tokens are not needed
    kl_out = [[] for _ in lenses]
    ce_out = [[] for _ in lenses]
    bar = tqdm(total=len(cand), desc="evaluate lens", unit="row", disable=not progress)
    for k, stack in enumerate(iter_residuals(model, trimmed, batch_size=batch_size)):
        ids = order[k * batch_size : (k + 1) * batch_size]
        b = torch.tensor([j for j, i in enumerate(ids) for _ in by_seq[i]], dtype=torch.long)
        p = torch.tensor([q for i in ids for q in by_seq[i]], dtype=torch.long)
        nxt = torch.tensor([seqs[i][q + 1] for i in ids for q in by_seq[i]], dtype=torch.long)
        for a in range(0, len(b), row_chunk):
            h = stack.resid[:, b[a : a + row_chunk], p[a : a + row_chunk]].float()
            for j, lens in enumerate(lenses.values()):
                with torch.no_grad():
                    x = lens.unembed.normalize(lens.transform_stack(h))
                    kl, ce = tiled_kl_ce(lens.unembed, x, x[-1], targets=nxt[a : a + row_chunk],
                                         compute_dtype=compute_dtype)
                kl[-1] = 0.0
                kl_out[j].append(kl)
                ce_out[j].append(ce)
            bar.update(min(row_chunk, len(b) - a))
    bar.close()
    return LensEvaluation(
        lenses=tuple(lenses), layer_labels=layer_labels(n_layers),
        kl=torch.stack([torch.cat(v, 1) for v in kl_out]), ce=torch.stack([torch.cat(v, 1) for v in ce_out]),
        model=model_name(model), data=data_name or f"{len(texts)} texts", skipped=skipped,
        compute_dtype=str(compute_dtype),
    )


def summarize(ev: LensEvaluation) -> dict[str, Any]:
    """Per-layer means per lens, for a lens's ``config.json``."""
    return {"rows": ev.n_rows, "data": ev.data, "skipped": ev.skipped,
            "kl_mean": {n: ev.kl[i].mean(-1).tolist() for i, n in enumerate(ev.lenses)},
            "ce_mean": {n: ev.ce[i].mean(-1).tolist() for i, n in enumerate(ev.lenses)}}


def finish_training(
    model: Any, lens: TunedLens, baseline: tuple[str, Lens] | None, heldout_texts: Sequence[str] | None,
    out: Any, *, eval_rows: int, seed: int, rank: int, progress: bool,
) -> LensEvaluation | None:
    """Evaluate a freshly trained lens on held-out text and save it with the evaluation.

    The evaluation compares ``logit``, the ``baseline`` ``(name, lens)`` KL training started
    from (``least_squares`` for a fresh lens, ``start`` when training continued a given lens)
    and ``tuned``. Rank 0 does the work; ``out/eval.json`` holds it beside the lens.
    """

    ev = None
    if rank == 0 and heldout_texts is not None:
        lenses = {"logit": LogitLens(lens.unembed, lens.n_layers)}
        if baseline is not None:
            lenses[baseline[0]] = baseline[1]
        lenses["tuned"] = lens
        ev = evaluate_lens(model, lenses, heldout_texts, max_rows=eval_rows, seed=seed,
                           data_name=f"{len(heldout_texts)} held-out texts", progress=progress)
        lens.config["heldout"] = summarize(ev)
    if rank == 0 and out is not None:
        lens.save(out, extra_files={"eval.json": ev.to_json()} if ev is not None else None)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
    return ev
