"""Data-parallel training under torchrun (gloo, 2 CPU processes) equals one process."""

import json
import os
import sys
import textwrap

import pytest
import torch

import glt
from glt.lenses._tuned import load_lens
from glt.lenses.fit._train import train_tuned_lens
from tests.helpers import make_tiny_folder, run_bounded
from tests.lenses.fit.test_train import TRAIN

# least squares on fewer rows than the data holds: the ranks must still fit one process's rows
SETTINGS = dict(max_tokens=300, tokens_per_step=100, least_squares_tokens=151, seed=4, row_chunk=16)

WORKER = textwrap.dedent(
    """
    import json, os, sys
    import torch
    import torch.distributed as dist
    import glt
    from glt.lenses.fit._train import train_tuned_lens

    folder, out, settings, texts = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4])
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    model = glt.load_model(folder)
    lens = train_tuned_lens(model, texts, progress=False, out=out, **settings)
    rows = lens.config["training"]["history"][-1]["rows"]
    print(f"rank {dist.get_rank()} of {dist.get_world_size()} done, rows {rows}")
    # leave together, then skip interpreter shutdown: CI once saw a rank abort (SIGABRT,
    # "terminate called without an active exception") after destroy_process_group
    dist.barrier()
    dist.destroy_process_group()
    print(f"rank {rank} finished", flush=True)
    os._exit(0)
    """
)


@pytest.mark.distributed
@pytest.mark.parametrize("optimizer", ["sgd", "linesearch"])
def test_two_process_gloo_training_equals_one_process(tiny_root, tmp_path, optimizer):
    settings = {**SETTINGS, "optimizer": optimizer}
    folder = make_tiny_folder("llama", tiny_root)
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(script), str(folder), str(tmp_path / "ddp"), json.dumps(settings), json.dumps(TRAIN)]
    done = run_bounded(cmd, what="two torchrun ranks training a lens", timeout=900, env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "rank 0 of 2 done" in done.stdout and "rank 1 of 2 done" in done.stdout
    assert "rank 0 finished" in done.stdout and "rank 1 finished" in done.stdout
    model = glt.load_model(str(folder))
    single = train_tuned_lens(model, TRAIN, progress=False, **settings)
    ddp = load_lens(tmp_path / "ddp", model)
    assert ddp.config["training"]["world_size"] == 2
    assert [h["rows"] for h in ddp.config["training"]["history"]] == [
        h["rows"] for h in single.config["training"]["history"]
    ]
    torch.testing.assert_close(ddp.weight, single.weight.detach(), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ddp.bias, single.bias.detach(), rtol=1e-4, atol=1e-5)


CLI_WORKER = textwrap.dedent(
    """
    import os, sys
    from glt.cli._main import main

    rc = main(sys.argv[1:])  # glt lens train: joins torchrun's group itself
    print(f"rank {os.environ['RANK']} finished with {rc}", flush=True)
    os._exit(rc)  # skip interpreter shutdown, as the other workers do
    """
)


@pytest.mark.distributed
def test_glt_lens_train_under_torchrun_equals_one_process(tiny_root, tmp_path):
    from glt.cli._lens import read_texts

    folder = make_tiny_folder("llama", tiny_root)
    (tmp_path / "train.txt").write_text("\n\n".join(TRAIN))
    script = tmp_path / "cli_worker.py"
    script.write_text(CLI_WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
           "lens", "train", "--model", str(folder), "--texts", str(tmp_path / "train.txt"), "--out",
           str(tmp_path / "ddp"), "--max-tokens", "300", "--tokens-per-step", "100", "--least-squares-tokens",
           "151", "--seed", "4", "--optimizer", "sgd", "--no-progress"]
    done = run_bounded(cmd, what="glt lens train on two torchrun ranks", timeout=900, env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "rank 0 finished with 0" in done.stdout and "rank 1 finished with 0" in done.stdout
    assert done.stdout.count("saved tuned lens") == 1  # rank 0 reports
    model = glt.load_model(str(folder))
    single = train_tuned_lens(model, read_texts(str(tmp_path / "train.txt"), None), progress=False,
                              max_tokens=300, tokens_per_step=100, least_squares_tokens=151, seed=4,
                              optimizer="sgd")
    ddp = load_lens(tmp_path / "ddp", model)
    assert ddp.config["training"]["world_size"] == 2
    torch.testing.assert_close(ddp.weight, single.weight.detach(), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ddp.bias, single.bias.detach(), rtol=1e-4, atol=1e-5)
