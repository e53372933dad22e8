"""The ``glt`` command line: ``glt inspect``, ``glt study``, ``glt compare`` and ``glt lens``.

``glt inspect TEXT`` decodes every layer of one text and prints, for one position (default the
last), the top-k tokens of each layer with their probabilities and the rank of the final
prediction; ``--json`` prints the same as JSON, with ``"ranks"`` a ``[layer][position]`` list of
the 0-based rank of the final top-1 at every position. ``glt study`` runs the whole study and
writes a report (see `glt.pipeline._run`); ``--lens least_squares`` (the default for a model no
tuned lens ships for; also for ``glt inspect``) fits a least-squares lens on the spot, caches it
and says so on stderr (`glt.lenses.fit._cached`). ``glt compare`` overlays study runs on a
normalised depth axis (`glt.cli._compare`). ``glt lens`` trains and converts tuned lenses (from
``glt.cli._lens`` when installed).

Every user error prints ``glt: error: <message>`` and exits with status 2. Path options are
checked before the model loads: a missing output folder (and its parents) is created; a file where
a folder is expected or the reverse, a folder that cannot be written and a full disk are user
errors naming the path and the fix (`glt.core._paths`).
"""

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from glt.cli import _compare as compare_command
from glt.cli import _lens as lens_command
from glt.core._capture import capture_residuals
from glt.core._errors import GltError
from glt.core._models import load_model, model_name
from glt.core._paths import existing_file, existing_folder, folder_target
from glt.decoding._readout import readout
from glt.lenses._logit import LogitLens
from glt.lenses._protocol import Lens
from glt.lenses.fit._cached import least_squares_lens
from glt.pipeline._context import load_jacobian_lens, load_tuned_lens
from glt.pipeline._run import run_study, study_config

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The ``glt`` argument parser with its subcommands."""
    parser = argparse.ArgumentParser(
        prog="glt",
        description="How language models use their depth: logit/tuned-lens read-outs and the "
        "Guess-then-Refine studies.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    ins = sub.add_parser("inspect", help="decode every layer of one text",
                         description="Per-layer top-k tokens of one text and the rank of the "
                         "final prediction at every layer.")
    ins.add_argument("text", metavar="TEXT", help="the text to decode")
    ins.add_argument("--model", default="default", help="model name or path (default: default)")
    ins.add_argument("--lens", default="logit", choices=("logit", "tuned", "least_squares", "jacobian"),
                     help="lens to decode with (default: logit); least_squares: fitted on the spot "
                     "on the offline Wikipedia sample (minutes on a CPU) and cached for the next run")
    ins.add_argument("--lens-path", default=None,
                     help="tuned-lens folder (default: the shipped lens of the model), or a Jacobian "
                     "lens folder for --lens jacobian (JacobianLens.save; default: the one shipped for "
                     "the default model)")
    ins.add_argument("--top-k", type=int, default=5, help="tokens shown per layer (default: 5)")
    ins.add_argument("--position", type=int, default=-1,
                     help="position whose table is printed (default: -1, the last)")
    ins.add_argument("--json", action="store_true", help="print JSON instead of a table")

    st = sub.add_parser("study", help="run every study and write a report",
                        description="Run guess-then-refine, part of speech, fact recall, multiple "
                        "choice, early exit and patching; write figures, data and a report.")
    st.add_argument("--model", default="default", help="model name or path (default: default)")
    st.add_argument("--lens", default=None, metavar="LENS[,LENS...]",
                    help="lens(es) to read every study with, comma-separated: tuned, least_squares, logit, "
                    "jacobian (shipped for the default model), both (= tuned,logit) or a lens folder; each "
                    "study's forward passes run once and every lens decodes them (default: tuned when a "
                    "tuned lens ships for the model, else least_squares: fitted on the spot on the offline "
                    "Wikipedia sample, minutes on a CPU, and cached for the next run)")
    st.add_argument("--lens-path", default=None, help="tuned-lens folder for --lens tuned/both; a Jacobian "
                    "lens folder (JacobianLens.save) runs as the lens 'jacobian'")
    st.add_argument("--out", default="glt-study", help="output folder (default: glt-study)")
    st.add_argument("--quick", action="store_true",
                    help="small data sizes (about 10 minutes on 2 CPU cores)")
    st.add_argument("--resume", action="store_true",
                    help="keep finished stages in --out and run only the missing ones")
    st.add_argument("--force", action="store_true",
                    help="recompute every stage even if --out holds results")
    st.add_argument("--config", default=None,
                    help="JSON file overriding study sizes (see glt.pipeline._run.StudyConfig)")
    st.add_argument("--stages", default=None,
                    help="comma-separated subset of stages to run (default: all)")
    st.add_argument("--no-progress", action="store_true", help="hide progress bars")

    lens_command.register(sub)
    compare_command.register(sub)
    return parser


def _load_lens(kind: str, model: Any, path: str | None, model_arg: str) -> Lens:
    if kind == "logit":
        return LogitLens.from_model(model)
    if kind == "least_squares":
        if path is not None:
            raise GltError("--lens-path is the tuned lens's folder, but --lens is 'least_squares': "
                           "pass --lens tuned with it, or drop --lens-path")
        return least_squares_lens(model, model_arg=model_arg)
    if kind == "jacobian":
        return load_jacobian_lens(model, path)
    return load_tuned_lens(model, path)


def inspect_text(
    text: str,
    *,
    model: Any,
    lens: Lens,
    top_k: int = 5,
    position: int = -1,
) -> dict[str, Any]:
    """The data behind ``glt inspect``: tokens, per-layer top-k at one position, and all ranks.

    Returns a JSON-ready dict with ``"ranks"`` a ``[layer][position]`` list of 0-based ranks of the
    final top-1 at each position, ``"topk"`` per layer at ``position``, the tokens and provenance.
    """

    if not isinstance(text, str) or not text.strip():
        raise GltError(f"TEXT must be non-empty text, got {text!r}: pass e.g. 'The capital of France is'")
    if not isinstance(top_k, int) or top_k < 1:
        raise GltError(f"--top-k must be an integer >= 1, got {top_k!r}")
    stack = capture_residuals(model, [text])
    r = readout(stack, lens, top_k=top_k)
    n_pos = r.n_rows
    if not -n_pos <= position < n_pos:
        raise GltError(f"--position must lie in [-{n_pos}, {n_pos - 1}] for this {n_pos}-token text, got {position}")
    pos = position % n_pos
    tok = model.tokenizer

    def dec(i: int) -> str:
        return tok.decode([int(i)]) if tok is not None else str(int(i))

    probs = r.topk_logprobs[:, pos].exp()
    return {
        "model": model_name(model),
        "lens": r.lens,
        "text": text,
        "tokens": [dec(i) for i in r.input_ids.tolist()],
        "token_ids": r.input_ids.tolist(),
        "layers": list(r.layer_labels),
        "position": pos,
        "final_top1": [dec(i) for i in r.targets[:, 0].tolist()],
        "final_top1_ids": r.targets[:, 0].tolist(),
        "ranks": r.ranks[:, :, 0].tolist(),
        "topk": [
            [{"token": dec(i), "id": int(i), "prob": float(p)}
             for i, p in zip(r.topk_ids[layer, pos].tolist(), probs[layer].tolist(), strict=True)]
            for layer in range(r.ranks.shape[0])
        ],
    }


def format_inspect(data: dict[str, Any]) -> str:
    """The human-readable table printed by ``glt inspect``."""
    pos = data["position"]
    final = data["final_top1"][pos]
    lines = [
        f"model {data['model']} | {data['lens']} lens | {len(data['tokens'])} tokens | "
        f"position {pos} (input {data['tokens'][pos]!r}) | final prediction {final!r}",
        "",
    ]
    k = len(data["topk"][0])
    header = f"{'layer':<12} {'rank':>7}   " + "   ".join(f"{'top-' + str(i + 1):<18}" for i in range(k))
    lines.append(header)
    lines.append("-" * len(header))
    for layer, label in enumerate(data["layers"]):
        cells = [f"{repr(t['token'])[:12]:<12} {t['prob']:5.3f}" for t in data["topk"][layer]]
        rank = data["ranks"][layer][pos]
        lines.append(f"{label:<12} {rank:>7}   " + "   ".join(cells))
    lines.append("")
    lines.append("rank: 0-based rank of the final prediction at that layer (0 = top-1)")
    return "\n".join(lines)


def _cmd_inspect(args: argparse.Namespace) -> int:
    if args.lens_path is not None:
        existing_folder(args.lens_path, "--lens-path")
    if args.top_k < 1:
        raise GltError(f"--top-k must be an integer >= 1, got {args.top_k}")
    if not args.text.strip():
        raise GltError(f"TEXT must be non-empty text, got {args.text!r}: pass e.g. 'The capital of France is'")
    model = load_model(args.model)
    lens = _load_lens(args.lens, model, args.lens_path, args.model)
    data = inspect_text(args.text, model=model, lens=lens, top_k=args.top_k, position=args.position)
    if args.json:
        print(json.dumps(data, ensure_ascii=False))
    else:
        print(format_inspect(data))
    return 0


def _cmd_study(args: argparse.Namespace) -> int:
    folder_target(args.out, "--out")
    if args.config is not None:
        existing_file(args.config, "--config")
    if args.lens_path is not None:
        existing_folder(args.lens_path, "--lens-path")
    config = study_config(
        model=args.model, lens=args.lens, quick=args.quick, config_file=args.config,
        lens_path=args.lens_path,
    )
    stages = [s.strip() for s in args.stages.split(",")] if args.stages else None
    out = run_study(config, args.out, resume=args.resume, force=args.force, stages=stages,
                    progress=not args.no_progress)
    print(f"report: {out / 'report.html'} and {out / 'report.md'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``glt`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "inspect":
            return _cmd_inspect(args)
        if args.command == "study":
            return _cmd_study(args)
        if args.command == "lens":
            return int(lens_command.run(args) or 0)
        if args.command == "compare":
            return compare_command.run(args)
        parser.error(f"unknown command {args.command!r}")
    except GltError as e:
        print(f"glt: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("glt: interrupted (finished stages are kept; rerun with --resume)", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
