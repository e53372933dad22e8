"""A lens for any model in one call: a least-squares lens fitted on the spot and cached.

When no tuned lens ships for a model, `least_squares_lens` fits one in closed form
(`glt.fit_least_squares`: forward passes only, no vocabulary-sized work) on the offline
Wikipedia sample's train split (the studies read the held-out split), saves it in glt's cache
(``glt.cache_dir() / "lenses" / "least_squares" / <key>``) and loads it from there next time.

The cache key hashes the model's name, its unembedding fingerprint (the one every lens folder
carries, `glt.Unembed.fingerprint`), its sizes and the fit settings, so another model, another
checkpoint with a different unembedding or other settings never reuses an entry. An entry is
written atomically (`glt.TunedLens.save`); one that does not load, or whose recorded key
differs, is refitted with a message and replaced, never used.

Messages go to ``log`` (stderr by default): that a lens is being fitted or reused, where it is
cached, and how long a KL-trained lens (``glt lens train``, better by 0.03-0.85 nats of held-out
KL per layer on the default model) would take on this machine. That estimate comes from rates
measured on the spot, right after the fit: one timed forward pass over a batch of the fit's
sequences (seconds per position), and one timed tiled KL(final || lens) forward and backward
over every layer for `KL_PROBE_ROWS` positions, which is what a training step does per
position. The estimate adds the line search's validation passes (three forward-only KL
evaluations of ``val_rows`` positions per step, counted as half a forward/backward each) and
the least-squares start, using the default sizes of `glt.train_tuned_lens` (`glt.TrainConfig`).

Example:
    >>> # lens = least_squares_lens(glt.load_model("smollm2-135m"))  # ~2 min the first time
    >>> # lens.name, lens.origin["reused"]
    >>> # ('least_squares', False)
"""

import datetime
import hashlib
import json
import re
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from glt.core._assets import shipped_key
from glt.core._capture import iter_residuals
from glt.core._check import checked
from glt.core._errors import GltError
from glt.core._models import cache_dir, model_name
from glt.data._wikipedia import WIKI_SOURCE, wikipedia_paragraphs
from glt.lenses._logit import Unembed
from glt.lenses._tuned import TunedLens, _fill, load_lens
from glt.lenses.fit._config import TrainConfig
from glt.lenses.fit._data import plan_sequences, read_rows
from glt.lenses.fit._least_squares import fit_least_squares
from glt.lenses.fit._loss import tiled_kl_ce

__all__ = ["KL_PROBE_ROWS", "LeastSquaresLens", "least_squares_key", "least_squares_lens", "measure_kl_rate"]

#: Positions of the timed KL forward/backward behind the ``glt lens train`` estimate.
KL_PROBE_ROWS = 32
_FORMAT = 1


class LeastSquaresLens(TunedLens):
    """A `glt.TunedLens` whose translators are a least-squares fit; read-outs name it ``least_squares``.

    ``origin`` says where it came from: the cache folder, whether this call reused it, and the
    fit's record (also in ``config["on_the_spot"]``).
    """

    name = "least_squares"

    def __init__(self, unembed: Any, n_layers: int, config: dict[str, Any] | None = None) -> None:
        super().__init__(unembed, n_layers, config)
        self.origin: dict[str, Any] = {}


def _settings(max_tokens: int, ridge: float, seq_len: int, seed: int) -> dict[str, Any]:
    return {"max_tokens": max_tokens, "ridge": ridge, "seq_len": seq_len, "seed": seed,
            "data": f"{WIKI_SOURCE} train split", "format": _FORMAT}


@checked
def least_squares_key(model: Any, settings: dict[str, Any]) -> str:
    """The cache folder name for ``model`` and fit ``settings``: a readable model name and a hash
    of the name, unembedding fingerprint, sizes and settings."""
    unembed = Unembed.from_model(model)
    ident = {"model": model_name(model), "unembed_hash": unembed.fingerprint(),
             "n_layers": int(model.cfg.n_layers), "d_model": unembed.d_model, "d_vocab": unembed.d_vocab,
             **settings}
    digest = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", model_name(model))[:48].strip("._") or "model"
    return f"{readable}-{digest}"


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _as_ls(lens: TunedLens, where: Path) -> LeastSquaresLens:
    out = _fill(LeastSquaresLens(lens.unembed, lens.n_layers, dict(lens.config)), lens.weight.detach(),
                lens.bias.detach(), where)
    if lens.mid_weight is not None and lens.mid_bias is not None:
        out.set_mid_translators(lens.mid_weight, lens.mid_bias, source=str(where))
    return out  # type: ignore[return-value]


def _load_cached(folder: Path, model: Any, key: str, log: Callable[[str], None],
                 resid_mid: bool = False) -> LeastSquaresLens | None:
    if not folder.exists():
        return None
    try:
        lens = load_lens(folder, model)
    except GltError as e:
        log(f"glt: the cached least-squares lens {folder} is unusable ({e}); fitting it again")
        return None
    spot = lens.config.get("on_the_spot")
    if not isinstance(spot, dict) or spot.get("cache_key") != key:
        got = spot.get("cache_key") if isinstance(spot, dict) else None
        log(f"glt: the cached least-squares lens {folder} records cache key {got!r}, not {key!r}; "
            "fitting it again")
        return None
    if resid_mid and not lens.reads_resid_mid:
        log(f"glt: the cached least-squares lens {folder} has no resid_mid translators (it was fitted before a "
            "read-out inside the blocks asked for them); fitting it again with them")
        return None
    return _as_ls(lens, folder)


@checked
def measure_kl_rate(model: Any, lens: TunedLens, seqs: list[list[int]], bos: int, *,
                    batch_size: int = 8, rows: int = KL_PROBE_ROWS) -> dict[str, float]:
    """Seconds per position of a forward pass and of a tiled KL forward/backward over every layer.

    One timed forward pass over the first ``batch_size`` sequences, then one timed KL(final ||
    lens) forward and backward (gradient with respect to the residuals only, so no parameter
    gradient is touched) over ``rows`` of its read positions at every translator.
    """
    t0 = time.perf_counter()
    stack = next(iter(iter_residuals(model, seqs[:batch_size], batch_size=batch_size)))
    forward_s = time.perf_counter() - t0
    b, p = read_rows(stack.tokens, stack.mask, bos)
    if len(b) == 0:
        raise GltError("the timing batch holds no read positions: pass longer texts")
    n = min(rows, len(b))
    h = stack.resid[:, b[:n], p[:n]].detach().clone().float().requires_grad_(True)
    t1 = time.perf_counter()
    x = lens.unembed.normalize(lens.transform_stack(h)[:-1])
    kl, _ = tiled_kl_ce(lens.unembed, x, lens.unembed.normalize(h[-1].detach()))
    torch.autograd.grad(kl.sum(), h)
    kl_s = time.perf_counter() - t1
    return {"forward_s_per_position": forward_s / len(b), "kl_s_per_position": kl_s / n,
            "forward_positions": int(len(b)), "kl_positions": n, "torch_threads": torch.get_num_threads()}


def _train_estimate(rate: dict[str, float], fit_s: float, fit_tokens: int) -> dict[str, Any]:
    """Seconds `glt lens train` with its defaults would take at the measured rates."""
    d = TrainConfig()
    fwd, kl = rate["forward_s_per_position"], rate["kl_s_per_position"]
    per_position = fwd + kl * (1 + 1.5 * d.val_rows / d.tokens_per_step)
    seconds = fit_s * d.least_squares_tokens / max(fit_tokens, 1) + d.max_tokens * per_position
    return {"positions": d.max_tokens, "positions_per_second": 1.0 / per_position,
            "seconds": seconds, "least_squares_tokens": d.least_squares_tokens,
            "tokens_per_step": d.tokens_per_step, "val_rows": d.val_rows}


def _advice(lens: LeastSquaresLens, model_arg: str) -> str:
    if shipped_key(model_arg) is not None:  # the default model and SmolLM2-135M have one already
        return (f"glt: a KL-trained tuned lens ships for {model_arg!r} and fits better: pass --lens tuned, or "
                f"glt.load_lens({model_arg!r}, model) in Python")
    spot = lens.config["on_the_spot"]
    est, rate = spot["kl_training_estimate"], spot["rates"]
    return (f"glt: a KL-trained lens fits better (on the default model by 0.03-0.85 nats of held-out KL "
            f"per layer): `glt lens train --model {model_arg} --corpus wikipedia-train --heldout-corpus "
            f"wikipedia-heldout --out LENS` ({est['positions']:,} positions) would take about "
            f"{_duration(est['seconds'])} on this machine ({est['positions_per_second']:.1f} positions/s "
            f"measured with {rate['torch_threads']} threads: a forward pass, "
            f"{1e3 * rate['forward_s_per_position']:.1f} ms per position, and a KL forward/backward over "
            f"every layer, {1e3 * rate['kl_s_per_position']:.0f} ms per position); then pass "
            "--lens tuned --lens-path LENS")


@checked
def least_squares_lens(
    model: Any,
    *,
    max_tokens: int = 16_384,
    ridge: float = 1e-4,
    seq_len: int = 256,
    batch_size: int = 8,
    seed: int = 0,
    cache: bool = True,
    resid_mid: bool = False,
    model_arg: str | None = None,
    log: Callable[[str], None] | None = None,
    progress: bool = True,
) -> LeastSquaresLens:
    """A least-squares lens for ``model``: from glt's cache, or fitted now and cached.

    Args:
        model: the TransformerLens model.
        max_tokens: read positions of the fit (sequences of the train split, shuffled with
            ``seed``); 16,384 (the default start of `glt.train_tuned_lens`) takes ~2 min on a
            2-core CPU for the default model.
        ridge, seq_len, batch_size: as in `glt.fit_least_squares`.
        seed: order of the training sequences.
        cache: read and write the cache (False: always fit, never save).
        resid_mid: the lens must also read each block's mid residual (`glt.sublayer_split`):
            fit those translators too (`glt.fit_least_squares`). The cache entry is the same
            either way (the block-boundary translators do not change); an entry without them is
            refitted with them when they are asked for, and one with them serves both.
        model_arg: how the user named the model, for the ``glt lens train`` command in the
            messages (default the model's name).
        log: where messages go (default: a line each on stderr).
        progress: show the fit's progress bar.

    Returns:
        A `LeastSquaresLens` (a `glt.TunedLens` named ``least_squares``); ``lens.origin`` holds
        the cache folder, whether it was reused, and the fit's record.
    """
    log = log or _stderr
    for name, val in (("max_tokens", max_tokens), ("seq_len", seq_len), ("batch_size", batch_size)):
        if isinstance(val, bool) or not isinstance(val, int) or val < 2:
            raise GltError(f"{name} must be an int >= 2, got {val!r}")
    settings = _settings(max_tokens, float(ridge), seq_len, seed)
    key = least_squares_key(model, settings)
    folder = cache_dir() / "lenses" / "least_squares" / key
    arg = model_arg or model_name(model)
    cached = _load_cached(folder, model, key, log, resid_mid) if cache else None
    if cached is not None:
        spot = cached.config["on_the_spot"]
        cached.origin = {"folder": str(folder), "reused": True, **spot}
        log(f"glt: using the least-squares lens cached for {model_name(model)} at {folder} (fitted "
            f"{spot['fitted_at']} in {_duration(spot['fit_seconds'])} on {spot['positions']:,} positions)")
        log(_advice(cached, arg))
        return cached
    log(f"glt: fitting a least-squares lens for {model_name(model)} on the spot ({max_tokens:,} positions of "
        "the offline Wikipedia sample, train split; forward passes only, minutes on a CPU)")
    with warnings.catch_warnings():  # texts longer than the context are cut to seq_len pieces anyway
        warnings.filterwarnings("ignore", message=".*truncated from")
        seqs, bos = plan_sequences(model, wikipedia_paragraphs("train"), seq_len=seq_len)
    order = torch.randperm(len(seqs), generator=torch.Generator().manual_seed(seed)).tolist()
    seqs = [seqs[i] for i in order]
    lens = LeastSquaresLens.from_model(model)
    t0, cpu0 = time.perf_counter(), time.process_time()
    fit_least_squares(model, seqs, lens=lens, max_tokens=max_tokens, ridge=ridge, seq_len=seq_len,
                      batch_size=batch_size, resid_mid=resid_mid, progress=progress)
    fit_s, fit_cpu = time.perf_counter() - t0, time.process_time() - cpu0
    positions = int(lens.config["least_squares"]["tokens"])
    rate = measure_kl_rate(model, lens, seqs, bos, batch_size=batch_size)
    spot = {"cache_key": key, "settings": settings, "fit_seconds": fit_s, "fit_cpu_seconds": fit_cpu,
            "positions": positions,
            "fit_positions_per_second": positions / fit_s if fit_s > 0 else float("nan"),
            "fitted_at": datetime.datetime.now().isoformat(timespec="seconds"), "rates": rate,
            "kl_training_estimate": _train_estimate(rate, fit_s, positions)}
    lens.config.update({"data": settings["data"], "on_the_spot": spot})
    lens.origin = {"folder": str(folder) if cache else None, "reused": False, **spot}
    where = "not cached (cache=False)"
    if cache:
        try:
            lens.save(folder)
            where = f"cached at {folder} (reused next time)"
        except OSError as e:
            lens.origin["folder"] = None
            where = f"not cached: {folder} could not be written ({e})"
    log(f"glt: least-squares lens fitted in {_duration(fit_s)} ({positions / max(fit_s, 1e-9):,.0f} "
        f"positions/s), {where}")
    log(_advice(lens, arg))
    return lens
