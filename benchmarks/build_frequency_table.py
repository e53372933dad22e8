"""Build a token-frequency table that ships with glt (the default model's, or SmolLM2-135M's).

Counts every token of the offline English Wikipedia sample (gensim's test data, all articles,
paragraphs of >= 20 words) with the model's tokenizer, BOS once per paragraph as the
model sees text, and writes ``glt/assets/frequency/<key>/`` (``default`` or ``smollm2-135m``;
nonzero counts as safetensors + provenance JSON). Special and whitespace-only token ids are
recorded so users can exclude them from the ranking at load time
(``glt.load_frequency("default", exclude_special=True)``).

Run from the repository root:  python benchmarks/build_frequency_table.py [--model smollm2-135m]
"""

import argparse
import time
from pathlib import Path

import glt
from glt.core._assets import SHIPPED_NAMES, shipped_key
from glt.data._frequency import TokenFrequency
from glt.data._wikipedia import WIKI_SOURCE, wikipedia_paragraphs

ASSETS = Path(__file__).resolve().parents[1] / "glt" / "assets" / "frequency"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", choices=SHIPPED_NAMES)
    parser.add_argument("--out", type=Path, default=None, help="default: glt/assets/frequency/<key>")
    args = parser.parse_args()
    out = args.out or ASSETS / shipped_key(args.model)
    t0 = time.perf_counter()
    model = glt.load_model(args.model)
    texts = wikipedia_paragraphs("all")
    freq = TokenFrequency.from_texts(
        texts, model, corpus=f"{WIKI_SOURCE}; wikipedia_paragraphs('all', min_words=20)"
    )
    freq.save(out)
    print(f"wrote {out} in {time.perf_counter() - t0:.1f} s")
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
