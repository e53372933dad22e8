"""Fit a Jacobian lens in resumable shards, then report its held-out KL and its stability.

    python benchmarks/fit_jacobian_lens.py fit    --work W [--texts 200] [--shard 10] [--max-hours 3]
    python benchmarks/fit_jacobian_lens.py report --work W --out FOLDER [--eval-rows 1024]

``fit`` cuts the first ``--texts`` paragraphs of the offline Wikipedia sample's train split that
have at least ``--seq`` tokens into shards of ``--shard`` texts and fits each shard with
`glt.fit_jacobian_lens` (glt's estimator, residual 0 fitted), saving it as a lens folder
``W/shards/NNN`` atomically: rerunning resumes after the last finished shard, and ``--max-hours``
stops cleanly after the shard that crosses it. ``report`` merges the shards (weighted by their
texts), and evaluates on held-out paragraphs (other articles) the logit lens, the least-squares
lens (`glt.lenses.fit._cached`, cached), the shipped tuned lens (default model only), the merged
Jacobian lens and the two lenses fitted on disjoint halves of the shards (even / odd). Stability:
per residual, ``|KL(half A) - KL(half B)| / KL(all)`` on the same rows; the lens counts as stable
when its largest value over the residuals is below ``--tolerance`` (default 5%). The stability
curve repeats that for the first 1, 2, 4, ... shards of each half; the texts per half the tolerance
needs are extrapolated twice: assuming the difference falls like 1/sqrt(texts), and along the
power law fitted to the curve (log-log least squares). The lens folder ``--out`` holds the merged
lens with ``report.json``, ``report.md`` and ``eval.json``.
"""

import argparse
import math
import time
import warnings
from pathlib import Path

import glt
from glt.core._io import atomic_write_text, write_json
from glt.data._wikipedia import WIKI_SOURCE, wikipedia_paragraphs
from glt.lenses._tuned import load_lens
from glt.lenses.fit._cached import least_squares_lens
from glt.lenses.fit._evaluate import evaluate_lens, summarize
from glt.lenses.fit._jacobian import fit_jacobian_lens, merge_jacobian_lenses


def corpus(model, n: int, seq: int) -> list[str]:
    """The first ``n`` train paragraphs with at least ``seq`` tokens (each a document start)."""
    out = []
    for p in wikipedia_paragraphs("train"):
        with warnings.catch_warnings():  # long paragraphs are cut to the context, then to seq: no news
            warnings.filterwarnings("ignore", message=r".*truncated from \d+ to \d+ tokens")
            ids = glt.tokenize(model, [p], truncate=True)[0]
        if len(ids) >= seq:
            out.append(p)
            if len(out) == n:
                return out
    raise SystemExit(f"only {len(out)} train paragraphs have >= {seq} tokens; pass fewer --texts or a shorter --seq")


def fit(model, args) -> int:
    texts = corpus(model, args.texts, args.seq)
    shards = args.work / "shards"
    t0 = time.time()
    write_json(args.work / "plan.json", {"model": args.model, "texts": args.texts, "shard": args.shard,
                                         "seq": args.seq, "skip_first_positions": args.skip})
    for k, a in enumerate(range(0, len(texts), args.shard)):
        folder = shards / f"{k:03d}"
        if (folder / "config.json").is_file():
            continue
        lens = fit_jacobian_lens(model, texts[a : a + args.shard], estimator="glt", max_seq_len=args.seq,
                                 skip_first_positions=args.skip, progress=not args.no_progress)
        lens.config["shard"] = {"index": k, "texts": [a, a + args.shard], "corpus": WIKI_SOURCE + " train"}
        lens.save(folder)
        done = (time.time() - t0) / 3600
        print(f"shard {k}: {lens.config['n_prompts']} texts in {lens.config['fit']['seconds']:.0f} s "
              f"({lens.config['fit']['seconds_per_text']:.0f} s/text)", flush=True)
        if args.max_hours is not None and done > args.max_hours:
            print(f"stopping after {done:.2f} h (--max-hours {args.max_hours}); rerun to resume")
            return 0
    return 0


def power_law(curve: list[dict], tolerance: float) -> tuple[float | None, int | None]:
    """The least-squares slope of log(max rel. diff) on log(texts per half), and the texts per half
    where that line reaches ``tolerance`` (None without two points or when the curve does not fall)."""
    pts = [(math.log(c["texts_per_half"]), math.log(c["max"])) for c in curve if c["max"] > 0]
    if len({x for x, _ in pts}) < 2:
        return None, None
    mx, my = sum(x for x, _ in pts) / len(pts), sum(y for _, y in pts) / len(pts)
    slope = sum((x - mx) * (y - my) for x, y in pts) / sum((x - mx) ** 2 for x, _ in pts)
    if slope >= 0:
        return slope, None
    return slope, math.ceil(math.exp(mx + (math.log(tolerance) - my) / slope) - 1e-9)  # 64.0000001 is 64


def report(model, args) -> int:
    folders = sorted(p for p in (args.work / "shards").iterdir() if (p / "config.json").is_file())
    if len(folders) < 2:
        raise SystemExit(f"{args.work / 'shards'} holds {len(folders)} finished shard(s): the halves need 2 or more")
    shards = [load_lens(f, model) for f in folders]
    whole = merge_jacobian_lenses(shards)
    halves = {"jacobian_a": merge_jacobian_lenses(shards[0::2]), "jacobian_b": merge_jacobian_lenses(shards[1::2])}
    lenses = {"logit": glt.LogitLens.from_model(model)}
    if not args.no_least_squares:
        lenses["least_squares"] = least_squares_lens(model, model_arg=args.model, progress=not args.no_progress)
    if args.model == "default":
        lenses["tuned"] = load_lens("default", model)
    lenses.update(jacobian=whole, **halves)
    # the stability curve: the first k shards of each half, k = 1, 2, 4, ... (the whole halves come last)
    pairs = min(len(shards[0::2]), len(shards[1::2]))
    ks = [2**j for j in range(pairs.bit_length()) if 2**j < pairs]
    for k in ks:
        lenses[f"curve_a{k}"] = merge_jacobian_lenses(shards[0::2][:k])
        lenses[f"curve_b{k}"] = merge_jacobian_lenses(shards[1::2][:k])
    held = [" ".join(p.split()[:48]) for p in wikipedia_paragraphs("heldout")[: args.eval_paras]]
    ev = evaluate_lens(model, lenses, held, max_rows=args.eval_rows, seed=0, progress=not args.no_progress,
                       data_name=f"{WIKI_SOURCE} held-out split, paragraphs 0..{args.eval_paras - 1} (first 48 words)")
    kl = {name: ev.kl[i].mean(-1) for i, name in enumerate(ev.lenses)}
    main = [name for name in ev.lenses if not name.startswith("curve_")]
    heldout = summarize(ev)
    for key in ("kl_mean", "ce_mean"):
        heldout[key] = {name: v for name, v in heldout[key].items() if name in main}
    n = int(model.cfg.n_layers)

    def rel_diff(a: str, b: str) -> list[float]:
        return [float(abs(kl[a][i] - kl[b][i]) / max(float(kl["jacobian"][i]), 1e-9)) for i in range(n)]

    rel = rel_diff("jacobian_a", "jacobian_b")
    shard_texts = shards[0].config["n_prompts"]
    curve = [{"texts_per_half": k * shard_texts, "max": max(r), "mean": sum(r) / n}
             for k, r in ((k, rel_diff(f"curve_a{k}", f"curve_b{k}")) for k in ks)]
    curve.append({"texts_per_half": min(info_n := [h.config["n_prompts"] for h in halves.values()]),
                  "max": max(rel), "mean": sum(rel) / n})
    # if the halves' difference shrinks like 1/sqrt(texts), the texts per half that reach the tolerance
    needed = math.ceil(curve[-1]["texts_per_half"] * (max(rel) / args.tolerance) ** 2)
    slope, needed_fit = power_law(curve, args.tolerance)
    info = {"model": args.model, "n_prompts": whole.config["n_prompts"], "fit": whole.config["fit"],
            "half_prompts": info_n,
            "stability_relative_kl_difference": rel, "stable": max(rel) < args.tolerance,
            "stability_curve": curve, "texts_per_half_for_tolerance_if_1_over_sqrt": needed,
            "curve_log_log_slope": slope, "texts_per_half_for_tolerance_fitted_power_law": needed_fit,
            "tolerance": args.tolerance, "heldout": heldout}
    md = ["# Jacobian lens: fit and held-out KL", "",
          f"- model: {args.model}; {info['n_prompts']} texts of {whole.config['fit']['max_seq_len']} tokens "
          f"({whole.config['fit']['tokens']} tokens), {whole.config['fit']['seconds'] / 3600:.2f} h of fitting "
          f"({whole.config['fit']['seconds_per_text']:.0f} s per text)",
          f"- held-out: {ev.n_rows} positions of {len(held)} paragraphs; halves: {info['half_prompts']} texts",
          f"- stability: max over residuals of |KL(A) - KL(B)| / KL(all) = {max(rel):.3f} "
          f"({'stable' if info['stable'] else 'not yet stable'} at tolerance {args.tolerance}); if the "
          f"difference shrinks like 1/sqrt(texts), {needed} texts per half reach it; the curve's own power "
          f"law (log-log slope {'-' if slope is None else f'{slope:.2f}'}) says "
          f"{'-' if needed_fit is None else needed_fit}", "",
          "| texts per half | max rel. diff | mean rel. diff |", "|---|---|---|",
          *(f"| {c['texts_per_half']} | {c['max']:.3f} | {c['mean']:.3f} |" for c in curve), "",
          "| residual | " + " | ".join(main) + " | halves rel. diff |",
          "|---|" + "---|" * (len(main) + 1)]
    for i, label in enumerate(ev.layer_labels):
        cells = " | ".join(f"{float(kl[name][i]):.3f}" for name in main)
        md.append(f"| {label} | {cells} | {rel[i]:.3f} |" if i < n else f"| {label} | {cells} | - |")
    text = "\n".join(md) + "\n"
    whole.config["heldout"] = heldout
    whole.save(args.out, extra_files={"report.json": info, "eval.json": ev.to_json()})
    atomic_write_text(Path(args.out) / "report.md", text)
    print(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("phase", choices=("fit", "report"))
    ap.add_argument("--work", type=Path, required=True, help="folder of the shards (created)")
    ap.add_argument("--model", default="default")
    ap.add_argument("--texts", type=int, default=200, help="texts to fit on (default 200)")
    ap.add_argument("--shard", type=int, default=10, help="texts per shard (default 10)")
    ap.add_argument("--seq", type=int, default=128, help="tokens per text (default 128, the reference's)")
    ap.add_argument("--skip", type=int, default=16, help="skip_first_positions (default 16)")
    ap.add_argument("--max-hours", type=float, default=None, help="stop after the shard that crosses this")
    ap.add_argument("--out", default=None, help="report: the lens folder to write")
    ap.add_argument("--eval-paras", type=int, default=256)
    ap.add_argument("--eval-rows", type=int, default=1024)
    ap.add_argument("--tolerance", type=float, default=0.05)
    ap.add_argument("--no-least-squares", action="store_true", help="report: leave the least-squares lens out")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    if args.phase == "report" and not args.out:
        ap.error("report needs --out FOLDER")
    model = glt.load_model(args.model)
    return fit(model, args) if args.phase == "fit" else report(model, args)


if __name__ == "__main__":
    raise SystemExit(main())
