"""The layer explorer: an interactive, self-contained HTML view of read-outs of one text.

A layer x position grid of the top-1 token per cell, coloured by a chosen statistic (top-1
probability, rank or probability of a target token, entropy, KL to the final layer); hovering a
cell shows its top-k with probabilities, the targets' ranks and log-probabilities, the entropy and
the KL; clicking a position draws that position's trajectory over depth (rank on a log scale, and
probability) for the final top-1 and any token picked or typed. Several lenses are switchable or
stacked on one page. It displays itself in Jupyter and VS Code notebooks (`Explorer._repr_html_`),
saves as one HTML file (`Explorer.save`) and is embedded in ``glt study``'s ``report.html``.

Offline and safe: the page script and styles are glt's own (``glt/plotting/explorer.js`` and
``explorer.css``, inlined; no CDN, no server, no network). Every string travels as JSON inside
``<script type="application/json">`` with ``<``, ``>`` and ``&`` written as ``\\u003c``,
``\\u003e`` and ``\\u0026``, and the page builds its DOM with ``textContent`` only, so a text
holding ``<script>`` shows as text.

Size-aware: per lens, layer and position only the top-k token ids and log-probabilities are kept
(log-probabilities quantised to 0.001 nats, floored at -32.768), with the entropy, the KL and the
exact rank and log-probability of each tracked target (the final top-1 by default) as float32 /
int32; arrays travel base64-encoded and token strings once each. A typed token that is neither a
target nor in a cell's top-k has no stored rank there (the trajectory shows a gap). Long texts are
paged (64 positions a page by default), so a 1,000-token text draws as fast as a 64-token one.

Conventions: layer ``i`` is residual index ``i`` (0 = the embeddings, labelled with the read-out's
``layer_labels``; the last is the final layer, always shown). Ranks are 0-based in the read-out and
shown 1-based (1 = top) in the page. Token strings show a space as ``␣``, newline, tab and carriage
return as ``\\n``, ``\\t``, ``\\r``, other invisible characters as ``U+XXXX`` and an empty string as ``∅``.
"""

import base64
import html
import json
import os
import unicodedata
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from glt.core._assets import shipped_lens_dir
from glt.core._capture import capture_residuals, model_tokenizer
from glt.core._check import checked
from glt.core._errors import GltError
from glt.core._io import atomic_write_text
from glt.core._models import model_name
from glt.decoding._readout import Readout, readout
from glt.lenses._logit import LogitLens
from glt.lenses._tuned import load_lens
from glt.plotting._curves import _decoder
from glt.plotting._style import as_numpy

__all__ = ["Explorer", "explore", "visible_token"]

Stat = Literal["prob", "target_rank", "target_prob", "entropy", "kl"]
_STAT_KEYS = {"prob": "prob", "target_rank": "trank", "target_prob": "tprob", "entropy": "entropy", "kl": "kl"}
_LP_SCALE, _LP_FLOOR = 1000, -32768
_PAGE = 64
_INVISIBLE = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs"}


def visible_token(s: str) -> str:
    r"""A token string as the explorer shows it: whitespace and invisible characters made visible.

    Example:
        >>> visible_token(" Paris\n"), visible_token(""), visible_token("a\u200bb")
        ('␣Paris\\n', '∅', 'aU+200Bb')
    """
    if s == "":
        return "\u2205"
    s = s.replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r").replace(" ", "\u2423")
    return "".join(f"U+{ord(c):04X}" if unicodedata.category(c) in _INVISIBLE else c for c in s)


def _b64(a: Any, dtype: str) -> str:
    return base64.b64encode(np.ascontiguousarray(a, dtype=dtype).tobytes()).decode("ascii")


def _script_json(obj: Any) -> str:
    """JSON safe inside ``<script type="application/json">``: no ``<``, ``>`` or ``&`` survives."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def _asset(name: str) -> str:
    return resources.files("glt.plotting").joinpath(name).read_text("utf-8")


def _named(readouts: Any) -> dict[str, Readout]:
    if isinstance(readouts, Readout):
        return {readouts.lens: readouts}
    if isinstance(readouts, Mapping):
        named = {str(k): v for k, v in readouts.items()}
    elif isinstance(readouts, Sequence) and not isinstance(readouts, str):
        named = {}
        for i, r in enumerate(readouts):
            name = getattr(r, "lens", f"lens {i}")
            if name in named:
                raise GltError(f"readouts[{i}] and an earlier read-out are both named {name!r}: pass a dict "
                               "{name: readout} to name them apart")
            named[name] = r
    else:
        raise GltError(f"readouts must be a glt.Readout, a dict {{name: Readout}} or a list of them, got "
                       f"{type(readouts).__name__}")
    if not named:
        raise GltError("readouts is empty: pass at least one glt.Readout")
    for name, r in named.items():
        if not isinstance(r, Readout):
            raise GltError(f"readouts[{name!r}] must be a glt.Readout, got {type(r).__name__}")
    return named


def _rows(r: Readout, name: str, batch: int) -> np.ndarray:
    b = as_numpy(r.batch_index)
    rows = np.nonzero(b == batch)[0]
    if rows.size == 0:
        raise GltError(f"batch {batch} is not in read-out {name!r} (batches {sorted(set(b.tolist()))}): pass one "
                       "of those as batch")
    return rows[np.argsort(as_numpy(r.pos_index)[rows], kind="stable")]


def _target_names(r: Readout, rows: np.ndarray, visible: Callable[[int], str]) -> tuple[list[str], int]:
    """A name per target slot ("final top-1", the token when one token for every row, else "target j")
    and the slot tracking the final top-1 exactly (-1 if none)."""
    tgt = as_numpy(r.targets)[rows]
    final = as_numpy(r.top1)[-1, rows]
    names, final_slot = [], -1
    for j in range(tgt.shape[1]):
        if np.array_equal(tgt[:, j], final):
            names.append("final top-1")
            final_slot = final_slot if final_slot >= 0 else j
        elif len(rows) and (tgt[:, j] == tgt[0, j]).all():
            names.append(visible(int(tgt[0, j])))
        else:
            names.append(f"target {j + 1}")
    return names, final_slot


@dataclass(frozen=True, eq=False)
class Explorer:
    """The layer explorer of one text: show it in a notebook, `save` it, or embed `to_html`.

    Build one with `glt.explore` (from a model and a text) or `Explorer.from_readouts` (from
    read-outs you have). ``data`` is the JSON-able payload the page draws from (see the module
    docstring for what it keeps).

    Attributes:
        data: the JSON-able payload the page draws from: layer labels, token strings, and per
            lens and cell the top-k ids and probabilities, target ranks and log-probabilities,
            entropy and KL to the final layer.

    Example:
        >>> # ex = glt.explore(model, "The capital of France is", lenses=["logit", "tuned"])
        >>> # ex            # a notebook cell displays it; ex.save("explorer.html") writes one file
        >>> # by hand: a 3-token identity unembedding, one position, embeddings + final layer
        >>> from glt.core._capture import ResidualStack
        >>> from glt.lenses._logit import LogitLens, Unembed
        >>> lens = LogitLens(Unembed(torch.nn.Identity(), torch.eye(3), None), n_layers=1)
        >>> resid = torch.tensor([1.0, 2.0, 0.0, 0.0, 0.0, 5.0]).view(2, 1, 1, 3)
        >>> stack = ResidualStack(resid, torch.zeros(1, 1, dtype=torch.long),
        ...                       torch.ones(1, 1, dtype=torch.bool), ("embed", "final"))
        >>> ex = Explorer.from_readouts(readout(stack, lens, top_k=2), tokenizer=lambda i: " abc"[i])
        >>> ex.n_layers, ex.n_positions, ex.lenses, ex.data["strings"]
        (2, 1, ('logit',), ['␣', 'a', 'b'])
        >>> ex.to_html().startswith("<!DOCTYPE html>")
        True
    """

    data: dict[str, Any]

    @property
    def n_layers(self) -> int:
        """Rows of the grid: residual indices 0 (embeddings) ... final."""
        return len(self.data["layers"])

    @property
    def n_positions(self) -> int:
        """Columns of the grid: the read positions of the text."""
        return len(self.data["positions"])

    @property
    def lenses(self) -> tuple[str, ...]:
        return tuple(v["name"] for v in self.data["lenses"])

    @classmethod
    @checked
    def from_readouts(
        cls,
        readouts: Any,
        *,
        tokenizer: Any = None,
        batch: int = 0,
        title: str | None = None,
        color: Stat = "prob",
    ) -> "Explorer":
        """An explorer of read-outs of one text, one grid per lens.

        Args:
            readouts: a `glt.Readout`, a dict ``{name: Readout}`` or a list of read-outs (named by
                their ``lens``); every one read at the same positions of the same text.
            tokenizer: decodes token ids (the model's ``tokenizer``, or a callable id -> str);
                without one the page shows ids.
            batch: which text of the read-outs to show (their ``batch_index``).
            title: the page's title (shown as text); default names the lenses.
            color: the colour statistic shown first: ``"prob"`` (top-1 probability),
                ``"target_rank"``, ``"target_prob"`` (of the first target, by default the final
                top-1), ``"entropy"`` or ``"kl"`` (KL(final || layer)); the page can switch.

        Returns:
            An `Explorer` with ``n_layers`` rows and ``n_positions`` columns.
        """
        named = _named(readouts)
        if color not in _STAT_KEYS:
            raise GltError(f"color must be one of {sorted(_STAT_KEYS)}, got {color!r}")
        decode = _decoder(tokenizer)
        first_name, first = next(iter(named.items()))
        rows = {name: _rows(r, name, batch) for name, r in named.items()}
        pos = as_numpy(first.pos_index)[rows[first_name]]
        ids = as_numpy(first.input_ids)[rows[first_name]]
        k = min(int(r.topk_ids.shape[-1]) for r in named.values())
        for name, r in named.items():
            if len(r.layer_labels) != len(first.layer_labels):
                raise GltError(f"read-out {name!r} has {len(r.layer_labels)} layers but {first_name!r} has "
                               f"{len(first.layer_labels)}: pass read-outs of the same model")
            if not (np.array_equal(as_numpy(r.pos_index)[rows[name]], pos)
                    and np.array_equal(as_numpy(r.input_ids)[rows[name]], ids)):
                raise GltError(f"read-out {name!r} was read at other positions or tokens of batch {batch} than "
                               f"{first_name!r}: pass read-outs of the same text at the same positions")
        if k < 1 or len(pos) == 0:
            raise GltError("the read-outs hold no top-k tokens or no positions: read with top_k >= 1 at >= 1 position")
        used = [ids] + [as_numpy(r.topk_ids)[:, rows[n], :k].ravel() for n, r in named.items()]
        used += [as_numpy(r.targets)[rows[n]].ravel() for n, r in named.items()]
        vocab = np.unique(np.concatenate([u.astype(np.int64) for u in used]))
        strings = [visible_token(decode(int(i))) for i in vocab]
        idw = 2 if len(vocab) < 2**16 else 4
        dt = "<u2" if idw == 2 else "<u4"

        def local(a: Any) -> np.ndarray:
            return np.searchsorted(vocab, np.asarray(a, dtype=np.int64))

        lenses = []
        for name, r in named.items():
            rw = rows[name]
            lp = as_numpy(r.topk_logprobs)[:, rw, :k].astype(np.float64)
            lp = np.clip(np.nan_to_num(np.round(lp * _LP_SCALE), nan=_LP_FLOOR, neginf=_LP_FLOOR), _LP_FLOOR, 0)
            names, final_slot = _target_names(r, rw, lambda i: visible_token(decode(i)))
            lenses.append({
                "name": name, "t": len(names), "tnames": names, "final": final_slot,
                "top": _b64(local(as_numpy(r.topk_ids)[:, rw, :k]), dt), "lp": _b64(lp, "<i2"),
                "ent": _b64(as_numpy(r.entropy)[:, rw], "<f4"), "kl": _b64(as_numpy(r.kl_to_final)[:, rw], "<f4"),
                "tgt": _b64(local(as_numpy(r.targets)[rw]), dt), "rank": _b64(as_numpy(r.ranks)[:, rw], "<i4"),
                "tlp": _b64(as_numpy(r.target_logprobs)[:, rw], "<f4"),
            })
        data = {"v": 1, "title": title if title is not None else "Layer explorer: " + ", ".join(named) + " lens",
                "layers": list(first.layer_labels), "positions": [int(p) for p in pos], "k": k,
                "stat": _STAT_KEYS[color], "page": _PAGE, "idw": idw, "strings": strings,
                "sid": _b64(vocab, "<i4"), "input": _b64(local(ids), dt), "lenses": lenses}
        return cls(data)

    def to_html(self, *, standalone: bool = True) -> str:
        """The explorer as HTML: a whole page (``standalone``) or a fragment to embed in a page.

        Both are self-contained (inline script and styles, no network); several fragments can
        share a page.
        """
        uid = "glt-x-" + uuid.uuid4().hex[:12]
        js = _asset("explorer.js").strip()
        fragment = (
            f'<div class="glt-x" data-glt-explorer="{uid}"><style>{_asset("explorer.css")}</style>'
            '<p class="glt-x-nojs">The layer explorer needs JavaScript: in Jupyter trust the notebook, or open '
            'the file saved by Explorer.save in a browser.</p>'
            f'<script type="application/json" class="glt-x-data">{_script_json(self.data)}</script>'
            f"<script>{js}((function(){{var s=document.currentScript;return (s&&s.closest&&"
            f"s.closest('[data-glt-explorer=\"{uid}\"]'))||document.querySelector('[data-glt-explorer=\"{uid}\"]');"
            "})());</script></div>"
        )
        if not standalone:
            return fragment
        return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(self.data["title"])}'
                f'</title><meta name="viewport" content="width=device-width, initial-scale=1"></head><body>{fragment}'
                "</body></html>")

    def _repr_html_(self) -> str:
        return self.to_html(standalone=False)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the explorer as one self-contained HTML file, atomically; open it in any browser."""
        return atomic_write_text(path, self.to_html())


def _lenses(model: Any, lenses: Any) -> dict[str, Any]:
    if isinstance(lenses, Mapping):
        items = list(lenses.items())
    elif isinstance(lenses, str) or not isinstance(lenses, Sequence):
        items = [(None, lenses)]
    else:
        items = [(None, x) for x in lenses]
    out: dict[str, Any] = {}
    for key, lens in items:
        if isinstance(lens, str) and lens == "logit":
            lens = LogitLens.from_model(model)
        elif isinstance(lens, str) and lens == "tuned":
            folder = shipped_lens_dir(model)
            if folder is None:
                raise GltError(f"lenses: 'tuned' is the tuned lens glt ships for the model, and none ships for "
                               f"{model_name(model)!r}: pass a lens object, e.g. glt.least_squares_lens(model) or "
                               "glt.load_lens(FOLDER, model)")
            lens = load_lens(folder, model)
        elif isinstance(lens, str) or not hasattr(lens, "unembed"):
            raise GltError(f"lenses must be 'logit', 'tuned', a lens object (glt.LogitLens, glt.TunedLens) or a list "
                           f"or dict of them, got {lens!r:.60}")
        name = str(key) if key is not None else getattr(lens, "name", type(lens).__name__)
        if name in out:
            raise GltError(f"lenses holds two lenses named {name!r}: pass a dict {{name: lens}} to name them apart")
        out[name] = lens
    if not out:
        raise GltError("lenses is empty: pass 'logit', 'tuned' or a lens object")
    return out


def _target_ids(model: Any, targets: Sequence[str | int]) -> list[int]:
    d_vocab = int(model.cfg.d_vocab)
    tok = model_tokenizer(model)
    out = []
    for i, t in enumerate(targets):
        if isinstance(t, str):
            if tok is None:
                raise GltError(f"targets[{i}] is a string but the model has no tokenizer: pass token ids")
            ids = list(tok(t, add_special_tokens=False)["input_ids"])
            if len(ids) != 1:
                raise GltError(f"targets[{i}]={t!r} is {len(ids)} tokens, not one: pass a single token (with its "
                               "leading space, e.g. ' Paris') or its id")
            out.append(int(ids[0]))
        elif isinstance(t, int) and not isinstance(t, bool) and 0 <= t < d_vocab:
            out.append(t)
        else:
            raise GltError(f"targets[{i}] must be a token string or an id in [0, {d_vocab}), got {t!r:.60}")
    return out


@checked
def explore(
    model: Any,
    text: str,
    *,
    lenses: Any = "logit",
    targets: Sequence[str | int] | None = None,
    top_k: int = 5,
    color: Stat = "prob",
    prepend_bos: bool | None = None,
    title: str | None = None,
) -> Explorer:
    """Read ``text`` with every lens and return its interactive layer explorer.

    Args:
        model: a TransformerLens model (e.g. from `glt.load_model`).
        text: the text to read; every token is a column.
        lenses: ``"logit"``, ``"tuned"`` (the lens shipped for the model: default model, SmolLM2-135M), a lens object,
            or a list or dict ``{name: lens}`` of them (one grid each, switchable or stacked).
        targets: tokens (strings of one token, or ids; one string is one token) to follow exactly
            at every position, besides the final top-1; with targets the read-out runs twice (first
            to find the final top-1).
        top_k: tokens kept per cell (shown on hover; the file grows linearly with it).
        color: the colour statistic shown first (see `Explorer.from_readouts`).
        prepend_bos: BOS policy (see `glt.tokenize`).
        title: the page's title; default the text.

    Returns:
        An `Explorer`: a notebook shows it; ``.save("explorer.html")`` writes one HTML file.

    Example:
        >>> # glt.explore(glt.load_model("default"), "The capital of France is", lenses=["logit", "tuned"])
    """
    if not text.strip():
        raise GltError("text is empty or whitespace: pass text with at least one token")
    if isinstance(top_k, bool) or top_k < 1:
        raise GltError(f"top_k must be an int >= 1, got {top_k!r}")
    chosen = _lenses(model, lenses)
    extra = _target_ids(model, [targets] if isinstance(targets, str) else targets) if targets else []
    stack = capture_residuals(model, [text], prepend_bos=prepend_bos)
    reads = {}
    for name, lens in chosen.items():
        if extra:
            final = readout(stack, lens, top_k=1).top1[-1]
            tgt = _with_targets(final, extra)
            reads[name] = readout(stack, lens, targets=tgt, top_k=top_k)
        else:
            reads[name] = readout(stack, lens, top_k=top_k)
    shown = text if len(text) <= 120 else text[:119] + "\u2026"
    return Explorer.from_readouts(reads, tokenizer=model_tokenizer(model), title=shown if title is None else title,
                                  color=color)


def _with_targets(final: Tensor, extra: list[int]) -> Tensor:
    """``[row, 1 + len(extra)]`` targets: the final top-1, then the same ``extra`` ids at every row."""
    more = torch.tensor(extra, dtype=torch.long, device=final.device).expand(final.shape[0], len(extra))
    return torch.cat([final.long().unsqueeze(1), more], 1)
