"""Sharded read-outs: two gloo processes under torchrun merge to exactly the one-process result."""

import os
import sys
import textwrap
from dataclasses import fields

import pytest
import torch
from jaxtyping import TypeCheckError

import glt
from glt.core._distributed import all_gather_list, rank_and_world, shard_range
from glt.decoding._sharded import sharded_readout
from tests.helpers import make_tiny_folder, run_bounded

TEXTS = [
    "the capital of france is paris", "a river of the country", "he was in the city",
    "she has been to paris and the river", "they were not", "it is the capital",
    "the city of paris was the capital of france", "his country",
    "which river is in the city", "the",
]

WORKER = textwrap.dedent(
    """
    import json, os, sys
    import torch
    import torch.distributed as dist
    import glt
    from glt.decoding._sharded import sharded_readout

    folder, out, texts = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    model = glt.load_model(folder)
    targets = lambda stack, items: stack.tokens[:, :1] % 7
    r = sharded_readout(model, texts, batch_size=3, top_k=4, threads=1)
    t = sharded_readout(model, texts, batch_size=3, targets=targets, positions="last", threads=1)
    print(f"rank {dist.get_rank()} of {dist.get_world_size()} read {r.n_rows} rows")
    if dist.get_rank() == 1:
        torch.save({"default": vars(r), "targets": vars(t)}, out)
    try:
        sharded_readout(model, texts[:4] + [""] + texts[5:], batch_size=3, threads=1)
    except glt.GltError as err:
        print(f"rank {dist.get_rank()} refused: {err}")
    # leave together, then skip interpreter shutdown: CI once saw a rank abort (SIGABRT,
    # "terminate called without an active exception") after destroy_process_group
    dist.barrier()
    dist.destroy_process_group()
    print(f"rank {rank} finished", flush=True)
    os._exit(0)
    """
)


def _assert_identical(a: dict, b: glt.Readout) -> None:
    for f in fields(glt.Readout):
        got, want = a[f.name], getattr(b, f.name)
        if isinstance(want, torch.Tensor):
            assert torch.equal(got, want), f.name
        else:
            assert got == want, f.name


@pytest.mark.distributed
def test_two_gloo_processes_merge_to_the_single_process_readout(tiny_root, tmp_path):
    folder = make_tiny_folder("gemma3", tiny_root)
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    out = tmp_path / "merged.pt"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", "PYTHONUNBUFFERED": "1"}
    import json

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(script), str(folder), str(out), json.dumps(TEXTS)]
    done = run_bounded(cmd, what="two torchrun ranks reading out and merging", timeout=900, env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "rank 0 of 2 read" in done.stdout and "rank 1 of 2 read" in done.stdout
    assert "rank 0 finished" in done.stdout and "rank 1 finished" in done.stdout
    # the bad text sits in rank 0's shard; both ranks refuse instead of hanging
    assert done.stdout.count("refused: sharded read-out failed: rank 0:") == 2, done.stdout
    merged = torch.load(out, weights_only=False)

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = glt.load_model(str(folder))
        single = sharded_readout(model, TEXTS, batch_size=3, top_k=4, threads=1)
        targets = sharded_readout(model, TEXTS, batch_size=3, positions="last", threads=1,
                                  targets=lambda stack, items: stack.tokens[:, :1] % 7)
    finally:
        torch.set_num_threads(n)
    _assert_identical(merged["default"], single)
    _assert_identical(merged["targets"], targets)
    assert single.n_rows == sum(len(t.split()) + 1 for t in TEXTS)  # every token plus BOS
    # the single-process sharded read-out is the plain read-out of the same batches
    plain = [glt.readout(s, glt.LogitLens.from_model(model), top_k=4, threads=1)
             for s in glt.iter_residuals(model, TEXTS, batch_size=3)]
    joined = glt.Readout.concat(plain, batch_offsets=[0, 3, 6, 9])
    for name in ("ranks", "topk_ids", "targets", "batch_index", "pos_index"):
        assert torch.equal(getattr(joined, name), getattr(single, name)), name


@pytest.mark.parametrize("n,batch,world", [(10, 3, 2), (10, 3, 5), (3, 4, 2), (0, 2, 3), (7, 1, 7)])
def test_shards_are_contiguous_whole_batches_in_order(n, batch, world):
    shards = [shard_range(n, batch_size=batch, rank=r, world_size=world) for r in range(world)]
    assert [i for s in shards for i in s] == list(range(n))
    for s in shards:
        assert s.start % batch == 0 or s.start == n
    sizes = [-(-len(s) // batch) for s in shards]
    assert max(sizes) - min(sizes) <= 1


def test_without_a_process_group_everything_is_one_rank(tiny_llama):
    assert rank_and_world() == (0, 1)
    assert shard_range(5, batch_size=2) == range(0, 5)
    assert all_gather_list([1, 2]) == [1, 2]
    r = sharded_readout(tiny_llama, TEXTS[:3], batch_size=2)
    assert r.n_rows == sum(len(t.split()) + 1 for t in TEXTS[:3])  # words plus BOS


@pytest.mark.parametrize("call,match", [
    (lambda m: shard_range(-1), "n_items"),
    (lambda m: shard_range(5, batch_size=0), "batch_size"),
    (lambda m: shard_range(5, rank=2, world_size=2), "rank"),
    (lambda m: sharded_readout(m, [], batch_size=2), "non-empty"),
    (lambda m: sharded_readout(m, "a text", batch_size=2), "non-empty"),
    (lambda m: sharded_readout(m, ["a"], targets=torch.zeros(1)), "targets"),
    (lambda m: sharded_readout(m, ["the", ""], batch_size=1), "rank 0"),
])
def test_bad_arguments_raise_glterror(tiny_llama, call, match):
    """GltError; under pytest jaxtyping may refuse a wrongly *typed* argument first."""
    with pytest.raises((glt.GltError, TypeCheckError), match=match):
        call(tiny_llama)
