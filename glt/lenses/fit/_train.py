"""Training a tuned lens: least-squares initialisation, then KL(final || lens) minimisation.

The recipe's knobs (named below as keywords, e.g. ``optimizer="sgd"``) are the fields of
`glt.TrainConfig` (`glt.lenses.fit._config`), passed as a config or as keywords.

Pieces:

* objective: ``KL(p_final || p_lens)`` at the same position, averaged over read positions and
  summed over layers, as tuned-lens does; every layer's term comes from one shared forward pass
  of the model (`glt.iter_residuals`) and the vocabulary softmax is tiled with a memory-bounded
  gradient (`glt.lenses.fit._loss`); BOS positions (a constant attention sink) are skipped;
* ``init="least_squares"`` (default) fits every translator in closed form so that
  ``h_l + A_l h_l + b_l`` predicts the final residual ``h_final`` (ridge regression, rows
  weighted by ``1 / mean(h_final^2)`` so they count in the final norm's scale-free units): only
  forward passes, no vocabulary-sized work. ``init="zero"`` is the logit lens, tuned-lens's start;
* ``optimizer="linesearch"`` (default): diagonally preconditioned gradient with per-layer step
  sizes chosen on validation positions held out of the training texts (`glt.lenses.fit._line_search`);
* ``optimizer="sgd"``: tuned-lens's recipe, SGD with Nesterov momentum 0.9, ``lr`` 1.0 *after*
  undoing PyTorch's ``1/(1-momentum)`` factor (PyTorch ``lr = 1.0 * (1 - 0.9)``), weight decay
  1e-3, global gradient-norm clip 1.0, linear decay to zero, no warm-up. tuned-lens takes 250
  steps of 2^18 tokens; glt keeps the step rule and scales the data: ``tokens_per_step``
  positions per step, ``max_tokens // tokens_per_step`` steps. ``optimizer="adam"`` is
  tuned-lens's alternative (AMSGrad, lr 1e-3);
* ``frequency_counts`` / ``frequency_alpha`` (the paper's control, whose exact scheme is
  unpublished): each read position's KL is weighted by ``(1 + count[t])^-alpha`` with ``t`` the
  final layer's top-1 token, so with ``alpha = 1`` a position predicting a 1000x more frequent
  token (such as "the") weighs ~1000x less; the loss is the weighted mean, and the line search
  judges its step sizes by the same weighted mean on its validation positions (and the
  least-squares start weights its rows the same way). Counts come from
  any corpus, e.g. ``glt.load_frequency("default").counts`` (the default model's table).

Why the defaults differ from the recipe (measured on the default model, Gemma 3 270M, whose
residual norms grow from ~30 to ~4e4 with depth): from the least-squares start, two recipe SGD
steps raise the held-out KL of the last translator from 0.42 to 49 nats, and the zero-init
recipe's mean KL rises from 46.9 to 50.6 nats over its first 941 tokens, while least squares
alone gives 2.24 (mean over layers, held-out probe), least squares + line search 1.81 after
3,988 tokens, and 1.79 after 8,745 more on layers 11-17 (``layers=``); on 1,024 held-out
positions it then beats least squares at every layer (by 0.025-0.29 nats at layers 11-17). The
tokens-to-KL curves are in the shipped lens's report (``glt/assets/lenses/default/report.md``).

Data parallel: under ``torch.distributed`` (``torchrun``, gloo on CPU) rank ``r`` takes every
``world_size``-th sequence of each step; weighted loss sums and gradients are all-reduced, so the
step equals the single-process step up to float summation order, and the least-squares start
fits the same positions as one process. Call ``init_process_group`` before training (every rank
passes the same texts; rank 0 saves), or run the command line under torchrun, which joins the
group itself: ``torchrun --nproc_per_node 4 -m glt lens train --corpus wikipedia-train ...``.
"""

import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from glt.core._capture import iter_residuals
from glt.core._check import checked, layer_indices
from glt.core._distributed import all_reduce_sum, rank_and_world
from glt.core._errors import GltError
from glt.core._paths import folder_target
from glt.lenses._tuned import TunedLens, _fill, _read_params
from glt.lenses.fit._checkpoints import load_checkpoint, save_checkpoint, save_tensors
from glt.lenses.fit._config import TrainConfig, config_with
from glt.lenses.fit._data import (
    plan_sequences,
    plan_steps,
    read_rows,
    split_validation,
    validation_residuals,
)
from glt.lenses.fit._evaluate import finish_training
from glt.lenses.fit._least_squares import fit_least_squares
from glt.lenses.fit._line_search import LineSearch
from glt.lenses.fit._loss import tiled_kl_ce

__all__ = ["train_tuned_lens"]


def _row_weights(top1: Tensor, counts: Tensor | None, alpha: float) -> Tensor:
    if counts is None:
        return torch.ones(top1.shape, dtype=torch.float32, device=top1.device)
    return (1.0 + counts.to(top1.device).float()[top1]).pow(-alpha)


def _check_counts(counts: Any, d_vocab: int) -> Tensor | None:
    if counts is None:
        return None
    t = torch.as_tensor(counts)
    if t.ndim != 1 or t.shape[0] != d_vocab or t.dtype == torch.bool or bool((t < 0).any()):
        raise GltError(
            f"frequency_counts must be a non-negative [d_vocab={d_vocab}] tensor of token counts, "
            f"got {t.dtype} {tuple(t.shape)}: count tokens with the model's own tokenizer"
        )
    return t.float()


def _fingerprint(settings: dict[str, Any], seqs: list[list[int]]) -> str:
    h = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    h.update(str(len(seqs)).encode())
    for s in seqs[:64]:
        h.update(str(s[:32]).encode())
    return h.hexdigest()[:16]


@checked
def train_tuned_lens(
    model: Any,
    texts: Sequence[str],
    config: TrainConfig | None = None,
    *,
    frequency_counts: Tensor | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int = 10,
    callback: Callable[[int, int, TunedLens], None] | None = None,
    heldout_texts: Sequence[str] | None = None,
    eval_rows: int = 256,
    out: str | os.PathLike | None = None,
    data_name: str | None = None,
    progress: bool = True,
    **overrides: Any,
) -> TunedLens:
    """Train a tuned lens for ``model`` on ``texts`` (see the module docstring for the recipe).

    The recipe is a `glt.TrainConfig`; its fields may also be passed as keywords, which replace
    those of ``config`` (``train_tuned_lens(model, texts, max_tokens=4096, optimizer="sgd")`` and
    ``train_tuned_lens(model, texts, TrainConfig(max_tokens=4096, optimizer="sgd"))`` are the same
    run). A keyword that is neither a field nor an argument below raises `GltError` listing both.

    Args:
        model: a TransformerLens model (its weights are never changed).
        texts: training texts; cut into sequences of at most ``seq_len`` tokens.
        config: the recipe (default ``TrainConfig()``: least-squares start, then the line search).
        frequency_counts: counts per token id, ``[d_vocab]`` (e.g. ``glt.load_frequency(...).counts``):
            train the frequency-reweighted objective with exponent ``frequency_alpha``; None
            trains the plain objective.
        checkpoint_dir: where to checkpoint every ``checkpoint_every`` steps (atomic); a run
            started again with the same recipe, texts and counts resumes after the last completed
            step (with ``optimizer="linesearch"`` a larger ``max_tokens`` extends a finished run).
        callback: ``callback(step, tokens_seen, lens)`` after each step (rank 0 only).
        heldout_texts: texts not used in training: the lens is evaluated on ``eval_rows`` of
            their positions (per-layer KL to final and next-token cross-entropy of ``logit``,
            ``tuned`` and the lens KL training started from: ``least_squares`` after a
            least-squares fit, ``start`` when ``init`` is a lens); the summary goes into
            ``lens.config["heldout"]`` and the full `glt.LensEvaluation` into ``out/eval.json``.
        out: folder to save the lens into (atomically) when done (rank 0 only).
        data_name: provenance string recorded in the lens config.
        progress: tqdm bar with the loss.
        **overrides: `glt.TrainConfig` fields replacing those of ``config``.

    Returns:
        The trained `TunedLens` (``lens.config["training"]`` records the run).

    Example:
        >>> # lens = glt.train_tuned_lens(model, glt.wikipedia_paragraphs("train"), max_tokens=16_384)
        >>> # recipe = glt.TrainConfig(init="zero", optimizer="sgd")   # tuned-lens's recipe
        >>> # lens = glt.train_tuned_lens(model, texts, recipe, checkpoint_dir="ck", out="my-lens")
    """

    cfg = config_with(config, overrides)  # GltError naming a wrong or unknown setting
    start_lens = cfg.init if isinstance(cfg.init, TunedLens) else None
    init = cfg.init if start_lens is None else "lens:"  # the start lens's hash follows below
    if not isinstance(texts, Sequence) or isinstance(texts, str) or len(texts) == 0:
        raise GltError(f"texts must be a non-empty list of strings, got {type(texts).__name__}")
    for name, folder in (("out", out), ("checkpoint_dir", checkpoint_dir)):  # refuse before hours of training
        if folder is not None:
            folder_target(folder, name)
    rank, world = rank_and_world()
    lens = TunedLens.from_model(model)
    sel = _check_layers(cfg.layers, lens.n_layers)
    if start_lens is not None:
        lens.check_compatible(start_lens.n_layers + 1, start_lens.d_model)
        with torch.no_grad():
            lens.weight.copy_(start_lens.weight)
            lens.bias.copy_(start_lens.bias)
        lens.config.update({k: v for k, v in start_lens.config.items() if k == "least_squares"})
        earlier = start_lens.config.get("previous_training", [])  # stages before this one, oldest first
        lens.config["previous_training"] = earlier + [start_lens.config["training"]] \
            if "training" in start_lens.config else earlier
        init = "lens:" + hashlib.sha256(start_lens.weight.detach().numpy().tobytes()).hexdigest()[:12]
    counts = _check_counts(frequency_counts, lens.unembed.d_vocab)
    weigh = None if counts is None else (lambda top1: _row_weights(top1, counts, cfg.frequency_alpha))
    seqs, bos = plan_sequences(model, texts, seq_len=cfg.seq_len)
    val_seqs: list[list[int]] = []
    if cfg.optimizer == "linesearch":  # validation rows for the step sizes, held out of training
        seqs, val_seqs = split_validation(seqs, bos, cfg.val_rows, cfg.seed)
    n_steps = cfg.max_tokens // cfg.tokens_per_step
    settings = _settings(cfg, init, sel)
    settings["frequency_counts"] = None if counts is None else hashlib.sha256(counts.numpy().tobytes()).hexdigest()[:16]
    # line search has no schedule over the run's length: a rerun with a larger max_tokens extends it
    linesearch = cfg.optimizer == "linesearch"
    fp = _fingerprint({k: v for k, v in settings.items() if not (k == "max_tokens" and linesearch)}, seqs)
    plan = plan_steps(seqs, bos, cfg.tokens_per_step, cfg.seed, n_steps) if n_steps else []
    params = lens.translators()
    opt: Any = None
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=cfg.lr * (1 - cfg.momentum), momentum=cfg.momentum, nesterov=True,
                              weight_decay=cfg.weight_decay)
    elif cfg.optimizer == "adam":
        opt = torch.optim.Adam(params, lr=cfg.lr * 1e-3, betas=(cfg.momentum, 0.999), amsgrad=True,
                               weight_decay=cfg.weight_decay)
    base_lr = opt.param_groups[0]["lr"] if opt is not None else 0.0
    history: list[dict[str, Any]] = []
    start = 0
    state = load_checkpoint(checkpoint_dir, fp, lens, opt) if checkpoint_dir else None
    t0 = time.time()
    if state is not None:
        start, history = state["step"], state["history"]
        lens.config.update(state.get("lens_config", {}))
    elif init == "least_squares" and cfg.least_squares_tokens > 0:
        order = torch.randperm(len(seqs), generator=torch.Generator().manual_seed(cfg.seed)).tolist()
        ls_seqs = [seqs[i] for i in order]
        fit_least_squares(model, ls_seqs, lens=lens, max_tokens=cfg.least_squares_tokens, ridge=cfg.ridge,
                          batch_size=cfg.batch_size, row_weight=weigh, progress=progress)
    # the held-out comparison's baseline: the lens KL training starts from, named for what it is
    baseline = "start" if start_lens is not None else "least_squares" if lens.config.get("least_squares") else None
    if checkpoint_dir and state is None:
        save_checkpoint(checkpoint_dir, fp, lens, opt, 0, history, rank)
        if baseline:  # kept for the held-out comparison after a resume
            save_tensors(Path(checkpoint_dir) / _START_FILE,
                         {"weight": lens.weight.detach().clone(), "bias": lens.bias.detach().clone()}, rank)
    start_copy = None
    if heldout_texts is not None and baseline:
        start_copy = _start_copy(lens, checkpoint_dir if state is not None else None)
    W = lens.unembed.W if cfg.compute_dtype == lens.unembed.W.dtype else lens.unembed.W.to(cfg.compute_dtype)
    search = None
    if cfg.optimizer == "linesearch":
        search = LineSearch(lens, validation_residuals(model, val_seqs, bos, cfg.val_rows, cfg.batch_size),
                            lens.unembed.W, tile=cfg.vocab_tile, layers=sel, row_weight=weigh)
        if state is not None and "search" in state:
            search.centre = torch.tensor(state["search"]["centre"])
    norm_params = [p for p in lens.unembed.norm.parameters() if p.requires_grad]
    for p in norm_params:
        p.requires_grad_(False)
    keep = None  # translators that stay fixed, when only some train
    if cfg.layers is not None:
        keep = torch.ones(lens.n_layers, dtype=torch.bool)
        keep[sel] = False
    bar = tqdm(total=n_steps, initial=start, desc="tuned lens", unit="step", disable=not progress or rank != 0)
    try:
        for step in range(start, n_steps):
            if opt is not None:
                for g in opt.param_groups:
                    g["lr"] = base_lr * (1 - step / n_steps)
            for p in params:
                p.grad = torch.zeros_like(p)  # every rank all-reduces a gradient, even an empty share
            stats = _step_grads(model, lens, [seqs[i] for i in plan[step][rank::world]], bos, W, sel,
                                counts, cfg.frequency_alpha, cfg.batch_size, cfg.row_chunk, cfg.compute_dtype,
                                cfg.vocab_tile)
            for p in params:
                all_reduce_sum(p.grad)
            all_reduce_sum(stats)
            wsum, n_rows = float(stats[0]), int(stats[1])
            for p in params:
                p.grad /= max(wsum, 1e-30)
            kl_layer = (stats[2:] / max(wsum, 1e-30)).tolist()
            rec: dict[str, Any] = {"step": step + 1, "rows": n_rows, "kl": sum(kl_layer), "kl_layer": kl_layer}
            if search is not None:
                rec.update(search.step(lens.weight.grad, lens.bias.grad))
                if world > 1:  # every rank computed the same update; keep them bit-identical
                    for p in params:
                        torch.distributed.broadcast(p.data, 0)
            else:
                clip = cfg.grad_clip
                rec["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, clip)) if clip else None
                frozen = [p.detach()[keep].clone() for p in params] if keep is not None else None
                opt.step()
                if frozen is not None:  # weight decay and momentum must not move untrained layers
                    with torch.no_grad():
                        for p, f in zip(params, frozen, strict=True):
                            p[keep] = f
                rec["lr"] = opt.param_groups[0]["lr"]
            history.append(rec)
            bar.update(1)
            bar.set_postfix(kl=f"{sum(kl_layer):.3f}")
            if checkpoint_dir and ((step + 1) % checkpoint_every == 0 or step + 1 == n_steps):
                extra = None if search is None else {"centre": search.centre.tolist()}
                save_checkpoint(checkpoint_dir, fp, lens, opt, step + 1, history, rank, search=extra)
            if callback is not None and rank == 0:
                callback(step + 1, sum(h["rows"] for h in history), lens)
    finally:
        bar.close()
        for p in norm_params:
            p.requires_grad_(True)
    lens.config["training"] = {
        **settings, "steps": n_steps, "tokens_trained": sum(h["rows"] for h in history),
        "bos_positions_skipped": "all (constant attention sink)", "n_sequences": len(seqs),
        "data": data_name or f"{len(texts)} texts", "world_size": world, "seconds": time.time() - t0,
        "objective": "KL(final || lens), mean over positions, summed over layers",
        "frequency_weighting": None if counts is None else f"(1 + count[final top-1])^-{cfg.frequency_alpha}",
        "history": history,
    }
    if heldout_texts is not None or out is not None:
        finish_training(model, lens, (baseline, start_copy) if start_copy is not None else None,
                        heldout_texts, out, eval_rows=eval_rows, seed=cfg.seed, rank=rank, progress=progress)
    return lens


_START_FILE = "start.safetensors"


def _start_copy(lens: TunedLens, resumed_from: Any) -> TunedLens | None:
    """The start of KL training for the held-out comparison: the lens now, or the saved copy."""

    start = TunedLens(lens.unembed, lens.n_layers, {})
    if resumed_from is None:
        return _fill(start, lens.weight.detach(), lens.bias.detach(), Path("<memory>"))
    f = Path(resumed_from) / _START_FILE
    if not f.is_file():
        return None
    p = _read_params(f)
    return _fill(start, p["weight"], p["bias"], f)


# the recipe's fields that fingerprint a checkpoint (with compute_dtype and the counts' hash) and are recorded in
# lens.config["training"]: glt 0.1.0's keyword arguments, named and valued as then, so its checkpoints still resume
_SETTINGS = {"val_rows", "layers", "init", "max_tokens", "tokens_per_step", "least_squares_tokens", "ridge",
             "optimizer", "lr", "momentum", "weight_decay", "grad_clip", "frequency_alpha", "seq_len", "seed",
             "vocab_tile"}


def _settings(cfg: TrainConfig, init: str, sel: Tensor) -> dict[str, Any]:
    """The recipe as fingerprinted and recorded: ``init`` a name or ``lens:<hash>``, ``layers`` the trained
    translators as a list (None: all), ``compute_dtype`` as text."""
    values = {name: getattr(cfg, name) for name in _SETTINGS}
    values.update(init=init, layers=None if cfg.layers is None else sel.tolist(), compute_dtype=str(cfg.compute_dtype))
    return values


def _check_layers(layers: Sequence[int] | None, n_layers: int) -> Tensor:
    """The trained translator indices as a tensor (all when ``layers`` is None)."""
    if layers is None:
        return torch.arange(n_layers)
    return torch.tensor(layer_indices(layers, name="layers", last=n_layers - 1, increasing=True,
                                      what="translator indices", fix="pass None to train every translator"))


def _step_grads(model: Any, lens: TunedLens, seqs: list[list[int]], bos: int, W: Tensor, sel: Tensor,
                counts: Tensor | None, alpha: float, batch_size: int, row_chunk: int,
                compute_dtype: torch.dtype, tile: int) -> Tensor:
    """Accumulate ``sum_rows w * KL`` gradients for one step; returns [wsum, rows, kl_sum/layer]."""
    L = len(sel)
    stats = torch.zeros(2 + L, dtype=torch.float64)
    if not seqs:
        return stats
    for stack in iter_residuals(model, seqs, batch_size=batch_size):
        b, p = read_rows(stack.tokens, stack.mask, bos)
        for a in range(0, len(b), row_chunk):
            h = stack.resid[:, b[a : a + row_chunk], p[a : a + row_chunk]].clone().float()
            x = lens.unembed.normalize(lens.transform_stack(h)[:-1][sel])
            xf = lens.unembed.normalize(h[-1])
            kl, _, top1 = tiled_kl_ce(lens.unembed, x, xf, compute_dtype=compute_dtype, tile=tile,
                                      W=W, return_top1=True)
            w = _row_weights(top1, counts, alpha)
            (kl * w).sum().backward()
            stats[0] += float(w.sum())
            stats[1] += len(w)
            stats[2:] += (kl.detach() * w).sum(-1).double()
    return stats
