"""Guess-then-refine inside a block on the default model: attention or MLP, per block.

Reads the first ``--prefixes`` prefixes of the first ``--texts`` held-out Wikipedia paragraphs at
every block's input, mid residual (``resid_mid``) and output with the logit lens, or with the
least-squares lens and its ``resid_mid`` translators (``--lens least_squares``: fitted with them,
or read from glt's cache), and prints, per block, N guesses and the share overturned by attention
and by the MLP (``glt.sublayer_split``).

    python benchmarks/sublayer_split.py --out benchmarks/out/sublayer_split   # ~26 min on 2 busy cores
    python benchmarks/sublayer_split.py --lens least_squares --out benchmarks/out/sublayer_split_ls

Writes ``split.json`` (the `glt.SublayerSplit`), ``per_block.csv``, ``summary.json`` and
``split.png`` under ``--out``. Results: docs/concepts.md ("Inside a block: resid_mid") and
``benchmarks/results/sublayer_split{,_least_squares}.json``.
"""

import argparse
import time
from pathlib import Path

import torch

import glt
from glt.core._io import write_json


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/out/sublayer_split"))
    ap.add_argument("--texts", type=int, default=32)
    ap.add_argument("--prefixes", type=int, default=64, help="read prefixes per text (after the BOS)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lens", choices=["logit", "least_squares"], default="logit")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = glt.load_model()
    texts = glt.wikipedia_paragraphs("heldout")[: args.texts]
    ids = [glt.tokenize(model, [t])[0][: args.prefixes + 1] for t in texts]
    t_fit = time.time()
    lens = glt.LogitLens.from_model(model) if args.lens == "logit" else glt.least_squares_lens(model, resid_mid=True)
    t0 = time.time()
    split = glt.sublayer_split(model, lens, texts=ids, max_positions=None, source=(
        f"glt.wikipedia_paragraphs('heldout')[:{args.texts}], first {args.prefixes} prefixes of each"))
    seconds = time.time() - t0
    args.out.mkdir(parents=True, exist_ok=True)
    split.save(args.out / "split.json")
    df = split.to_dataframe()
    df.to_csv(args.out / "per_block.csv", index=False)
    n = split.n_layers
    pools = {"early (default)": list(split.early_layers), "middle": list(range(n // 3, 2 * n // 3)),
             "late": list(range(2 * n // 3, n))}
    write_json(args.out / "summary.json", {"seconds": seconds, "lens_seconds": t0 - t_fit, "lens": split.lens,
                                           "n_positions": split.n_positions,
                                           "counts": split.counts,
                                           "pooled": {k: split.headline(v) for k, v in pools.items()}})
    glt.plot_sublayer_split(split).savefig(args.out / "split.png")
    cols = ["block", "input_label", "n_guesses", "share_attention", "share_mlp", "share_restored", "share_kept",
            "rank_change_attention_median", "rank_change_mlp_median", "all_top1_changed_attention",
            "all_top1_changed_mlp"]
    print(df[cols].round(3).to_string(index=False))
    print(f"{split.n_positions} positions in {seconds:.0f} s; results under {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
