"""``glt lens train|eval|import|export``: tuned lenses from the command line.

Texts come from ``--texts FILE`` (a ``.txt`` file with one text per blank-line-separated
paragraph, or a ``.jsonl`` file with a ``"text"`` field per line) or ``--corpus
wikipedia-train|wikipedia-heldout`` (the offline English sample, `glt.data._wikipedia`).

Examples::

    glt lens train --model default --corpus wikipedia-train --heldout wikipedia-heldout --out my-lens
    glt lens eval my-lens --model default --corpus wikipedia-heldout --max-rows 128
    glt lens import path/to/tuned-lens-folder converted --model default
    glt lens export default exported --model default
"""

import argparse
import dataclasses
import json
import os
from typing import Any

import torch
from safetensors.torch import load_file

from glt.core._assets import SHIPPED_NAMES
from glt.core._distributed import torchrun_group
from glt.core._errors import GltError
from glt.core._models import load_model
from glt.core._paths import existing_file, existing_folder, file_target, folder_target
from glt.data._wikipedia import wikipedia_paragraphs
from glt.lenses._logit import LogitLens
from glt.lenses._tuned import export_tuned_lens, import_tuned_lens, load_lens
from glt.lenses.fit._config import TrainConfig
from glt.lenses.fit._evaluate import evaluate_lens, summarize
from glt.lenses.fit._train import train_tuned_lens

__all__ = ["read_texts", "register", "run"]


def read_texts(path: str | None, corpus: str | None) -> list[str]:
    """Texts from a .txt / .jsonl file or a named offline corpus."""
    if (path is None) == (corpus is None):
        raise GltError("pass exactly one of --texts FILE or --corpus wikipedia-train|wikipedia-heldout")
    if corpus is not None:
        split = {"wikipedia-train": "train", "wikipedia-heldout": "heldout", "wikipedia": "all"}.get(corpus)
        if split is None:
            raise GltError(f"--corpus must be wikipedia-train, wikipedia-heldout or wikipedia, got {corpus!r}")
        return wikipedia_paragraphs(split)
    f = existing_file(path, "--texts")
    try:
        raw = f.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise GltError(f"--texts {path} cannot be read as UTF-8 text ({e}): pass a .txt or .jsonl file") from e
    if f.suffix == ".jsonl":
        texts = []
        for i, line in enumerate(raw.splitlines()):
            if line.strip():
                try:
                    texts.append(str(json.loads(line)["text"]))
                except (json.JSONDecodeError, KeyError, TypeError) as e:
                    raise GltError(f"--texts {path} line {i + 1} is not JSON with a 'text' field: fix the line") from e
    else:
        texts = [" ".join(p.split()) for p in raw.split("\n\n") if p.strip()]
    if not texts:
        raise GltError(f"--texts {path} holds no text: pass a file with at least one paragraph")
    return texts


def _counts(path: str | None) -> Any:
    if path is None:
        return None
    existing_file(path, "--frequency-counts")
    try:
        t = load_file(path)
    except Exception as e:  # noqa: BLE001
        raise GltError(
            f"--frequency-counts {path} is not a readable safetensors file ({e}): pass one with a 'counts' tensor"
        ) from e
    if "counts" not in t:
        raise GltError(f"--frequency-counts {path} lacks a 'counts' tensor [d_vocab]: save one under that key")
    return t["counts"]


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``lens`` command (with train / eval / import / export) to ``subparsers``."""
    p = subparsers.add_parser("lens", help="train, evaluate, import and export tuned lenses",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="lens_command", required=True)

    def data_args(q: argparse.ArgumentParser) -> None:
        q.add_argument("--model", default="default", help="model name or path (glt.load_model)")
        q.add_argument("--texts", help=".txt (blank-line paragraphs) or .jsonl ('text' field)")
        q.add_argument("--corpus", help="wikipedia-train | wikipedia-heldout | wikipedia")
        q.add_argument("--no-progress", action="store_true")

    t = sub.add_parser("train", help="train a tuned lens (KL to the final layer)")
    data_args(t)
    t.add_argument("--out", required=True, help="lens folder to write")
    t.add_argument("--init", default="least_squares",
                   help="least_squares, zero, or a lens (a shipped one: 'default', 'smollm2-135m'; or a folder) "
                   "to continue training")
    t.add_argument("--layers", help="train only these translators, e.g. 11-17 or 0,3,5 (default: all)")
    t.add_argument("--max-tokens", type=int, default=65_536)
    t.add_argument("--tokens-per-step", type=int, default=1024)
    t.add_argument("--least-squares-tokens", type=int, default=16_384)
    t.add_argument("--optimizer", default="linesearch", choices=["linesearch", "sgd", "adam"],
                   help="linesearch (default) or the tuned-lens recipe: --init zero --optimizer sgd")
    t.add_argument("--val-rows", type=int, default=48, help="line-search validation positions")
    t.add_argument("--lr", type=float, default=1.0)
    t.add_argument("--weight-decay", type=float, default=1e-3)
    t.add_argument("--momentum", type=float, default=0.9, help="SGD momentum / Adam beta1")
    t.add_argument("--grad-clip", type=float, default=1.0, help="gradient norm clip (sgd, adam)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--bf16", action="store_true", help="bfloat16 logit tiles (faster on CPUs with AVX512-BF16)")
    t.add_argument("--checkpoint-dir", help="checkpoint here; rerun the same command to resume")
    t.add_argument("--heldout-texts", help="held-out texts file for the evaluation written beside the lens")
    t.add_argument("--heldout-corpus", help="held-out corpus name (e.g. wikipedia-heldout)")
    t.add_argument("--eval-rows", type=int, default=256)
    t.add_argument("--frequency-counts", help="safetensors file with a 'counts' [d_vocab] tensor")
    t.add_argument("--frequency-alpha", type=float, default=1.0)

    e = sub.add_parser("eval", help="held-out KL / cross-entropy per layer, tuned vs logit lens")
    e.add_argument("lens", help="a shipped lens ('default', 'smollm2-135m') or a lens folder")
    data_args(e)
    e.add_argument("--max-rows", type=int, default=256)
    e.add_argument("--out", help="write the evaluation JSON here")
    e.add_argument("--allow-mismatch", action="store_true")

    i = sub.add_parser("import", help="convert a tuned-lens folder (params.pt) into a glt lens")
    i.add_argument("source")
    i.add_argument("dest")
    i.add_argument("--model", default="default")
    i.add_argument("--allow-mismatch", action="store_true")

    x = sub.add_parser("export", help="write a glt lens as a tuned-lens folder (params.pt)")
    x.add_argument("lens")
    x.add_argument("dest")
    x.add_argument("--model", default="default")
    p.set_defaults(func=run)
    return p


def parse_layers(spec: str | None) -> list[int] | None:
    """``"11-17"`` or ``"0,3,5"`` (ranges allowed inside the list) as sorted layer indices."""
    if spec is None:
        return None
    out: list[int] = []
    try:
        for part in spec.split(","):
            lo, _, hi = part.strip().partition("-")
            out += range(int(lo), int(hi or lo) + 1)
    except ValueError:
        raise GltError(f"--layers must look like 11-17 or 0,3,5, got {spec!r}") from None
    return out


def run(args: argparse.Namespace) -> int:
    """Execute a parsed ``glt lens ...`` command; returns the exit status."""

    cmd = args.lens_command
    _check_paths(args)  # before the model loads
    recipe = _recipe(args) if cmd == "train" else None  # so is a bad training option
    model = load_model(args.model)
    if cmd == "train":
        texts = read_texts(args.texts, args.corpus)
        held = None
        if args.heldout_texts or args.heldout_corpus:
            held = read_texts(args.heldout_texts, args.heldout_corpus)
        if args.init not in ("least_squares", "zero"):  # a lens to continue: it needs the model
            recipe = dataclasses.replace(recipe, init=load_lens(args.init, model))
        with torchrun_group():  # under torchrun: data-parallel over the ranks (gloo)
            lens = train_tuned_lens(
                model, texts, recipe, frequency_counts=_counts(args.frequency_counts),
                checkpoint_dir=args.checkpoint_dir, heldout_texts=held, eval_rows=args.eval_rows, out=args.out,
                data_name=args.corpus or args.texts, progress=not args.no_progress,
            )
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"saved tuned lens to {args.out} ({lens.config['training']['tokens_trained']} tokens)")
            _print_heldout(lens.config.get("heldout"))
        return 0
    if cmd == "eval":
        lens = load_lens(args.lens, model, allow_mismatch=args.allow_mismatch)
        ev = evaluate_lens(model, {"logit": LogitLens(lens.unembed, lens.n_layers), "tuned": lens},
                           read_texts(args.texts, args.corpus), max_rows=args.max_rows,
                           data_name=args.corpus or args.texts, progress=not args.no_progress)
        if args.out:
            ev.save(args.out)
        _print_heldout(summarize(ev))
        return 0
    if cmd == "import":
        lens = import_tuned_lens(args.source, model, allow_mismatch=args.allow_mismatch)
        lens.save(args.dest)
        print(f"imported {args.source} -> {args.dest}")
        return 0
    if cmd == "export":
        export_tuned_lens(load_lens(args.lens, model), args.dest)
        print(f"exported {args.lens} -> {args.dest} (tuned-lens format)")
        return 0
    raise GltError(f"unknown lens command {cmd!r}: use train, eval, import or export")


def _recipe(args: argparse.Namespace) -> TrainConfig:
    """The `TrainConfig` of ``glt lens train``'s options (GltError naming a bad one); ``--init`` FOLDER
    starts as ``least_squares`` until the lens is loaded with the model."""
    return TrainConfig(
        init=args.init if args.init in ("least_squares", "zero") else "least_squares",
        layers=parse_layers(args.layers), max_tokens=args.max_tokens, tokens_per_step=args.tokens_per_step,
        least_squares_tokens=args.least_squares_tokens, optimizer=args.optimizer, lr=args.lr,
        momentum=args.momentum, weight_decay=args.weight_decay, grad_clip=args.grad_clip,
        frequency_alpha=args.frequency_alpha, val_rows=args.val_rows, seed=args.seed,
        compute_dtype=torch.bfloat16 if args.bf16 else torch.float32,
    )


def _check_paths(args: argparse.Namespace) -> None:
    """Refuse a wrong path argument of ``glt lens ...`` before anything is loaded or trained."""
    for name in ("texts", "heldout_texts", "frequency_counts"):
        if getattr(args, name, None) is not None:
            existing_file(getattr(args, name), "--" + name.replace("_", "-"))
    cmd = args.lens_command
    if cmd == "train":
        folder_target(args.out, "--out")
        if args.checkpoint_dir is not None:
            folder_target(args.checkpoint_dir, "--checkpoint-dir")
        if args.init not in ("least_squares", "zero", *SHIPPED_NAMES):
            existing_folder(args.init, "--init")
    elif cmd == "eval":
        if args.lens not in SHIPPED_NAMES:
            existing_folder(args.lens, "lens")
        if args.out is not None:
            file_target(args.out, "--out")
    elif cmd == "import":
        existing_folder(args.source, "source")
        folder_target(args.dest, "dest")
    elif cmd == "export":
        if args.lens not in SHIPPED_NAMES:
            existing_folder(args.lens, "lens")
        folder_target(args.dest, "dest")


def _print_heldout(summary: dict[str, Any] | None) -> None:
    if not summary:
        return
    names = list(summary["kl_mean"])
    print(f"held-out KL(final || lens), nats, mean over {summary['rows']} positions")
    print("layer " + " ".join(f"{n:>14}" for n in names))
    for j in range(len(summary["kl_mean"][names[0]])):
        print(f"{j:5d} " + " ".join(f"{summary['kl_mean'][n][j]:14.4f}" for n in names))
