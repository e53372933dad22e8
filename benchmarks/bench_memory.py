"""Peak memory of a long study: does a 10,000-prompt run stay within a fixed bound of a 100-prompt run?

Issue 8, item 4. Each size runs in a fresh subprocess (peak RSS is per process and never goes
down), which loads the model, warms up on 10 prompts, records its peak RSS so far (the
*baseline*: interpreter, torch, model) and then runs the pipeline over N synthetic short prompts
(4-12 words). ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` gives the peak; the script prints
each run and the growth from the smallest to the largest size.

Pipelines:

* ``gtr``: `glt.run_guess_then_refine` over every prefix (``max_positions=None``). Its result
  keeps per-position arrays (``[layer, position]`` top-1, bucket, rank as int64, probability),
  so it grows by design: ~0.4 KB per read position at peak on the tiny model (the arrays, the
  parts concatenated at the end, the token id lists); everything else must stay flat.
* ``readout``: capture -> read-out -> per-layer counters, batch by batch, nothing kept but the
  tokenised inputs (`glt.iter_residuals` tokenises them all up front): close to flat.

Measured (2-core CPU, tiny llama, batch size 128): gtr 100 -> 10,000 prompts (783 -> 80,059
positions): peak 507.5 -> 541.4 MB (ratio 1.067, +33.9 MB); readout 100 -> 10,000 prompts:
507.4 -> 516.0 MB (ratio 1.017, +8.6 MB).

The default model is a tiny random llama (3 layers, vocabulary 101, built like the test suite's)
so that 10,000 prompts take a minute or two on a laptop CPU; ``--model default`` measures the real
Gemma 3 270M (slow: use ``--sizes 100 1000``).

Usage:
    python benchmarks/bench_memory.py                       # 100 vs 10,000 prompts, both pipelines
    python benchmarks/bench_memory.py --sizes 200 4000 --pipeline readout
"""

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORDS = (
    "the a of and to in is was for on that with as by at it he she his her they capital france "
    "paris city country river is are were be been has have had not but or an this which from"
).split()


def prompts(n: int, seed: int = 0) -> list[str]:
    """``n`` synthetic prompts of 4-12 common English words (deterministic)."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12))) for _ in range(n)]


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports KiB)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 if sys.platform != "darwin" else peak / 2**20


def _run_pipeline(model, lens, texts: list[str], pipeline: str, batch_size: int) -> int:
    """Run ``pipeline`` over ``texts``; returns the number of read positions."""
    import torch

    import glt
    from glt.data._frequency import TokenFrequency
    from glt.studies.guess_then_refine._run import run_guess_then_refine

    if pipeline == "gtr":
        freq = TokenFrequency.from_counts(torch.arange(lens.unembed.d_vocab) % 97 + 1)
        res = run_guess_then_refine(model, lens, texts, frequency=freq, max_positions=None,
                                    batch_size=batch_size, progress=False)
        return res.n_positions
    n, agree = 0, None
    for stack in glt.iter_residuals(model, texts, batch_size=batch_size):
        r = glt.readout(stack, lens, top_k=1)
        hits = (r.top1 == r.top1[-1:]).sum(1)
        agree = hits if agree is None else agree + hits
        n += r.n_rows
    return n


def child(args: argparse.Namespace) -> None:
    """One measurement in this (fresh) process; prints one JSON line."""
    import torch

    import glt

    torch.manual_seed(0)
    model = glt.load_model(args.model)
    lens = glt.LogitLens.from_model(model)
    _run_pipeline(model, lens, prompts(10, seed=1), args.pipeline, args.batch_size)  # warm-up
    base = peak_rss_mb()
    t0 = time.perf_counter()
    n_pos = _run_pipeline(model, lens, prompts(args.child), args.pipeline, args.batch_size)
    print(json.dumps({"prompts": args.child, "pipeline": args.pipeline, "positions": n_pos,
                      "baseline_mb": round(base, 1), "peak_mb": round(peak_rss_mb(), 1),
                      "seconds": round(time.perf_counter() - t0, 2)}))


def measure(model: str, n: int, pipeline: str, batch_size: int = 32, timeout: float = 1800) -> dict:
    """Run one size in a fresh subprocess and return its JSON record."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(n), "--model", model,
           "--pipeline", pipeline, "--batch-size", str(batch_size)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def tiny_model_folder(root: Path) -> Path:
    """The test suite's tiny random llama (3 layers, d_model 28, vocabulary 101)."""
    sys.path.insert(0, str(HERE.parent / "tests"))
    from conftest import make_tiny_folder

    return make_tiny_folder("llama", root)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[100, 10_000])
    p.add_argument("--pipeline", choices=["gtr", "readout", "both"], default="both")
    p.add_argument("--model", help="glt.load_model name or folder (default: a tiny random llama)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child is not None:
        child(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or str(tiny_model_folder(Path(tmp)))
        pipelines = ["gtr", "readout"] if args.pipeline == "both" else [args.pipeline]
        for pipeline in pipelines:
            recs = [measure(model, n, pipeline, args.batch_size) for n in sorted(args.sizes)]
            for r in recs:
                print(f"{pipeline:8s} {r['prompts']:>7,} prompts {r['positions']:>8,} positions  "
                      f"baseline {r['baseline_mb']:7.1f} MB  peak {r['peak_mb']:7.1f} MB  "
                      f"({r['seconds']:.1f} s)")
            lo, hi = recs[0], recs[-1]
            print(f"{pipeline:8s} peak {hi['prompts']:,} / {lo['prompts']:,} prompts: ratio "
                  f"{hi['peak_mb'] / lo['peak_mb']:.3f}, difference {hi['peak_mb'] - lo['peak_mb']:+.1f} MB "
                  f"(growth above baseline {hi['peak_mb'] - hi['baseline_mb']:.1f} vs "
                  f"{lo['peak_mb'] - lo['baseline_mb']:.1f} MB)")


if __name__ == "__main__":
    main()
