"""Memory stays flat: a long study's peak RSS stays within a fixed bound of a short one's.

The CI-sized version of ``benchmarks/bench_memory.py`` (issue 8, item 4): guess-then-refine and
a streaming read-out over 200 and 2,000 synthetic short prompts on the tiny llama, each size in a
fresh subprocess, peak RSS from ``resource.getrusage``. Guess-then-refine keeps per-position
result arrays by design (about 0.4 KB per read position at peak for the tiny model, i.e. ~7 MB
for 2,000 prompts); the streaming read-out keeps only the tokenised inputs (~3 MB). A pipeline
that kept residual stacks, read-out tiles or hook caches per batch would grow by far more.
Memory is measured, never time.
"""

import importlib.util
from pathlib import Path

import pytest

from tests.helpers import make_tiny_folder

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_memory.py"
BOUND_MB = 64  # growth allowed from 200 to 2,000 prompts (measured: ~7 MB gtr, ~3 MB readout)


def _bench():
    spec = importlib.util.spec_from_file_location("bench_memory", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("pipeline", ["gtr", "readout"])
def test_peak_memory_does_not_grow_with_the_number_of_prompts(tiny_root, pipeline):
    bench = _bench()
    folder = str(make_tiny_folder("llama", tiny_root))
    small = bench.measure(folder, 200, pipeline, batch_size=128)
    large = bench.measure(folder, 2000, pipeline, batch_size=128)
    assert large["positions"] > 10 * small["positions"]
    growth = large["peak_mb"] - small["peak_mb"]
    assert growth < BOUND_MB, f"{pipeline}: peak {small['peak_mb']} MB -> {large['peak_mb']} MB"


def test_prompts_are_deterministic_and_short():
    bench = _bench()
    a, b = bench.prompts(50), bench.prompts(50)
    assert a == b and all(4 <= len(t.split()) <= 12 for t in a)
