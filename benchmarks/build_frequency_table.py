"""Build the token-frequency table that ships with glt for the default model.

Counts every token of the offline English Wikipedia sample (gensim's test data, all articles,
paragraphs of >= 20 words) with the default model's tokenizer, BOS once per paragraph as the
model sees text, and writes ``glt/assets/frequency/default/`` (nonzero counts as safetensors +
provenance JSON). Special and whitespace-only token ids are recorded so users can exclude them
from the ranking at load time (``glt.load_frequency("default", exclude_special=True)``).

Run from the repository root:  python benchmarks/build_frequency_table.py
"""

import argparse
import time
from pathlib import Path

import glt
from glt.data._frequency import TokenFrequency
from glt.data._wikipedia import WIKI_SOURCE, wikipedia_paragraphs

OUT = Path(__file__).resolve().parents[1] / "glt" / "assets" / "frequency" / "default"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    t0 = time.perf_counter()
    model = glt.load_model("default")
    texts = wikipedia_paragraphs("all")
    freq = TokenFrequency.from_texts(
        texts, model, corpus=f"{WIKI_SOURCE}; wikipedia_paragraphs('all', min_words=20)"
    )
    freq.save(args.out)
    print(f"wrote {args.out} in {time.perf_counter() - t0:.1f} s")
    for key, val in freq.provenance().items():
        print(f"  {key}: {val}")
    for row in freq.composition():
        print(f"  {row['bucket']:>14}: {row['share']:.1%} of tokens, {row['n_types']} types")
    top = freq.to_dataframe().head(15)
    tok = model.tokenizer
    pairs = zip(top.token_id, top["count"], strict=True)
    print("  top 15:", [(tok.decode([int(i)]), int(c)) for i, c in pairs])


if __name__ == "__main__":
    main()
