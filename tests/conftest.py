"""Shared fixtures: tiny random-weight models of each norm family, and the real default model.

Tiny models use distinct prime sizes (d_model 28 is not prime because RoPE needs even head
dims; vocab 101, 3 layers, context 67) so a swapped axis fails loudly.
"""

import os
import random
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, settings

import glt
from tests.helpers import load_tiny, run_bounded

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Hypothesis profiles. "ci" (chosen when CI=true) draws the same examples on every run, so a red CI
# run comes back when rerun and a green one says the same examples pass; it keeps no example
# database and prints the reproduction blob of any failure. "dev" (the default elsewhere) searches
# new examples on every run and replays earlier failures from the local .hypothesis database. No
# deadline in either: a loaded 2-core machine must not turn a slow example into a failure.
# HYPOTHESIS_PROFILE=ci|dev overrides the choice. A failing example found by a search belongs in
# the test as an explicit @example, so every profile keeps checking it.
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True, database=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", derandomize=False, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE")
                      or ("ci" if os.environ.get("CI", "").lower() in ("1", "true", "yes") else "dev"))


@pytest.fixture(autouse=True)
def _same_random_state_for_every_test():
    """Every test starts from one RNG state, so no result depends on which tests ran before."""
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tiny-models")


@pytest.fixture(scope="session", params=["gpt2", "llama", "gemma3"])
def tiny_model(request, tiny_root):
    """A tiny random model of each norm family (LayerNorm, RMSNorm, Gemma RMSNorm + soft-cap)."""
    return load_tiny(request.param, tiny_root)


@pytest.fixture(scope="session")
def tiny_llama(tiny_root):
    return load_tiny("llama", tiny_root)


@pytest.fixture(scope="session")
def default_model():
    """The real embedded Gemma 3 270M (integration tier)."""
    return glt.load_model("default")


@dataclass(frozen=True)
class DocsSite:
    """The docs site built by ``mkdocs build --strict``: its folder, the build's exit status and log."""

    path: Path
    returncode: int
    log: str
    executed: frozenset[str]  # notebooks this pytest run executed: their pages must show outputs


@pytest.fixture(scope="session")
def docs_site(tmp_path_factory, executed_notebooks) -> DocsSite:
    """The docs, built once per run for every test that reads them (mark those ``after_notebooks``,
    so that they run after the notebooks and the tutorial pages show this run's outputs)."""
    site = tmp_path_factory.mktemp("docs") / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = run_bounded([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                       what="the strict mkdocs build", timeout=1800, cwd=Path(__file__).resolve().parents[1], env=env)
    return DocsSite(site, proc.returncode, proc.stdout + proc.stderr, frozenset(executed_notebooks))
