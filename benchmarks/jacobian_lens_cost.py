"""What fitting a Jacobian lens costs on this machine, and how it grows with d_model and sequence length.

    python benchmarks/jacobian_lens_cost.py [--seq 64] [--rows 48] [--json results/jacobian_lens_cost.json]

glt's estimator (`glt.lenses.fit._jacobian.prompt_jacobian`) costs, per text, one forward pass of the
text replicated ``dim_batch`` times plus ``ceil(d_model / dim_batch)`` backward passes. Timing a
whole text of the default model takes several minutes on 2 CPU cores, so the script times the
same text computing no row (the forward pass alone) and ``--rows`` output rows (one backward pass
per ``dim_batch`` rows): ``per_pass = (time(rows) - forward) / passes``, and the full text costs
``forward + ceil(d_model / dim_batch) * per_pass``. Both CPU seconds (process time: robust when
other jobs share the cores) and wall seconds are printed, with the load average.

1. the default model (Gemma 3 270M: 18 layers, d_model 640) at ``--seq`` and ``--seq / 2`` tokens;
2. two random Llama-shaped models (4 layers, d_model 256 and 512, MLP 4x) at ``--seq / 2`` and
   ``--seq`` tokens: the growth with d_model (at most ``d_model^3``: ``d_model / dim_batch`` passes
   of at most ``~d_model^2`` work per token each; small models pay fixed per-op costs instead);
3. a projection: CPU hours for N texts of 128 tokens (the reference implementation's length).
"""

import argparse
import json
import math
import os
import tempfile
import time
from pathlib import Path

import torch

import glt
from glt.core._io import write_json
from glt.core._models import _resolve
from glt.lenses.fit._jacobian import _frozen, prompt_jacobian

DIM_BATCH = 8
SMALL = (256, 512)  # d_model of the random models: large enough that compute, not per-op overhead, dominates


def clock(fn):
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def per_text(model, ids, rows: int, repeats: int = 1) -> dict:
    """Time ``rows`` output rows of one text (all residuals as sources); extrapolate to d_model rows."""
    d, n = int(model.cfg.d_model), int(model.cfg.n_layers)
    rows = (0, rows)  # the forward pass alone, then with rows
    passes = [math.ceil(r / DIM_BATCH) for r in rows]

    def run(r: int) -> None:
        prompt_jacobian(model, ids, list(range(n)), dim_batch=DIM_BATCH, skip_first_positions=16, rows=range(r))

    with _frozen(model):
        run(DIM_BATCH)  # warm-up: first calls allocate and build kernels
        runs = [min(clock(lambda r=r: run(r)) for _ in range(repeats)) for r in rows]  # min: least disturbed
    full = math.ceil(d / DIM_BATCH)
    out = {"d_model": d, "n_layers": n, "tokens": len(ids), "passes_full": full, "rows_timed": list(rows)}
    for k, name in ((0, "wall"), (1, "cpu")):
        t0, t1 = runs[0][k], runs[1][k]
        per_pass = (t1 - t0) / (passes[1] - passes[0])
        forward = t0
        out[f"{name}_per_pass_s"] = per_pass
        out[f"{name}_forward_s"] = forward
        out[f"{name}_per_text_s"] = forward + full * per_pass
    return out



def random_llama(d_model: int, root: Path):
    """A random Llama-shaped model (4 layers, 4 heads, MLP 4x) with the default model's tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

    folder = root / f"llama-{d_model}"
    cfg = LlamaConfig(vocab_size=1024, hidden_size=d_model, intermediate_size=4 * d_model, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512)
    torch.manual_seed(0)
    hf = AutoModelForCausalLM.from_config(cfg)
    hf.config.architectures = ["LlamaForCausalLM"]
    hf.save_pretrained(folder)
    AutoTokenizer.from_pretrained(str(_resolve("default")[1])).save_pretrained(folder)
    return glt.load_model(str(folder))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seq", type=int, default=64, help="tokens per text (default 64; also timed at half)")
    ap.add_argument("--rows", type=int, default=48, help="rows timed on the default model (default 48: 6 passes)")
    ap.add_argument("--repeats", type=int, default=1, help="timings per row count on the default model (min)")
    ap.add_argument("--skip-default", action="store_true", help="only the small random models")
    ap.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    args = ap.parse_args()
    print(f"torch threads {torch.get_num_threads()}, cpus {os.cpu_count()}, load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())} (wall times inflate when it exceeds the cores)")
    text = " ".join(glt.wikipedia_paragraphs("train", max_paragraphs=40))
    res: dict = {"load_average_start": os.getloadavg(), "dim_batch": DIM_BATCH}

    if not args.skip_default:
        model = glt.load_model()
        ids = glt.tokenize(model, [text], truncate=True)[0]
        res["default"] = {s: per_text(model, ids[:s], args.rows, repeats=args.repeats)
                          for s in (args.seq // 2, args.seq)}
        for s, r in res["default"].items():
            print(f"default model, {s} tokens: {r['cpu_per_text_s']:.0f} CPU s / text "
                  f"({r['cpu_forward_s']:.1f} forward + {r['passes_full']} x {r['cpu_per_pass_s']:.2f} backward); "
                  f"wall {r['wall_per_text_s']:.0f} s")
        lo, hi = res["default"][args.seq // 2], res["default"][args.seq]
        res["seq_ratio"] = hi["cpu_per_text_s"] / lo["cpu_per_text_s"]
        print(f"sequence length x2 ({args.seq // 2} -> {args.seq} tokens): CPU time x{res['seq_ratio']:.2f}")
        del model

    with tempfile.TemporaryDirectory() as tmp:
        small = {}
        for d in SMALL:
            model = random_llama(d, Path(tmp))
            ids = glt.tokenize(model, [text], truncate=True)[0]
            small[d] = {s: per_text(model, [i % 1024 for i in ids[:s]], d, repeats=3)
                        for s in (args.seq // 2, args.seq)}
            for s, r in small[d].items():
                print(f"random llama d_model {d}, 4 layers, {s} tokens: {r['cpu_per_text_s']:.2f} CPU s / text "
                      f"({r['cpu_forward_s']:.2f} forward + {r['passes_full']} x {r['cpu_per_pass_s']:.3f} backward); "
                      f"wall {r['wall_per_text_s']:.2f} s")
        res["small"] = small
    a, b = small[SMALL[0]][args.seq], small[SMALL[1]][args.seq]
    res["d_model_ratio"] = b["cpu_per_text_s"] / a["cpu_per_text_s"]
    res["d_model_backward_ratio"] = b["passes_full"] * b["cpu_per_pass_s"] / (a["passes_full"] * a["cpu_per_pass_s"])
    res["small_seq_ratio"] = b["cpu_per_text_s"] / small[SMALL[1]][args.seq // 2]["cpu_per_text_s"]
    print(f"d_model x2 ({SMALL[0]} -> {SMALL[1]}): CPU time per text x{res['d_model_ratio']:.2f}, its backward passes "
          f"x{res['d_model_backward_ratio']:.2f} (twice the passes, each ~d_model^2 per token at most: <= x8); "
          f"sequence x2 at d_model {SMALL[1]}: x{res['small_seq_ratio']:.2f}")

    if "default" in res:
        per128 = res["default"][args.seq]["cpu_per_text_s"] * (128 / args.seq) ** math.log2(res["seq_ratio"])
        res["default_cpu_s_per_text_128"] = per128
        print(f"projection, default model, 128-token texts: {per128:.0f} CPU s / text; "
              + ", ".join(f"{n} texts {n * per128 / 3600:.1f} CPU h ({n * per128 / 3600 / 2:.1f} h on 2 idle cores)"
                          for n in (50, 100, 200, 500, 1000)))
    res["load_average_end"] = os.getloadavg()
    if args.json:
        write_json(args.json, res)
        print(f"wrote {args.json}")
    print(json.dumps({k: v for k, v in res.items() if k.endswith("ratio")}, indent=1))


if __name__ == "__main__":
    main()
