"""Data: the text and token statistics the studies read, all offline.

`wikipedia_articles` / `wikipedia_paragraphs` (`_wikipedia`) read the English Wikipedia sample
shipped inside gensim's wheel (`WIKI_SOURCE` names it). `TokenFrequency` (`_frequency`) is how
often each token id occurs in a corpus, its rank and its frequency bucket (`DEFAULT_EDGES` give
Top 1-10, Top 11-100, Top 101-1000 and 1000+); `load_frequency` loads the table shipped for the
default model or a saved one, and `_frequency_count` counts a corpus with any tokenizer.
Guess-then-refine reads the buckets; the studies' own datasets (facts, MMLU, ...) live with each
study. It imports `glt.core` only.
"""

from glt.data._frequency import (
    DEFAULT_EDGES as DEFAULT_EDGES,
)
from glt.data._frequency import (
    TokenFrequency as TokenFrequency,
)
from glt.data._frequency import (
    bucket_labels as bucket_labels,
)
from glt.data._frequency import (
    load_frequency as load_frequency,
)
from glt.data._wikipedia import (
    WIKI_SOURCE as WIKI_SOURCE,
)
from glt.data._wikipedia import (
    wikipedia_articles as wikipedia_articles,
)
from glt.data._wikipedia import (
    wikipedia_paragraphs as wikipedia_paragraphs,
)

__all__ = [
    "bucket_labels",
    "DEFAULT_EDGES",
    "load_frequency",
    "TokenFrequency",
    "WIKI_SOURCE",
    "wikipedia_articles",
    "wikipedia_paragraphs",
]
