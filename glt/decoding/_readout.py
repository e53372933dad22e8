"""The streamed read-out: every per-layer statistic from one tiled pass over the vocabulary.

For each read position ("row") and each residual index ("layer") glt needs the rank and
log-probability of one or more target tokens, the top-k tokens, the entropy and
KL(final || layer). Materialising ``[layer, rows, d_vocab]`` logits costs gigabytes; instead the
read-out walks the vocabulary in cache-sized tiles and keeps running reductions (an online
log-sum-exp), so peak extra memory is a few ``[layer * row_chunk, vocab_tile]`` tiles per worker
thread, whatever the number of prompts. The tiled path lives in `glt.decoding._tiled` (the fused CUDA path in
`glt.decoding._fused`).

Conventions:

* rank is **0-based** and counts the tokens with a **strictly greater** logit (so the top-1 has
  rank 0 and tied tokens share the best rank); no sort is ever done;
* ranks, top-k ids and target log-probabilities are **exact**: the logits deciding them are
  evaluated in float64 (products of the float32 operands, which are exact, summed by a fixed
  tree), so tile sizes, threads and devices never change them; only tokens within the float32
  rounding bound of a target are re-evaluated (see `glt.decoding._exact`);
* the default target is the final layer's top-1, the lowest token id among the maximal logits;
  top-k lists break ties by lowest id too;
* log-sum-exp, entropy and KL accumulate float32 tiles into float64 sums;
* with a soft-capped model, ranks and top-k order use the pre-cap logits (the cap is strictly
  increasing, so the order is the same without its float32 ties);
* KL(final || layer) is 0 at the final layer by definition.
"""

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from glt.core._capture import ResidualStack
from glt.core._check import checked
from glt.core._codec import Format, Saved, tensor_fields
from glt.core._errors import GltError
from glt.core._io import atomic_write_bytes, malformed
from glt.core._meter import readout_timer
from glt.decoding._backend import chunk_stats
from glt.decoding._stats import resolve_matmul_dtype
from glt.lenses._protocol import Lens, require_resid_mid, transform_residuals

__all__ = ["Readout", "readout", "select_rows"]

_CPU_TILE = 1024  # vocabulary tile width on CPU (tile + exp buffer stay in L2/L3)
_CPU_TILE_ROWS = 640  # layer * rows per tile on CPU

#: which positions to read: every real token (None), each sequence's last real token, one
#: position per sequence (negative counts from the end), or a mask on real tokens
Positions = Literal["last"] | Int[Tensor, " batch"] | Bool[Tensor, "batch pos"] | None


@dataclass(frozen=True, eq=False)
class Readout(Saved):
    """Per-layer statistics at each read position ("row"), from `readout`.

    Attributes:
        layer_labels: one label per residual index (``embed`` ... ``final``; with a stack
            captured with ``resid_mid=True``, ``resid_mid i`` between them).
        batch_index, pos_index: ``[row]`` where each row was read in the stack.
        input_ids: ``[row]`` the token at the read position.
        targets: ``[row, target]`` the tracked token ids.
        ranks: ``[layer, row, target]`` 0-based count of strictly greater logits.
        target_logprobs: ``[layer, row, target]`` log-probability of each target.
        topk_ids, topk_logprobs: ``[layer, row, k]`` best tokens, best first.
        entropy: ``[layer, row]`` entropy of the layer's distribution, in nats.
        kl_to_final: ``[layer, row]`` KL(final || layer), in nats.
        lens: the lens's name (``logit`` or ``tuned``).

    `save` writes one safetensors file and `load` reads it back exactly.
    """

    _format: ClassVar[Format] = Format(
        "glt.Readout", "read-out", "delete it and compute it again", legacy=(("format", "glt.Readout/1"),),
        sizes={"layer": "layer_labels"})

    layer_labels: tuple[str, ...]
    batch_index: Int[Tensor, " row"]
    pos_index: Int[Tensor, " row"]
    input_ids: Int[Tensor, " row"]
    targets: Int[Tensor, "row target"]
    ranks: Int[Tensor, "layer row target"]
    target_logprobs: Float[Tensor, "layer row target"]
    topk_ids: Int[Tensor, "layer row k"]
    topk_logprobs: Float[Tensor, "layer row k"]
    entropy: Float[Tensor, "layer row"]
    kl_to_final: Float[Tensor, "layer row"]
    lens: str

    @property
    def n_rows(self) -> int:
        return int(self.targets.shape[0])

    @property
    def top1(self) -> Int[Tensor, "layer row"]:
        """The top-1 token id at every layer and row."""
        return self.topk_ids[..., 0]

    @property
    def max_prob(self) -> Float[Tensor, "layer row"]:
        """The top-1 probability at every layer and row."""
        return self.topk_logprobs[..., 0].exp()

    @staticmethod
    def concat(parts: "list[Readout]", *, batch_offsets: list[int] | None = None) -> "Readout":
        """Join read-outs over rows (``batch_offsets`` shifts each part's batch index)."""
        if not parts:
            raise GltError("concat needs at least one Readout")
        offsets = list(batch_offsets) if batch_offsets is not None else [0] * len(parts)
        if len(offsets) != len(parts):
            raise GltError(
                f"batch_offsets must give one offset per part ({len(parts)}), got {len(offsets)}"
            )
        out: dict[str, Any] = {}
        for f in fields(Readout):
            vals = [getattr(p, f.name) for p in parts]
            if f.name in ("layer_labels", "lens"):
                out[f.name] = vals[0]
            elif f.name == "batch_index":
                out[f.name] = torch.cat([v + o for v, o in zip(vals, offsets, strict=True)])
            else:
                dim = 1 if vals[0].ndim >= 2 and f.name not in ("targets",) else 0
                out[f.name] = torch.cat(vals, dim)
        return Readout(**out)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the read-out to one safetensors file, atomically; read it back with `load`.

        Every tensor is stored exactly (ranks and ids as int64, floats as float32, NaN and inf
        included); the tag, the layer labels and the lens name travel in the file's metadata.
        Nothing is pickled.
        """
        from safetensors.torch import save

        tensors = {name: getattr(self, name).detach().cpu().to(dtype).contiguous()
                   for name, dtype in tensor_fields(Readout).items()}
        meta = {**{k: str(v) for k, v in self._format.header().items()},
                "layer_labels": json.dumps(list(self.layer_labels)), "lens": self.lens}
        return atomic_write_bytes(path, save(tensors, metadata=meta), self._format.what)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Readout":
        """Read a read-out written by `save` (GltError naming the file if missing, corrupt, not a
        read-out, written by a newer glt, or with arrays whose shapes disagree)."""
        from safetensors import SafetensorError, safe_open

        path = Path(path)
        if not path.is_file():
            state = "is not a file" if path.exists() else "does not exist"
            raise GltError(f"read-out {path} {state}: check the path")
        try:
            with safe_open(str(path), "pt") as fh:
                meta = fh.metadata() or {}
                tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 (not a dict)
        except (SafetensorError, OSError, ValueError, RuntimeError) as e:
            raise GltError(f"read-out {path} is corrupted or truncated ({str(e)[:120]}): delete it "
                           "and compute it again") from e
        data: dict[str, Any] = {**tensors, **meta}
        if str(meta.get("version", "")).isdigit():  # metadata values are strings
            data["version"] = int(meta["version"])
        cls._format.check(data, path)
        with malformed(path, "read-out", "delete it and compute it again"):
            data["layer_labels"] = json.loads(meta["layer_labels"])
        return cls.from_json(data, source=path)

    def to_dataframe(self) -> Any:
        """Long table: one row per (layer, row, target) with rank, logprob, entropy and KL."""
        import pandas as pd

        n_layer, n_row, n_t = self.ranks.shape
        layer = torch.arange(n_layer).view(-1, 1, 1).expand(n_layer, n_row, n_t)
        row = torch.arange(n_row).view(1, -1, 1).expand(n_layer, n_row, n_t)
        tgt = torch.arange(n_t).view(1, 1, -1).expand(n_layer, n_row, n_t)

        def per_row(v: Tensor) -> Any:
            return v.cpu().unsqueeze(-1).expand(n_layer, n_row, n_t).reshape(-1).numpy()

        return pd.DataFrame(
            {
                "layer": layer.reshape(-1).numpy(),
                "layer_label": [self.layer_labels[i] for i in layer.reshape(-1).tolist()],
                "row": row.reshape(-1).numpy(),
                "batch": self.batch_index[row.reshape(-1)].cpu().numpy(),
                "pos": self.pos_index[row.reshape(-1)].cpu().numpy(),
                "target_slot": tgt.reshape(-1).numpy(),
                "target": self.targets.cpu()[row.reshape(-1), tgt.reshape(-1)].numpy(),
                "rank": self.ranks.reshape(-1).cpu().numpy(),
                "logprob": self.target_logprobs.reshape(-1).cpu().numpy(),
                "top1": per_row(self.top1),
                "entropy": per_row(self.entropy),
                "kl_to_final": per_row(self.kl_to_final),
            }
        )


def select_rows(
    stack: ResidualStack, positions: Positions = None
) -> tuple[Int[Tensor, " row"], Int[Tensor, " row"]]:
    """Resolve ``positions`` into ``(batch_index, pos_index)`` rows, in row-major order.

    ``positions`` is None (every real token), ``"last"`` (each sequence's last real token), an
    integer tensor ``[batch]`` (one position per sequence; negative counts from the sequence end)
    or a boolean tensor ``[batch, pos]`` (True where to read; must lie on real tokens).
    """
    mask = stack.mask
    if positions is None:
        b, p = mask.nonzero(as_tuple=True)
        return b, p
    if isinstance(positions, str):
        if positions != "last":
            raise GltError(f"positions must be None, 'last' or a tensor, got {positions!r}")
        b = torch.arange(mask.shape[0], device=mask.device)
        return b, stack.lengths - 1
    if not isinstance(positions, Tensor):
        positions = torch.as_tensor(positions)
    positions = positions.to(mask.device)
    if positions.dtype == torch.bool:
        if tuple(positions.shape) != tuple(mask.shape):
            raise GltError(
                f"a boolean positions mask must be [batch, pos]={tuple(mask.shape)}, got "
                f"{tuple(positions.shape)}"
            )
        if bool((positions & ~mask).any()):
            raise GltError("positions selects padding: select only positions where stack.mask is True")
        b, p = positions.nonzero(as_tuple=True)
        return b, p
    if positions.ndim != 1 or positions.shape[0] != mask.shape[0]:
        raise GltError(
            f"integer positions must be [batch]={mask.shape[0]} (one per sequence), got "
            f"{tuple(positions.shape)}"
        )
    lengths = stack.lengths
    pos = torch.where(positions < 0, positions + lengths, positions)
    if bool(((pos < 0) | (pos >= lengths)).any()):
        raise GltError(f"positions {positions.tolist()} fall outside the sequence lengths {lengths.tolist()}")
    return torch.arange(mask.shape[0], device=mask.device), pos.long()


def _validate_targets(targets: Any, n_rows: int, d_vocab: int, device: Any) -> Tensor | None:
    if targets is None:
        return None
    t = torch.as_tensor(targets, device=device)
    if t.dtype.is_floating_point or t.dtype == torch.bool:
        raise GltError(f"targets must be integer token ids, got dtype {t.dtype}")
    if t.ndim == 1:
        t = t[:, None]
    if t.ndim != 2 or t.shape[0] != n_rows:
        raise GltError(
            f"targets must be [row] or [row, target] with row={n_rows} (one per read position), "
            f"got shape {tuple(t.shape)}"
        )
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= d_vocab):
        raise GltError(
            f"targets must be token ids in [0, {d_vocab}), got values in [{int(t.min())}, "
            f"{int(t.max())}]: check the tokenizer matches the model"
        )
    return t.long()


def _positive(name: str, value: Any) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise GltError(f"{name} must be a positive int or None (automatic), got {value!r}")
    return value


@contextmanager
def _ieee_fp32() -> Iterator[None]:
    """Float32 matmuls in full IEEE precision inside the block: no TF32, and no reduced-precision
    (16-bit) reductions in half-precision GEMMs, either of which would break the error bound."""
    prec = torch.get_float32_matmul_precision()
    cu = torch.backends.cuda.matmul
    flags = {f: getattr(cu, f) for f in ("allow_bf16_reduced_precision_reduction",
                                         "allow_fp16_reduced_precision_reduction")}
    if prec != "highest":
        torch.set_float32_matmul_precision("highest")
    for f in flags:
        setattr(cu, f, False)
    try:
        yield
    finally:
        if prec != "highest":
            torch.set_float32_matmul_precision(prec)
        for f, v in flags.items():
            setattr(cu, f, v)


@checked
def readout(
    stack: ResidualStack,
    lens: Lens,
    *,
    targets: Int[Tensor, "row ..."] | None = None,
    top_k: int = 5,
    positions: Positions = None,
    row_chunk: int | None = None,
    vocab_tile: int | None = None,
    matmul_dtype: torch.dtype | None = None,
    threads: int | None = None,
) -> Readout:
    """Decode every layer of ``stack`` with ``lens`` and reduce to per-layer statistics.

    Args:
        stack: residuals from `glt.capture_residuals` or `glt.ResidualStack.from_cache`; a stack
            captured with ``resid_mid=True`` also decodes each block's mid residual (its
            ``resid_mid i`` layers), with a lens that reads them (the logit lens).
        lens: a `glt.Lens` for the same model (`glt.LogitLens`, `glt.TunedLens`); a lens without
            ``resid_mid`` translators (tuned, Jacobian) raises GltError on a ``resid_mid`` stack.
        targets: token ids to rank, ``[row]`` or ``[row, target]`` (several per row, such as the
            options of a multiple-choice question); default: the final layer's top-1.
        top_k: how many best tokens to keep per layer and row.
        positions: which positions to read (see `select_rows`); default every real token.
        row_chunk, vocab_tile: rows per chunk and vocabulary tile width (memory is a few
            ``[layer * row_chunk, vocab_tile]`` float32 tiles per worker); defaults suit the
            device. Results do not depend on them (ranks and ids exactly, floats to ~1e-6).
        matmul_dtype: operand precision of the tile matmul: float32 (default, the float32
            read-out), or bfloat16 / float16, which defines the logits by operands rounded to
            that dtype (what a half-precision model computes itself) and accumulates in float32.
            Ranks are exact for the chosen operands either way.
        threads: CPU worker threads, which pull vocabulary tiles from one queue and run
            single-threaded torch ops (default: ``torch.get_num_threads()``); ignored on CUDA.

    Returns:
        A frozen `Readout`.

    Example:
        >>> # r = glt.readout(stack, glt.LogitLens.from_model(model), positions="last")
        >>> # r.ranks.shape -> (n_layers + 1, batch, 1); by hand, a 3-token identity unembedding:
        >>> from glt.lenses._logit import LogitLens, Unembed
        >>> lens = LogitLens(Unembed(torch.nn.Identity(), torch.eye(3), None), n_layers=1)
        >>> resid = torch.tensor([1.0, 2.0, 0.0, 0.0, 0.0, 5.0]).view(2, 1, 1, 3)
        >>> stack = ResidualStack(resid, torch.zeros(1, 1, dtype=torch.long),
        ...                       torch.ones(1, 1, dtype=torch.bool), ("embed", "final"))
        >>> r = readout(stack, lens, top_k=2)
        >>> r.targets.tolist(), r.ranks[:, 0, 0].tolist(), r.topk_ids[0, 0].tolist()
        ([[2]], [2, 0], [1, 0])
    """
    if not isinstance(stack, ResidualStack):
        raise GltError(f"stack must be a glt.ResidualStack, got {type(stack).__name__}")
    if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
        raise GltError(f"top_k must be an int >= 1, got {top_k!r}")
    row_chunk = _positive("row_chunk", row_chunk)
    vocab_tile = _positive("vocab_tile", vocab_tile)
    threads = _positive("threads", threads)
    mm_dtype = resolve_matmul_dtype(matmul_dtype)
    sites = stack.sites
    lens.check_compatible(stack.n_layers + 1, stack.resid.shape[-1])
    if stack.has_resid_mid:
        require_resid_mid(lens)
    unembed = lens.unembed
    b_idx, p_idx = select_rows(stack, positions)
    n_rows = int(b_idx.shape[0])
    tgt = _validate_targets(targets, n_rows, unembed.d_vocab, stack.resid.device)
    n_layer = stack.resid.shape[0]
    cuda = stack.resid.device.type == "cuda"
    tile = vocab_tile or (16384 if cuda else _CPU_TILE)
    chunk = row_chunk or max(1, (16384 if cuda else _CPU_TILE_ROWS) // n_layer)
    workers = 1 if cuda else (threads or torch.get_num_threads())
    parts: dict[str, list[Tensor]] = {}
    with readout_timer() as count_rows, torch.no_grad(), _ieee_fp32():
        count_rows(n_rows)
        for r0 in range(0, n_rows, chunk):
            bi, pi = b_idx[r0 : r0 + chunk], p_idx[r0 : r0 + chunk]
            h = stack.resid[:, bi, pi].float()
            x = unembed.normalize(transform_residuals(lens, h, sites)).float()
            t = None if tgt is None else tgt[r0 : r0 + chunk]
            out = chunk_stats(unembed, x, t, top_k, tile=min(tile, unembed.d_vocab),
                              matmul_dtype=mm_dtype, workers=workers)
            for key, val in out.items():
                parts.setdefault(key, []).append(val)
    k = min(top_k, unembed.d_vocab)
    n_t = tgt.shape[1] if tgt is not None else 1
    dev = stack.resid.device

    def cat(key: str, shape: tuple[int, ...], dtype: torch.dtype, dim: int = 1) -> Tensor:
        if parts.get(key):
            return torch.cat(parts[key], dim)
        return torch.zeros(shape, dtype=dtype, device=dev)

    return Readout(
        layer_labels=stack.labels,
        batch_index=b_idx,
        pos_index=p_idx,
        input_ids=stack.tokens[b_idx, p_idx],
        targets=cat("targets", (0, n_t), torch.long, 0),
        ranks=cat("ranks", (n_layer, 0, n_t), torch.long),
        target_logprobs=cat("target_logprobs", (n_layer, 0, n_t), torch.float32),
        topk_ids=cat("topk_ids", (n_layer, 0, k), torch.long),
        topk_logprobs=cat("topk_logprobs", (n_layer, 0, k), torch.float32),
        entropy=cat("entropy", (n_layer, 0), torch.float32),
        kl_to_final=cat("kl_to_final", (n_layer, 0), torch.float32),
        lens=lens.name,
    )
