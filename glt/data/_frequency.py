"""Token frequency: how often each token id occurs in a corpus, its rank, and its bucket.

The paper buckets every predicted token by its frequency rank in English Wikipedia under the
model's own tokenizer: Top 1-10, 11-100, 101-1000, 1000+. `TokenFrequency` holds the counts and
derives the ranking.

Conventions:

* rank is **0-based** (0 = the most frequent token); ties are broken by token id (lower id
  first); tokens never seen rank after every counted token (again by id);
* bucket ``i`` holds ranks ``edges[i-1] <= rank < edges[i]`` (``edges[-1] = 0`` before the
  first); the default edges ``(10, 100, 1000)`` give the paper's four buckets;
* excluded tokens (special tokens such as BOS/EOS/pad, and/or whitespace-only tokens, when asked
  for) take no rank (``-1``), do not push other tokens down, and fall in an extra last bucket
  labelled ``"excluded"``; their counts stay in the table, so the bucket composition still shows
  them.

Counts do not depend on the exclusion options, so `TokenFrequency.with_options` re-ranks without
re-counting.
"""

import hashlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from glt.core._assets import SHIPPED_NAMES, asset_dir, shipped_key
from glt.core._check import checked
from glt.core._codec import Format, write_tagged
from glt.core._errors import GltError
from glt.core._io import atomic_write_bytes, malformed, read_json
from glt.core._paths import folder_target
from glt.data._frequency_count import count_tokens, special_and_whitespace, tokenizer_info

__all__ = ["DEFAULT_EDGES", "TokenFrequency", "bucket_labels", "load_frequency"]

#: The paper's bucket edges: ranks < 10, < 100, < 1000, and the rest.
DEFAULT_EDGES: tuple[int, ...] = (10, 100, 1000)
EXCLUDED = "excluded"
_COUNTS_FILE = "counts.safetensors"
_META_FILE = "frequency.json"
_ALIASES = {"gemma-3-270m": "default"}  # the default model's tokenizer, by its display name
_FORMAT = Format("glt.TokenFrequency", "frequency table", "rebuild it with TokenFrequency.from_texts(...).save(path)",
                 legacy=(("format", "glt.TokenFrequency/1"),))


def bucket_labels(edges: Sequence[int]) -> tuple[str, ...]:
    """Labels for the buckets that ``edges`` (0-based rank boundaries) define.

    Example:
        >>> bucket_labels((10, 100, 1000))
        ('Top 1-10', 'Top 11-100', 'Top 101-1000', '1000+')
    """
    edges = _check_edges(edges)
    lows = (0,) + edges[:-1]
    return tuple(f"Top {lo + 1}-{hi}" for lo, hi in zip(lows, edges, strict=True)) + (f"{edges[-1]}+",)


def _check_edges(edges: Any) -> tuple[int, ...]:
    try:
        out = tuple(int(e) for e in edges)
        ok = all(int(e) == e for e in edges)
    except (TypeError, ValueError):
        out, ok = (), False
    if not ok or not out or out[0] < 1 or any(b <= a for a, b in zip(out, out[1:], strict=False)):
        raise GltError(
            f"edges must be strictly increasing positive integers (0-based rank boundaries), "
            f"got {edges!r}: pass e.g. edges=(10, 100, 1000)"
        )
    return out


def _check_counts(counts: Any) -> Tensor:
    try:
        counts = torch.as_tensor(counts)
    except (TypeError, ValueError, RuntimeError) as e:
        raise GltError(f"counts must be integer occurrence counts, got {counts!r:.60} ({e})") from e
    if counts.ndim != 1 or counts.numel() == 0 or counts.dtype.is_floating_point:
        raise GltError(
            f"counts must be a non-empty 1-D integer tensor [d_vocab], got dtype {counts.dtype} "
            f"shape {tuple(counts.shape)}"
        )
    if bool((counts < 0).any()):
        raise GltError("counts must be >= 0, got negative values: pass occurrence counts")
    if int(counts.sum()) == 0:
        raise GltError("counts are all zero (empty corpus): count a corpus with at least one token")
    return counts.long().cpu()


@dataclass(frozen=True, eq=False)
class TokenFrequency:
    """Token counts over a corpus, with the frequency ranking and buckets derived from them.

    Build one with `from_texts` (any corpus, any tokenizer) or `from_counts`; load the shipped
    table of the default model with `glt.load_frequency`.

    Attributes:
        counts: ``[d_vocab]`` occurrences of each token id in the corpus.
        edges: 0-based rank boundaries of the buckets (see the module docstring).
        special_ids, whitespace_ids: the tokenizer's special and whitespace-only token ids.
        exclude_special, exclude_whitespace: whether those tokens are left out of the ranking.
        corpus: where the counts come from.
        tokenizer: the tokenizer (or model) name.
        n_texts: how many texts were counted (``n_empty`` of them gave no token).

    Example:
        >>> freq = TokenFrequency.from_counts([5, 0, 9, 9, 1], edges=(1, 3))
        >>> freq.rank.tolist()  # ids 2 and 3 tie: lower id first; id 1 (unseen) ranks last
        [2, 4, 0, 1, 3]
        >>> freq.bucket_of(torch.tensor([2, 0, 1])).tolist()
        [0, 1, 2]
        >>> freq.labels
        ('Top 1-1', 'Top 2-3', '3+')
    """

    counts: Int[Tensor, " d_vocab"]
    edges: tuple[int, ...] = DEFAULT_EDGES
    special_ids: tuple[int, ...] = ()
    whitespace_ids: tuple[int, ...] = ()
    exclude_special: bool = False
    exclude_whitespace: bool = False
    corpus: str = "user counts"
    tokenizer: str = "unknown"
    n_texts: int = 0
    n_empty: int = 0
    _rank: Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        counts = _check_counts(self.counts)
        object.__setattr__(self, "counts", counts)
        object.__setattr__(self, "edges", _check_edges(self.edges))
        for name in ("special_ids", "whitespace_ids"):
            ids = tuple(sorted({int(i) for i in getattr(self, name)}))
            if ids and (ids[0] < 0 or ids[-1] >= counts.numel()):
                raise GltError(f"{name} must be token ids in [0, {counts.numel()}), got {ids[:5]}...")
            object.__setattr__(self, name, ids)
        excluded = self.excluded_mask
        key = torch.where(excluded, torch.full_like(counts, -1), counts)
        order = torch.argsort(-key, stable=True)  # stable: equal counts keep id order
        rank = torch.empty_like(counts)
        rank[order] = torch.arange(counts.numel())
        rank[excluded] = -1
        object.__setattr__(self, "_rank", rank)

    @classmethod
    def from_counts(cls, counts: Any, **kwargs: Any) -> "TokenFrequency":
        """Wrap ready-made counts (a list or integer tensor indexed by token id)."""
        if "edges" in kwargs:
            kwargs["edges"] = _check_edges(kwargs["edges"])
        return cls(_check_counts(counts), **kwargs)

    @classmethod
    def from_texts(
        cls,
        texts: Iterable[Any],
        tokenizer: Any,
        *,
        edges: Sequence[int] = DEFAULT_EDGES,
        exclude_special: bool = False,
        exclude_whitespace: bool = False,
        add_special_tokens: bool = True,
        corpus: str = "user texts",
        chunk_size: int = 256,
        progress: bool = True,
    ) -> "TokenFrequency":
        """Count the tokens of ``texts`` (streamed in chunks) with ``tokenizer``.

        Args:
            texts: any iterable of strings (a list, a generator, a file's lines).
            tokenizer: a Hugging Face tokenizer, or a glt/TransformerLens model (its tokenizer,
                with the vocabulary size of its unembedding).
            edges: bucket boundaries over 0-based ranks.
            exclude_special: leave BOS/EOS/pad/unk and other special tokens out of the ranking.
            exclude_whitespace: leave whitespace-only tokens (spaces, newlines) out of the ranking.
            add_special_tokens: tokenise as the model sees text (Gemma adds ``<bos>`` to each
                text, so BOS is counted once per text, as in the paper's tables).
            corpus: a description of the corpus, kept as provenance.
            chunk_size: texts tokenised per call.
            progress: show a tqdm progress bar.

        Raises:
            GltError: no text, a non-string item, or a corpus without a single token.

        Example:
            >>> # freq = TokenFrequency.from_texts(glt.wikipedia_paragraphs(), model)
        """
        tok, d_vocab, name = tokenizer_info(tokenizer)
        edges = _check_edges(edges)
        if isinstance(texts, str):
            raise GltError("texts must be an iterable of strings, got one string: wrap it in a list")
        if not isinstance(chunk_size, int) or chunk_size < 1:
            raise GltError(f"chunk_size must be a positive int, got {chunk_size!r}")
        counts, n_texts, n_empty = count_tokens(texts, tok, d_vocab, add_special_tokens=add_special_tokens,
                                                chunk_size=chunk_size, progress=progress)
        special, white = special_and_whitespace(tok, d_vocab)
        return cls(
            counts,
            edges=edges,
            special_ids=tuple(special),
            whitespace_ids=tuple(white),
            exclude_special=exclude_special,
            exclude_whitespace=exclude_whitespace,
            corpus=corpus,
            tokenizer=name,
            n_texts=n_texts,
            n_empty=n_empty,
        )

    def with_options(self, **changes: Any) -> "TokenFrequency":
        """A copy with other ``edges`` / ``exclude_special`` / ``exclude_whitespace`` (no recount)."""
        allowed = {"edges", "exclude_special", "exclude_whitespace", "corpus", "tokenizer"}
        bad = set(changes) - allowed
        if bad:
            raise GltError(f"with_options accepts {sorted(allowed)}, got {sorted(bad)}")
        if "edges" in changes:
            changes["edges"] = _check_edges(changes["edges"])
        return replace(self, **changes)

    @property
    def d_vocab(self) -> int:
        return int(self.counts.numel())

    @property
    def n_tokens(self) -> int:
        """Total tokens counted (excluded tokens included)."""
        return int(self.counts.sum())

    @property
    def excluded_mask(self) -> Bool[Tensor, " d_vocab"]:
        """``[d_vocab]`` True for tokens left out of the ranking."""
        mask = torch.zeros(self.d_vocab, dtype=torch.bool)
        if self.exclude_special and self.special_ids:
            mask[list(self.special_ids)] = True
        if self.exclude_whitespace and self.whitespace_ids:
            mask[list(self.whitespace_ids)] = True
        return mask

    @property
    def has_excluded(self) -> bool:
        return bool((self._rank < 0).any())

    @property
    def rank(self) -> Int[Tensor, " d_vocab"]:
        """``[d_vocab]`` 0-based frequency rank of every token id (-1 = excluded)."""
        return self._rank.clone()

    @property
    def labels(self) -> tuple[str, ...]:
        """Bucket labels; ``"excluded"`` is appended when some tokens are excluded."""
        return bucket_labels(self.edges) + ((EXCLUDED,) if self.has_excluded else ())

    @property
    def n_buckets(self) -> int:
        """Number of bucket indices `bucket_of` can return (the excluded bucket included)."""
        return len(self.labels)

    def bucket_of(self, ids: Any) -> Tensor:
        """Bucket index (into `labels`) of every token id in ``ids``; same shape, vectorised."""
        ids_t = torch.as_tensor(ids)
        if ids_t.dtype.is_floating_point or ids_t.dtype == torch.bool:
            raise GltError(f"ids must be integer token ids, got dtype {ids_t.dtype}")
        if ids_t.numel() and (int(ids_t.min()) < 0 or int(ids_t.max()) >= self.d_vocab):
            raise GltError(
                f"ids must be token ids in [0, {self.d_vocab}) (this table's vocabulary, "
                f"tokenizer {self.tokenizer!r}), got values in [{int(ids_t.min())}, "
                f"{int(ids_t.max())}]: use a frequency table built with the model's tokenizer"
            )
        rank = self._rank.to(ids_t.device)[ids_t.long()]
        bounds = torch.tensor(self.edges, device=ids_t.device)
        bucket = torch.bucketize(rank, bounds, right=True)
        return torch.where(rank < 0, torch.full_like(bucket, len(self.edges) + 1), bucket)

    def bucket_token_counts(self) -> Int[Tensor, " bucket"]:
        """Corpus tokens falling in each bucket (``[n_buckets]``, sums to `n_tokens`)."""
        b = self.bucket_of(torch.arange(self.d_vocab))
        return torch.zeros(self.n_buckets, dtype=torch.long).index_add_(0, b, self.counts)

    def composition(self) -> list[dict[str, Any]]:
        """Share of corpus tokens and number of distinct seen tokens in each bucket.

        Example:
            >>> freq = TokenFrequency.from_counts([5, 0, 9, 9, 1], edges=(1, 3))
            >>> [(c["bucket"], c["n_tokens"], round(c["share"], 3)) for c in freq.composition()]
            [('Top 1-1', 9, 0.375), ('Top 2-3', 14, 0.583), ('3+', 1, 0.042)]
        """
        b = self.bucket_of(torch.arange(self.d_vocab))
        seen = self.counts > 0
        per = self.bucket_token_counts()
        total = self.n_tokens
        return [
            {
                "bucket": label,
                "n_tokens": int(per[i]),
                "share": float(per[i]) / total,
                "n_types": int((seen & (b == i)).sum()),
            }
            for i, label in enumerate(self.labels)
        ]

    def provenance(self) -> dict[str, Any]:
        """Where the table comes from and how it ranks (JSON-ready)."""
        return {
            "corpus": self.corpus,
            "tokenizer": self.tokenizer,
            "n_texts": self.n_texts,
            "n_empty_texts": self.n_empty,
            "n_tokens": self.n_tokens,
            "n_types": int((self.counts > 0).sum()),
            "d_vocab": self.d_vocab,
            "edges": list(self.edges),
            "exclude_special": self.exclude_special,
            "exclude_whitespace": self.exclude_whitespace,
        }

    def to_dataframe(self) -> Any:
        """One row per seen token id: count, share, rank and bucket, most frequent first."""
        import pandas as pd

        ids = (self.counts > 0).nonzero().flatten()
        b = self.bucket_of(ids)
        labels = self.labels  # a property that scans the vocabulary: read it once
        df = pd.DataFrame(
            {
                "token_id": ids.numpy(),
                "count": self.counts[ids].numpy(),
                "share": (self.counts[ids].double() / self.n_tokens).numpy(),
                "rank": self._rank[ids].numpy(),
                "bucket": [labels[i] for i in b.tolist()],
            }
        )
        return df.sort_values(["count", "token_id"], ascending=[False, True], ignore_index=True)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the table to folder ``path``: nonzero counts as safetensors + JSON provenance.

        Both files are written atomically; the JSON records the safetensors file's SHA-256 so a
        truncated or mismatched pair is detected on load.
        """
        from safetensors.torch import save

        folder = folder_target(path, "frequency table folder")
        ids = (self.counts > 0).nonzero().flatten()
        blob = save(
            {
                "ids": ids.to(torch.int32).contiguous(),
                "counts": self.counts[ids].contiguous(),
                "special_ids": torch.tensor(self.special_ids, dtype=torch.int32),
                "whitespace_ids": torch.tensor(self.whitespace_ids, dtype=torch.int32),
            }
        )
        atomic_write_bytes(folder / _COUNTS_FILE, blob)
        write_tagged(folder / _META_FILE, _FORMAT,
                     {**self.provenance(), "counts_sha256": hashlib.sha256(blob).hexdigest()})
        return folder

    @classmethod
    def load(cls, path: str | os.PathLike) -> "TokenFrequency":
        """Read a table written by `save` (GltError if it is missing, corrupt or mismatched)."""
        from safetensors.torch import load

        folder = Path(path)
        meta = read_json(folder / _META_FILE, "frequency table metadata")
        try:
            blob = (folder / _COUNTS_FILE).read_bytes()
        except OSError as e:
            raise GltError(f"frequency table counts {folder / _COUNTS_FILE} cannot be read ({e})") from e
        _FORMAT.check(meta, folder / _META_FILE)
        if meta.get("counts_sha256") != hashlib.sha256(blob).hexdigest():
            raise GltError(
                f"{folder / _COUNTS_FILE} does not match its metadata (corrupted or replaced): "
                "rebuild the table with TokenFrequency.from_texts(...).save(path)"
            )
        with malformed(folder, "frequency table", "rebuild it"):
            t = load(blob)
            d_vocab = int(meta["d_vocab"])
            counts = torch.zeros(d_vocab, dtype=torch.long)
            counts[t["ids"].long()] = t["counts"].long()
            return cls(
                counts,
                edges=tuple(meta["edges"]),
                special_ids=tuple(t["special_ids"].tolist()),
                whitespace_ids=tuple(t["whitespace_ids"].tolist()),
                exclude_special=bool(meta["exclude_special"]),
                exclude_whitespace=bool(meta["exclude_whitespace"]),
                corpus=str(meta["corpus"]),
                tokenizer=str(meta["tokenizer"]),
                n_texts=int(meta["n_texts"]),
                n_empty=int(meta.get("n_empty_texts", 0)),
            )


@checked
def load_frequency(
    name: str | os.PathLike = "default",
    *,
    edges: Sequence[int] | None = None,
    exclude_special: bool | None = None,
    exclude_whitespace: bool | None = None,
) -> TokenFrequency:
    """Load a shipped frequency table by model name, or a saved table from a folder.

    ``"default"`` (alias ``"gemma-3-270m"``) is the default model's table and ``"smollm2-135m"``
    SmolLM2-135M's, each counted with the model's tokenizer on the whole offline Wikipedia sample
    (`glt.data._wikipedia.wikipedia_paragraphs("all")`, BOS once per paragraph);
    ``benchmarks/build_frequency_table.py [--model NAME]`` rebuilds them. The keyword options re-rank the loaded
    counts (None keeps the stored choice).

    Example:
        >>> freq = load_frequency("default")
        >>> freq.tokenizer, freq.labels[0]
        ('gemma-3-270m', 'Top 1-10')
    """
    key = str(name)
    shipped = (_ALIASES.get(key) or shipped_key(key)) if isinstance(name, str) else None
    if shipped is not None:
        folder = asset_dir("frequency", shipped)
    elif Path(key).expanduser().is_dir():
        folder = Path(key).expanduser()
    else:
        raise GltError(
            f"frequency table {key!r} is neither a shipped table ({', '.join(SHIPPED_NAMES)}) nor a folder: "
            "pass one of those names or a folder written by TokenFrequency.save, or build one with "
            "TokenFrequency.from_texts(texts, model)"
        )
    freq = TokenFrequency.load(folder)
    changes: dict[str, Any] = {}
    if edges is not None:
        changes["edges"] = tuple(edges)
    if exclude_special is not None:
        changes["exclude_special"] = exclude_special
    if exclude_whitespace is not None:
        changes["exclude_whitespace"] = exclude_whitespace
    return freq.with_options(**changes) if changes else freq
