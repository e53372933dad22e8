"""Tokens-to-KL curves: held-out KL after t training tokens, recipe (zero init) vs least squares.

The curves are recorded by ``benchmarks/train_default_lens.py kl`` runs (each writes
``<work>/<name>.curve.json``: the bfloat16 KL(final || lens) per layer on a fixed 48-position
held-out probe, every few steps). Produce them with, e.g.::

    python benchmarks/train_default_lens.py ls                                    # LS fit
    python benchmarks/train_default_lens.py kl --name zero --init zero            # the recipe
    python benchmarks/train_default_lens.py kl --name tuned --init ls             # LS + recipe
    python benchmarks/lens_tokens_to_kl.py --work benchmarks/out/default_lens

This script tabulates them: mean KL over layers 0..n_layers-1 per token count, and for each run
the first token count at which it reaches the recipe's best KL (the question of issue 3, item 3).
"""

import argparse
import json
import sys
from pathlib import Path


def load_curves(work: Path) -> dict[str, list[dict]]:
    """Curves from a work folder, else the ones recorded in the shipped lens's report.json."""
    found = {f.name.removesuffix(".curve.json"): json.loads(f.read_text()) for f in sorted(work.glob("*.curve.json"))}
    if found:
        return found
    shipped = Path(__file__).resolve().parents[1] / "glt" / "assets" / "lenses" / "default" / "report.json"
    return json.loads(shipped.read_text())["curves"]


def summarize(curves: dict[str, list[dict]], recipe: str = "zero") -> dict:
    out: dict = {"runs": {}}
    for name, curve in curves.items():
        out["runs"][name] = [{"tokens": c["tokens"], "mean_kl": sum(c["kl_layer"]) / len(c["kl_layer"]),
                              "kl_layer": c["kl_layer"]} for c in sorted(curve, key=lambda c: c["tokens"])]
    if recipe in out["runs"]:
        best = min(c["mean_kl"] for c in out["runs"][recipe])
        out["recipe_best_mean_kl"] = best
        out["tokens_to_reach_recipe_best"] = {
            name: next((c["tokens"] for c in run if c["mean_kl"] <= best), None) for name, run in out["runs"].items()
        }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", type=Path, default=Path("benchmarks/out/default_lens"))
    ap.add_argument("--recipe", default="zero")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    s = summarize(load_curves(args.work), args.recipe)
    for name, run in s["runs"].items():
        print(name)
        for c in run:
            print(f"  tokens {c['tokens']:6d}  mean KL {c['mean_kl']:.4f}  layer0 {c['kl_layer'][0]:.3f}  "
                  f"layer{len(c['kl_layer']) - 1} {c['kl_layer'][-1]:.3f}")
    if "tokens_to_reach_recipe_best" in s:
        print("tokens to reach the recipe's best probe KL", s["recipe_best_mean_kl"], s["tokens_to_reach_recipe_best"])
    if args.out:
        args.out.write_text(json.dumps(s, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
