"""Data: the offline English Wikipedia sample and token-frequency tables."""

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
