"""Offline English text: the English Wikipedia sample shipped inside gensim's wheel.

107 full articles (~480k words, CC BY-SA 3.0), cleaned of wiki markup and split into paragraphs.
The articles are split deterministically into a training part and a held-out part so that a lens
trained on one is evaluated on the other.
"""

import bz2
import re
from functools import lru_cache
from typing import Literal

from glt.core._check import checked
from glt.core._errors import GltError

__all__ = ["WIKI_SOURCE", "wikipedia_articles", "wikipedia_paragraphs"]

WIKI_SOURCE = (
    "gensim test data enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2 "
    "(English Wikipedia sample, CC BY-SA 3.0)"
)
_FILE = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"


def _require_gensim():  # noqa: ANN202
    try:
        from gensim.corpora.wikicorpus import extract_pages, filter_wiki
        from gensim.test.utils import datapath
    except ImportError as e:
        raise GltError(
            "the offline Wikipedia sample needs gensim, which is not installed: run "
            "`pip install 'glt[data]'` (or `pip install gensim`)"
        ) from e
    return extract_pages, filter_wiki, datapath


def _clean(text: str) -> str:
    text = re.sub(r"'{2,}", "", text)
    text = re.sub(r"^=+\s*([^=\n]*?)\s*=+\s*$", "", text, flags=re.M)
    text = re.sub(r"\n{2,}", "\n\n", text)
    text = re.sub(r"[ \t]+", " ", text)
    return text.strip()


@lru_cache(maxsize=1)
def wikipedia_articles() -> tuple[tuple[str, str], ...]:
    """All non-redirect articles as ``(title, plain text)``, in file order."""
    extract_pages, filter_wiki, datapath = _require_gensim()
    out = []
    with bz2.BZ2File(datapath(_FILE)) as fh:
        for title, wiki, *_ in extract_pages(fh):
            if wiki.lstrip().upper().startswith("#REDIRECT"):
                continue
            text = _clean(filter_wiki(wiki))
            if len(text) > 200:
                out.append((title, text))
    return tuple(out)


@checked
def wikipedia_paragraphs(
    split: Literal["train", "heldout", "all"] = "all", *, min_words: int = 20, max_paragraphs: int | None = None
) -> list[str]:
    """Paragraphs of the Wikipedia sample with at least ``min_words`` words.

    Args:
        split: ``"train"`` (articles at even positions), ``"heldout"`` (odd positions) or
            ``"all"``. Lens training uses ``train``; evaluations and studies use ``heldout``.
        min_words: drop shorter paragraphs (headings, list debris).
        max_paragraphs: keep at most this many (the first ones, deterministic).

    Example:
        >>> paras = wikipedia_paragraphs("heldout", max_paragraphs=3)
        >>> len(paras)
        3
    """
    out: list[str] = []
    for i, (_, text) in enumerate(wikipedia_articles()):
        if split == "train" and i % 2 == 1 or split == "heldout" and i % 2 == 0:
            continue
        for para in text.split("\n\n"):
            para = " ".join(para.split())
            if len(para.split()) >= min_words and not para.startswith(("|", "{", "!")):
                out.append(para)
                if max_paragraphs is not None and len(out) >= max_paragraphs:
                    return out
    return out
