"""One GPU session's checks of the read-out: exact ranks against float64, and speed against GEMM.

For random weights with the shapes of Gemma 3 270M, GPT-2 XL and Llama 3 8B (no checkpoint
needed), on one CUDA device:

* exactness: `glt.readout` (fused Triton kernel, and the tiled path with ``GLT_FUSED=0``) with
  bf16 and fp32 operands against ranks and top-k from float64 logits of the same operands; beside
  them, how many ranks a plain bf16 GEMM (bf16-rounded logits) gets wrong;
* speed: `glt.readout` with every statistic (fused, for a few block configurations, and eager)
  against cuBLAS GEMMs of the read-out's shape (bf16 in, bf16 out: the roofline; fp32).

Prints one JSON object per measurement and writes them all to ``--out``. Never asserts.
Usage: ``python benchmarks/gpu_check.py --out gpu.json [--budget-s 420]``; then
``python benchmarks/gpu_check.py --from-json gpu.json[,more.json] --markdown docs/benchmarks.md``
appends the GPU section to the page that ``bench_readout.py --markdown`` wrote.
"""

import argparse
import json
import os
import statistics
import sys
import time
import traceback

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_readout import SHAPES, setup_shapes  # noqa: E402

import glt  # noqa: E402
from glt import _readout_fused as fused  # noqa: E402

TOKENS = {"gemma3-270m": 512, "gpt2-xl": 512, "llama3-8b": 256, "tiny": 40}
SHAPES.setdefault("tiny", (2, 64, 1000))  # for a smoke test on CPU (TRITON_INTERPRET=1)
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()
CONFIGS = [  # (BM, BN, BK, warps, stages)
    (64, 128, 64, 4, 3), (128, 128, 64, 8, 3), (128, 64, 64, 4, 3), (64, 256, 64, 8, 3),
    (128, 256, 64, 8, 3),
]
RESULTS: list[dict] = []


def emit(**kw) -> None:
    RESULTS.append(kw)
    print(json.dumps(kw), flush=True)


def timed(fn, reps: int = 3) -> float:
    fn()
    sync()
    ts = []
    for _ in range(reps):
        sync()
        t = time.perf_counter()
        fn()
        sync()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def positions(p, n: int) -> torch.Tensor:
    m = torch.zeros_like(p.stack.mask)
    m[0, :n] = True
    return m


def reference(p, n: int, dtype: torch.dtype, k: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """Float64 ranks of the targets and top-k ids (ties: lowest id) for the first n tokens."""
    u = p.lens.unembed
    with torch.no_grad():
        x = u.normalize(p.stack.resid[:, 0, :n])
    x = (x.to(dtype) if dtype != torch.float32 else x).double()
    W = (u.W.to(dtype) if dtype != torch.float32 else u.W).double()
    ranks, top = [], []
    for layer in range(x.shape[0]):
        z = x[layer] @ W.T
        t = z.gather(-1, p.targets[:n, None])
        ranks.append((z > t).sum(-1))
        top.append(torch.sort(-z, dim=-1, stable=True).indices[:, :k])
    return torch.stack(ranks), torch.stack(top)


def bf16_logit_ranks(p, n: int) -> torch.Tensor:
    """Ranks from bf16-rounded logits (a plain bf16 GEMM), for comparison."""
    u = p.lens.unembed
    with torch.no_grad():
        x = u.normalize(p.stack.resid[:, 0, :n]).bfloat16()
        W = u.W.bfloat16()
        out = []
        for layer in range(x.shape[0]):
            z = x[layer] @ W.T
            out.append((z > z.gather(-1, p.targets[:n, None])).sum(-1))
    return torch.stack(out)


def check_exact(shape: str, p, n: int = 32) -> None:
    n = min(n, TOKENS[shape])
    for dtype in (torch.bfloat16, torch.float32):
        ref_r, ref_top = reference(p, n, dtype)
        for mode in ("1", "0"):
            os.environ["GLT_FUSED"] = mode
            try:
                r = glt.readout(p.stack, p.lens, targets=p.targets[:n], positions=positions(p, n),
                                top_k=5, matmul_dtype=dtype)
                emit(kind="exact", shape=shape, dtype=str(dtype), fused=mode == "1", tokens=n,
                     rank_mismatch=int((r.ranks[..., 0] != ref_r).sum()),
                     topk_mismatch=int((r.topk_ids != ref_top).sum()), n=int(ref_r.numel()))
            except Exception as e:  # noqa: BLE001 - report and go on
                emit(kind="error", where=f"exact {shape} {dtype} fused={mode}", error=repr(e)[:400],
                     tb=traceback.format_exc()[-1500:])
    wrong = bf16_logit_ranks(p, n) != reference(p, n, torch.bfloat16)[0]
    emit(kind="exact", shape=shape, dtype="bf16 GEMM, bf16 logits", fused=None, tokens=n,
         rank_mismatch=int(wrong.sum()), n=int(wrong.numel()))


def gemm(p, n: int, dtype: torch.dtype):
    u = p.lens.unembed
    with torch.no_grad():
        x = u.normalize(p.stack.resid[:, 0, :n]).reshape(-1, u.d_model).to(dtype)
    W = u.W.to(dtype)
    out = torch.empty(x.shape[0], u.d_vocab, dtype=dtype, device=x.device)
    return lambda: torch.matmul(x, W.T, out=out)


def bench(shape: str, p, deadline: float) -> None:
    n = TOKENS[shape]
    n_layer, d_model, d_vocab = p.stack.resid.shape[0], p.lens.unembed.d_model, p.lens.unembed.d_vocab
    flop = 2.0 * n_layer * n * d_model * d_vocab
    mask = positions(p, n)
    roof = timed(gemm(p, n, torch.bfloat16))
    emit(kind="speed", shape=shape, what="gemm_bf16", tokens=n, s=roof, tflops=flop / roof / 1e12)
    torch.backends.cuda.matmul.allow_tf32 = False
    s32 = timed(gemm(p, n, torch.float32))
    emit(kind="speed", shape=shape, what="gemm_fp32", tokens=n, s=s32, tflops=flop / s32 / 1e12)

    def run(dtype):
        return lambda: glt.readout(p.stack, p.lens, targets=p.targets[:n], positions=mask,
                                   top_k=5, matmul_dtype=dtype)

    for cfg in CONFIGS:
        if time.monotonic() > deadline:
            emit(kind="skip", shape=shape, what=f"fused {cfg}", why="time budget")
            continue
        fused.BLOCK, (fused.NUM_WARPS, fused.NUM_STAGES) = cfg[:3], cfg[3:]
        os.environ["GLT_FUSED"] = "1"
        try:
            t = timed(run(torch.bfloat16))
            emit(kind="speed", shape=shape, what=f"glt fused bf16 {cfg}", tokens=n, s=t,
                 tflops=flop / t / 1e12, roofline_share=roof / t)
        except Exception as e:  # noqa: BLE001
            emit(kind="error", where=f"fused {shape} {cfg}", error=repr(e)[:400],
                 tb=traceback.format_exc()[-1500:])
    fused.BLOCK, (fused.NUM_WARPS, fused.NUM_STAGES) = CONFIGS[0][:3], CONFIGS[0][3:]
    try:  # the main launch alone (no host-side folding): how much the rest costs
        from glt.decoding._triton_kernel import fused_block_stats

        u = p.lens.unembed
        with torch.no_grad():
            x = u.normalize(p.stack.resid[:, 0, :n]).reshape(-1, d_model).bfloat16().contiguous()
        W = u.W.bfloat16().contiguous()
        t0 = torch.zeros(x.shape[0], 1, device=x.device)
        pf = torch.zeros(n, d_vocab, device=x.device)
        for cfg in CONFIGS[:2]:
            t = timed(lambda cfg=cfg: fused_block_stats(x, W, None, n, hi=t0, lo=t0, p_final=pf,
                                                        block=cfg[:3], num_warps=cfg[3],
                                                        num_stages=cfg[4]))
            emit(kind="speed", shape=shape, what=f"fused kernel only {cfg}", tokens=n, s=t,
                 tflops=flop / t / 1e12, roofline_share=roof / t)
    except Exception as e:  # noqa: BLE001
        emit(kind="error", where=f"kernel only {shape}", error=repr(e)[:400],
             tb=traceback.format_exc()[-1500:])
    for mode, dtype in (("0", torch.bfloat16), ("1", torch.float32)):
        if time.monotonic() > deadline:
            break
        os.environ["GLT_FUSED"] = mode
        try:
            t = timed(run(dtype), reps=1)
            emit(kind="speed", shape=shape, what=f"glt {'fused' if mode == '1' else 'eager'} {dtype}",
                 tokens=n, s=t, tflops=flop / t / 1e12, roofline_share=roof / t,
                 fp32_gemm_share=s32 / t)
        except Exception as e:  # noqa: BLE001
            emit(kind="error", where=f"{shape} mode={mode} {dtype}", error=repr(e)[:400],
                 tb=traceback.format_exc()[-1500:])


def render_markdown(results: list[dict]) -> str:
    """The GPU section of docs/benchmarks.md from saved results (later runs override earlier)."""
    env = next((r for r in results if r["kind"] == "env"), {})
    exact: dict[tuple, dict] = {}
    speed: dict[tuple, dict] = {}
    for r in results:
        if r["kind"] == "exact":
            exact[(r["shape"], r["dtype"], r["fused"])] = r
        elif r["kind"] == "speed":
            speed[(r["shape"], r["what"])] = r
    lines = [
        f"## GPU: {env.get('device', '?')} (torch {env.get('torch', '?')}, Triton "
        f"{env.get('triton', '?')})", "",
        "Random weights with each model's shapes (`python benchmarks/gpu_check.py`). **Exactness**: "
        "ranks of random targets and top-5 ids for the first 32 tokens at every layer, against "
        "float64 logits of the same operands. Random targets sit mid-distribution, where logits "
        "are densest: the hardest case for exact ranks.", "",
        "| shapes | operands | kernel | rank mismatches | top-5 mismatches |", "|---|---|---|---|---|",
    ]
    for (shape, dtype, fz), r in exact.items():
        kernel = "plain cuBLAS GEMM, bf16 logits" if fz is None else ("fused" if fz else "eager")
        top = r.get("topk_mismatch", "-")
        lines.append(f"| {shape} | {dtype.replace('torch.', '')} | {kernel} | "
                     f"{r['rank_mismatch']} / {r['n']} | {top} |")
    lines += ["", "**Speed**: every statistic for all layers (`glt.readout`, random targets), the fused "
              "kernel's main launch alone, and cuBLAS GEMMs of the read-out's shape; `x bf16 "
              "roofline` divides the bf16 GEMM's time by the contender's.", "",
              "| shapes | tokens | contender | seconds | TFLOP/s | x bf16 roofline |", "|---|---|---|---|---|---|"]
    for (shape, what), r in speed.items():
        share = r.get("roofline_share")
        lines.append(f"| {shape} | {r['tokens']} | {what} | {r['s']:.4f} | {r['tflops']:.1f} | "
                     f"{'' if share is None else f'{share:.3f}'} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="gpu.json")
    ap.add_argument("--budget-s", type=float, default=420.0)
    ap.add_argument("--shapes", default="gemma3-270m,gpt2-xl,llama3-8b")
    ap.add_argument("--configs", type=int, default=len(CONFIGS), help="try the first N block configs")
    ap.add_argument("--from-json", default=None, help="comma list of saved --out files: render only")
    ap.add_argument("--markdown", default=None, help="append the GPU section to this file")
    args = ap.parse_args()
    if args.from_json:
        results = [r for f in args.from_json.split(",") for r in json.load(open(f))]
        text = render_markdown(results)
        if args.markdown:
            with open(args.markdown, "a") as f:
                f.write("\n" + text)
        else:
            print(text)
        return
    del CONFIGS[args.configs :]
    t0 = time.monotonic()
    emit(kind="env", device=torch.cuda.get_device_name() if DEVICE.type == "cuda" else "cpu",
         torch=torch.__version__,
         triton=__import__("triton").__version__)
    shapes = args.shapes.split(",")
    for i, shape in enumerate(shapes):
        deadline = t0 + args.budget_s * (i + 1) / len(shapes)
        try:
            p = setup_shapes(shape, TOKENS[shape], DEVICE)
            p.targets = p.targets.long()
            check_exact(shape, p)
            bench(shape, p, deadline)
            del p
            if DEVICE.type == "cuda":
                torch.cuda.empty_cache()
        except Exception as e:  # noqa: BLE001
            emit(kind="error", where=shape, error=repr(e)[:400], tb=traceback.format_exc()[-2000:])
        with open(args.out, "w") as f:
            json.dump(RESULTS, f, indent=1)
    emit(kind="done", seconds=time.monotonic() - t0)
    with open(args.out, "w") as f:
        json.dump(RESULTS, f, indent=1)


if __name__ == "__main__":
    assert SHAPES
    main()
