"""Benchmark the tuned-lens training step (tiled KL, forward + backward) against its GEMM roofline.

One step's loss is `glt.lenses.fit._loss.tiled_kl_ce` over every layer's lens residuals: per vocabulary
tile it multiplies ``[layer * tokens, d_model] @ [d_model, tile]`` (the logits) and accumulates
``probabilities @ W_tile`` (the gradient's expectation) in the same pass, so its work is two GEMMs
of the read-out's shape; the backward is a multiplication by a saved ``[layer, tokens, d_model]``
tensor. This script times forward + backward against two plain GEMMs of that shape, interleaved
round by round, for float32 and bfloat16 tiles, and measures peak extra memory at two token
counts to show it is bounded by the tile, not by the vocabulary. It never asserts.

    python benchmarks/bench_train_step.py                 # default model, CPU
    python benchmarks/bench_train_step.py --tokens 64 --json out.json
"""

import argparse
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_readout import _pin_malloc, peak_extra_memory, setup_model  # noqa: E402

from glt.lenses.fit._loss import tiled_kl_ce  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="default")
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    device = torch.device("cpu")
    p = setup_model(args.model, args.tokens, device)
    u = p.lens.unembed
    n = args.tokens
    with torch.no_grad():
        x_all = u.normalize(p.stack.resid[:, 0, :n])  # [layer, token, d_model]
    W16 = u.W.bfloat16()

    def step(dtype: torch.dtype, m: int = n):
        x = x_all[:-1, :m].clone().requires_grad_(True)
        kl, _ = tiled_kl_ce(u, x, x_all[-1, :m], compute_dtype=dtype,
                            W=W16 if dtype == torch.bfloat16 else None)
        kl.sum().backward()

    def gemm2(dtype: torch.dtype):
        a = x_all[:-1].reshape(-1, u.d_model).to(dtype)
        W = u.W.to(dtype)
        out = torch.empty(a.shape[0], u.d_vocab, dtype=dtype)
        back = torch.empty(a.shape[0], u.d_model, dtype=dtype)

        def run() -> None:  # the logits GEMM and an equal-sized GEMM back to d_model
            torch.matmul(a, W.T, out=out)
            torch.matmul(out, W, out=back)

        return run

    contenders = {
        "step_fp32": lambda: step(torch.float32), "gemm2_fp32": gemm2(torch.float32),
        "step_bf16": lambda: step(torch.bfloat16), "gemm2_bf16": gemm2(torch.bfloat16),
    }
    for fn in contenders.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in contenders}
    for r in range(args.repeats):
        order = list(contenders)[r % len(contenders):] + list(contenders)[: r % len(contenders)]
        for name in order:
            t = time.perf_counter()
            contenders[name]()
            times[name].append(time.perf_counter() - t)
    _pin_malloc()
    mem = {m: peak_extra_memory(lambda m=m: step(torch.float32, m), device) / 2**20
           for m in sorted({max(1, n // 4), n})}
    n_layer = x_all.shape[0] - 1
    res = {"model": args.model, "tokens": n, "layers_trained": n_layer, "d_model": u.d_model,
           "d_vocab": u.d_vocab, "threads": torch.get_num_threads(),
           "median_s": {k: statistics.median(v) for k, v in times.items()},
           "step_peak_extra_mb_by_tokens": mem}
    for dt in ("fp32", "bf16"):
        rs = [g / s for s, g in zip(times[f"step_{dt}"], times[f"gemm2_{dt}"], strict=True)]
        res[f"roofline_share_{dt}"] = statistics.median(rs)
        res[f"positions_per_s_{dt}"] = n / res["median_s"][f"step_{dt}"]
    print(json.dumps(res, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
    return res


if __name__ == "__main__":
    main(sys.argv[1:])
