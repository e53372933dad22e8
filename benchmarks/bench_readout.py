"""Benchmark glt's streamed read-out against TransformerLens, a naive read-out and the GEMM roofline.

All contenders run in one process on the same residuals and the same targets, interleaved round
by round, so the ratios between them hold even on a busy machine; the script prints the median
over rounds. It never asserts on time.

Contenders:

* ``glt``: `glt.readout` computing every statistic (ranks, target log-probs, top-k, entropy,
  KL to the final layer) for every layer and token;
* ``tl``: TransformerLens 4's ``tools.analysis.logit_lens`` ranking the same targets (ranks and
  entropy only) from a ``run_with_cache`` cache; with ``--shapes`` (no real model) its kernel
  ``logit_readout`` on the normalised residuals;
* ``naive``: materialise ``[layer, token, vocab]`` logits, ``log_softmax``, ranks by comparison,
  top-k, entropy and KL;
* ``gemm``: the roofline, one fp32 ``[layer*token, d_model] @ [d_model, d_vocab]`` matmul into a
  preallocated output (on CUDA also in bf16).

Usage::

    python benchmarks/bench_readout.py                        # default model, CPU
    python benchmarks/bench_readout.py --shapes gemma3-270m   # random weights, real shapes
    python benchmarks/bench_readout.py --device cuda --shapes llama3-8b --tokens 256

Peak extra memory is measured in a separate phase: on CPU the resident set size (sampled every
millisecond, with glibc's mmap threshold pinned so freed tensors leave the RSS), on CUDA
``torch.cuda.max_memory_allocated``.
"""

import argparse
import ctypes
import gc
import importlib.util
import json
import os
import statistics
import sys
import threading
import time
from types import SimpleNamespace

import torch

import glt
from glt.core._capture import ResidualStack, layer_labels
from glt.lenses._logit import LogitLens, Unembed

SHAPES = {  # n_layers, d_model, d_vocab
    "gemma3-270m": (18, 640, 262144),
    "gpt2-xl": (48, 1600, 50257),
    "llama3-8b": (32, 4096, 128256),
}
TEXT = (
    "The history of the city begins with a small settlement on the river, where traders from the "
    "north exchanged furs and salt for grain. Over the following centuries the town grew into a "
    "regional capital, with a cathedral, a university and a bridge that was, for a time, the "
    "longest in the country. In the nineteenth century the railway arrived, and with it factories, "
    "new suburbs and a population that doubled every few decades. Today the city is known for its "
    "museums, its music festivals and the old market square, which survived the wars almost intact."
)


def _pin_malloc() -> None:
    """Make glibc return freed large blocks to the OS at once, so RSS tracks live tensors."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 16)  # M_MMAP_THRESHOLD: fixed, disables the dynamic threshold
    except OSError:
        pass


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_extra_memory(fn, device: torch.device) -> int:
    """Bytes allocated by ``fn`` at its peak, above what was live when it started."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    base = _rss()
    peak = [base]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _rss())
            time.sleep(0.001)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    try:
        fn()
    finally:
        stop.set()
        th.join()
    return max(peak[0], _rss()) - base


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


# ----------------------------------------------------------------------------- problem set-up


def setup_model(name: str, n_tokens: int, device: torch.device) -> SimpleNamespace:
    """Load a real model, capture one text's residuals and TransformerLens's cache."""
    model = glt.load_model(name, device=str(device))
    ids = glt.tokenize(model, [TEXT])[0]
    while len(ids) < n_tokens + 1:
        ids = ids + ids[1:]
    tokens = torch.tensor([ids[: n_tokens + 1]], device=device)
    inp = tokens[:, :n_tokens]
    stack = glt.capture_residuals(model, inp.tolist())
    n_layers = int(model.cfg.n_layers)
    names = [f"blocks.{i}.hook_resid_pre" for i in range(n_layers)]
    names.append(f"blocks.{n_layers - 1}.hook_resid_post")
    with torch.no_grad():
        _, cache = model.run_with_cache(inp, names_filter=names)
    return SimpleNamespace(
        model=model, lens=glt.LogitLens.from_model(model), stack=stack, cache=cache,
        targets=tokens[0, 1:], label=f"model {name}",
    )


def setup_shapes(shape: str, n_tokens: int, device: torch.device, seed: int = 0) -> SimpleNamespace:
    """Random weights with a real model's shapes (no checkpoint needed)."""
    n_layers, d_model, d_vocab = SHAPES[shape]
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(d_vocab, d_model, generator=g) / d_model**0.5
    norm = torch.nn.RMSNorm(d_model, eps=1e-6)
    with torch.no_grad():
        norm.weight.copy_(1 + 0.3 * torch.randn(d_model, generator=g))
    unembed = Unembed(norm.to(device), W.T.to(device), None, None)
    lens = LogitLens(unembed, n_layers)
    # residuals whose logit spread grows with depth, like a trained model's
    scale = torch.linspace(0.5, 4.0, n_layers + 1).view(-1, 1, 1, 1)
    resid = (torch.randn(n_layers + 1, 1, n_tokens, d_model, generator=g) * scale).to(device)
    tokens = torch.randint(0, d_vocab, (1, n_tokens), generator=g).to(device)
    mask = torch.ones(1, n_tokens, dtype=torch.bool, device=device)
    stack = ResidualStack(resid, tokens, mask, layer_labels(n_layers))
    targets = torch.randint(0, d_vocab, (n_tokens,), generator=g).to(device)
    return SimpleNamespace(model=None, lens=lens, stack=stack, cache=None, targets=targets,
                           label=f"random weights, {shape} shapes")


def _normed(p: SimpleNamespace, n: int) -> torch.Tensor:
    with torch.no_grad():
        return p.lens.unembed.normalize(p.stack.resid[:, 0, :n])  # [layer, token, d_model]


# ----------------------------------------------------------------------------- contenders


def run_glt(p: SimpleNamespace, n: int, readout_fn=None, **kw) -> None:
    fn = readout_fn or glt.readout
    mask = torch.zeros_like(p.stack.mask)
    mask[0, :n] = True
    fn(p.stack, p.lens, targets=p.targets[:n], positions=mask, **kw)


class _TLStub(torch.nn.Module):
    """The attributes TransformerLens's ``logit_readout`` reads, for random-weight runs."""

    def __init__(self, unembed: Unembed) -> None:
        super().__init__()
        self.W_U = unembed.W.T
        self.b_U = torch.zeros(unembed.d_vocab, device=unembed.W.device)
        self.unembed = torch.nn.Identity()
        self.cfg = SimpleNamespace(d_model=unembed.d_model, normalization_type=None)
        self.eval()


def run_tl(p: SimpleNamespace, n: int) -> None:
    from transformer_lens.tools.analysis.logit_lens import logit_lens, logit_readout

    if p.cache is not None:
        logit_lens(p.cache, positions=slice(0, n), targets=p.targets[:n].view(1, n))
    else:
        stub = _TLStub(p.lens.unembed)
        logit_readout(stub, _normed(p, n), apply_ln=False, targets=p.targets[:n].view(1, n))


def run_naive(p: SimpleNamespace, n: int, top_k: int = 5) -> None:
    """Materialise every logit: the read-out as a first notebook would write it."""
    with torch.no_grad():
        u = p.lens.unembed
        x = _normed(p, n)
        logits = x @ u.W.T  # [layer, token, vocab]
        logp = torch.log_softmax(logits, -1)
        tg = p.targets[:n].view(1, n, 1).expand(logits.shape[0], n, 1)
        t_logit = logits.gather(-1, tg)
        _ranks = (logits > t_logit).sum(-1)
        _t_logp = logp.gather(-1, tg)
        _top = logits.topk(top_k, -1)
        probs = logp.exp()
        _entropy = -(probs * logp).sum(-1)
        _kl = (probs[-1:] * (logp[-1:] - logp)).sum(-1)


def make_gemm(p: SimpleNamespace, n: int, dtype: torch.dtype):
    u = p.lens.unembed
    x = _normed(p, n).reshape(-1, u.d_model).to(dtype)
    W = u.W.to(dtype)
    out = torch.empty(x.shape[0], u.d_vocab, dtype=dtype, device=x.device)

    def gemm() -> None:
        torch.matmul(x, W.T, out=out)

    return gemm


# ----------------------------------------------------------------------------- main


def render_markdown(runs: list[dict]) -> str:
    """The docs page (docs/benchmarks.md) for one or more result dicts of `main`."""
    out = [
        "# Benchmarks: the streamed read-out",
        "",
        "Written by `python benchmarks/bench_readout.py --markdown docs/benchmarks.md` (rerun it to",
        "refresh this page; `--from-json a.json,b.json` renders saved runs). Every contender runs in",
        "one process on the same residuals and targets, interleaved round by round; the tables give",
        "medians over rounds, and ratios are medians of per-round ratios. `x roofline` divides by",
        "the plain fp32 GEMM of the read-out's shape (`[layer*tokens, d_model] @ [d_model, d_vocab]`)",
        "measured in the same rounds. `tok/cpu-s` divides tokens by the process's CPU time, which on",
        "a shared machine is steadier than wall time. No test asserts on these numbers.",
        "",
        "Contenders: **glt** = `glt.readout` computing every statistic (exact ranks, target",
        "log-probs, top-5, entropy, KL to the final layer); **tl** = TransformerLens 4's",
        "`tools.analysis.logit_lens` ranking the same targets from a `run_with_cache` cache (ranks",
        "and entropy only); **naive** = materialised `[layer, token, vocab]` logits, `log_softmax`,",
        "ranks by comparison, top-k, entropy, KL; **baseline** = an earlier glt read-out, when given;",
        "**gemm** = the roofline.",
    ]
    for res in runs:
        c = res["contenders"]
        out += [
            "",
            f"## {res['label']}, {res['device']}, {res['threads']} thread(s)",
            "",
            f"{res['n_layer']} layers x d_model {res['d_model']} x d_vocab {res['d_vocab']}; "
            f"{res['tokens']} tokens (naive: {res['naive_tokens']}); {res['repeats']} rounds; "
            f"load average after the run {res['load_average_after']:.1f}.",
            "",
            "| contender | tokens/s | GFLOP/s | x roofline (wall) | x roofline (CPU time) "
            "| tok/cpu-s | peak extra MB |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, v in c.items():
            wall = res["ratios"].get(f"{name}/gemm", 1.0 if name == "gemm" else float("nan"))
            cpu = res["cpu_time_ratios"].get(f"{name}/gemm", 1.0 if name == "gemm" else float("nan"))
            out.append(f"| {name} | {v['tokens_per_s']:.2f} | {v['gflops']:.1f} | {wall:.3f} | "
                       f"{cpu:.3f} | {v['tokens_per_cpu_s']:.2f} | {v['peak_extra_mb']:.0f} |")
        out += ["", "Ratios of tokens/s (wall | CPU time):", ""]
        out += [f"- `{k}`: {v:.3f} | {res['cpu_time_ratios'][k]:.3f}" for k, v in res["ratios"].items()]
        if res.get("glt_peak_extra_mb_by_tokens"):
            mem = ", ".join(f"{k} tokens: {v:.0f} MB"
                            for k, v in res["glt_peak_extra_mb_by_tokens"].items())
            out += ["", f"glt's peak extra memory by tokens read: {mem}."]
    return "\n".join(out) + "\n"


def _load_module(path: str):
    spec = importlib.util.spec_from_file_location("bench_alt_readout", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.readout


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--model", default="default", help="glt model name (ignored with --shapes)")
    ap.add_argument("--shapes", choices=sorted(SHAPES), help="random weights of these shapes")
    ap.add_argument("--tokens", type=int, default=24, help="tokens read by glt, tl and gemm")
    ap.add_argument("--naive-tokens", type=int, default=None, help="tokens for naive (memory!)")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved rounds; medians reported")
    ap.add_argument("--skip", default="", help="comma list of contenders to skip")
    ap.add_argument("--matmul-dtype", default=None, help="glt.readout matmul_dtype (e.g. bfloat16)")
    ap.add_argument("--baseline-module", default=None,
                    help="a file defining readout() to time beside glt (e.g. the previous version)")
    ap.add_argument("--memory-tokens", default=None,
                    help="comma list of token counts for glt's peak memory (default: n/4,n)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads for every contender (glt: worker threads)")
    ap.add_argument("--json", default=None, help="write the results here")
    ap.add_argument("--markdown", default=None, help="write the docs page here")
    ap.add_argument("--from-json", default=None,
                    help="comma list of saved --json results: render --markdown without running")
    args = ap.parse_args(argv)
    if args.from_json:
        runs = [json.load(open(f)) for f in args.from_json.split(",")]
        text = render_markdown(runs)
        if args.markdown:
            with open(args.markdown, "w") as f:
                f.write(text)
        else:
            print(text)
        return {"runs": runs}

    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    if args.shapes:
        p = setup_shapes(args.shapes, args.tokens, device)
    else:
        p = setup_model(args.model, args.tokens, device)
    setup_s = time.perf_counter() - t0
    n = args.tokens
    n_naive = args.naive_tokens or min(n, 16)
    n_layer = p.stack.resid.shape[0]
    u = p.lens.unembed
    skip = {s for s in args.skip.split(",") if s}
    kw = {}
    if args.matmul_dtype:
        kw["matmul_dtype"] = getattr(torch, args.matmul_dtype)

    contenders: dict[str, tuple[int, object]] = {}
    if "glt" not in skip:
        contenders["glt"] = (n, lambda: run_glt(p, n, **kw))
    if args.baseline_module and "baseline" not in skip:
        alt = _load_module(args.baseline_module)
        contenders["baseline"] = (n, lambda: run_glt(p, n, readout_fn=alt))
    if "tl" not in skip:
        contenders["tl"] = (n, lambda: run_tl(p, n))
    if "naive" not in skip:
        contenders["naive"] = (n_naive, lambda: run_naive(p, n_naive))
    if "gemm" not in skip:
        contenders["gemm"] = (n, make_gemm(p, n, torch.float32))
    if device.type == "cuda" and "gemm_bf16" not in skip:
        contenders["gemm_bf16"] = (n, make_gemm(p, n, torch.bfloat16))

    print(f"# glt read-out benchmark: {p.label}, device {device}, {n_layer} layers x "
          f"d_model {u.d_model} x d_vocab {u.d_vocab}, {n} tokens (naive {n_naive})")
    print(f"# torch {torch.__version__}, intra-op threads {torch.get_num_threads()}, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cpus, setup {setup_s:.1f} s")
    with torch.no_grad():
        for _, fn in contenders.values():  # warm-up
            fn()
            _sync(device)
        times: dict[str, list[float]] = {k: [] for k in contenders}
        cpu: dict[str, list[float]] = {k: [] for k in contenders}
        for r in range(args.repeats):
            order = list(contenders)
            order = order[r % len(order):] + order[: r % len(order)]
            for name in order:
                _, fn = contenders[name]
                _sync(device)
                t, c = time.perf_counter(), time.process_time()
                fn()
                _sync(device)
                times[name].append(time.perf_counter() - t)
                cpu[name].append(time.process_time() - c)
        _pin_malloc()  # after timing: the pinned threshold makes every temporary fault its pages in
        mem: dict[str, int] = {}
        for name, (_, fn) in contenders.items():
            mem[name] = peak_extra_memory(fn, device)
        mem_tokens = [int(s) for s in args.memory_tokens.split(",")] if args.memory_tokens \
            else sorted({max(1, n // 4), n})
        glt_mem = {}
        if "glt" in contenders:
            for m in mem_tokens:
                glt_mem[m] = peak_extra_memory(lambda m=m: run_glt(p, m, **kw), device)
    load_after = os.getloadavg()[0]

    flop_per_token = 2.0 * n_layer * u.d_model * u.d_vocab
    res = {"label": p.label, "device": str(device), "tokens": n, "naive_tokens": n_naive,
           "n_layer": n_layer, "d_model": u.d_model, "d_vocab": u.d_vocab,
           "threads": torch.get_num_threads(), "repeats": args.repeats,
           "load_average_after": load_after, "contenders": {}}
    roof = "gemm" if "gemm" in times else None
    for name, ts in times.items():
        ntok = contenders[name][0]
        med = statistics.median(ts)
        res["contenders"][name] = {
            "tokens": ntok, "seconds": ts, "median_s": med, "tokens_per_s": ntok / med,
            "gflops": flop_per_token * ntok / med / 1e9, "peak_extra_mb": mem[name] / 2**20,
            "cpu_seconds": cpu[name], "tokens_per_cpu_s": ntok / statistics.median(cpu[name]),
        }
    if glt_mem:
        res["glt_peak_extra_mb_by_tokens"] = {k: v / 2**20 for k, v in glt_mem.items()}

    # per-round ratios (same round, same machine state), then their median
    def ratio(a: str, b: str, clock: dict | None = None) -> float | None:
        clock = times if clock is None else clock
        if a not in clock or b not in clock:
            return None
        na, nb = contenders[a][0], contenders[b][0]
        rs = [(na / ta) / (nb / tb) for ta, tb in zip(clock[a], clock[b], strict=True)]
        return statistics.median(rs)

    pairs = [("glt", "gemm"), ("glt", "tl"), ("glt", "naive"), ("tl", "gemm"), ("naive", "gemm"),
             ("baseline", "gemm"), ("glt", "baseline"), ("gemm_bf16", "gemm"), ("glt", "gemm_bf16")]
    res["ratios"] = {f"{a}/{b}": ratio(a, b) for a, b in pairs if ratio(a, b) is not None}
    res["cpu_time_ratios"] = {f"{a}/{b}": ratio(a, b, cpu) for a, b in pairs
                              if ratio(a, b, cpu) is not None}

    print(f"{'contender':<10} {'tokens':>6} {'median s':>9} {'tokens/s':>9} {'GFLOP/s':>8} "
          f"{'x roofline':>10} {'tok/cpu-s':>10} {'peak extra MB':>14}")
    for name, c in res["contenders"].items():
        share = ratio(name, roof) if roof else None
        print(f"{name:<10} {c['tokens']:>6} {c['median_s']:>9.3f} {c['tokens_per_s']:>9.2f} "
              f"{c['gflops']:>8.1f} {share if share is not None else float('nan'):>10.3f} "
              f"{c['tokens_per_cpu_s']:>10.2f} {c['peak_extra_mb']:>14.1f}")
    print("ratios of tokens/s, wall clock | CPU time (median of per-round ratios):")
    for k, v in res["ratios"].items():
        print(f"  {k:<16} {v:.3f} | {res['cpu_time_ratios'][k]:.3f}")
    if glt_mem:
        print("glt peak extra memory by tokens read: "
              + ", ".join(f"{k}: {v / 2**20:.1f} MB" for k, v in glt_mem.items()))
    print(f"# load average after: {load_after:.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(render_markdown([res]))
    return res


if __name__ == "__main__":
    main(sys.argv[1:])
