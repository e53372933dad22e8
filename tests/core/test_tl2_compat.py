"""TransformerLens 2.x: the core tests in a second environment with HookedTransformer.

TransformerLens 2.x and 4.x cannot share one environment (2.x needs transformers 4 and
numpy < 2), so this test builds (once, then reuses) a virtual environment with
``transformer-lens<3`` and runs the core unit tests there, where the tiny models are random-weight
``HookedTransformer``s built from configs.
"""

import hashlib
import os
import sys
from pathlib import Path

import pytest

from tests.helpers import run_bounded

ROOT = Path(__file__).resolve().parents[2]
REQS = [
    "torch==2.13.0",
    "transformer-lens<3",
    "datasets<3",
    "pyarrow<18",
    "einops",
    "jaxtyping",
    "beartype",
    "platformdirs",
    "safetensors",
    "tqdm",
    "pandas",
    "matplotlib",
    "pytest",
    "hypothesis",
]
CORE = ["tests/core/test_capture.py", "tests/lenses/test_lens.py", "tests/decoding/test_readout.py",
        "tests/core/test_errors.py", "tests/core/test_check.py",
        "tests/lenses/fit/test_jacobian_fit.py"]  # glt's Jacobian estimator on a HookedTransformer


def _venv() -> Path:
    venv = Path(os.environ.get("GLT_TL2_VENV", ROOT / ".venv-tl2"))
    stamp = venv / "glt-reqs.txt"
    want = hashlib.sha256("\n".join(REQS).encode()).hexdigest()
    if stamp.is_file() and stamp.read_text() == want:
        return venv
    run_bounded([sys.executable, "-m", "venv", "--clear", venv], what="creating the TL 2.x virtual environment",
                timeout=300, check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    run_bounded(pip + [REQS[0]], what="pip installing torch into the TL 2.x environment", timeout=1800, check=True)
    run_bounded(pip + REQS[1:], what="pip installing transformer-lens<3 and the test requirements", timeout=1800,
                check=True)
    run_bounded(pip + ["--no-deps", "-e", str(ROOT)], what="pip installing glt into the TL 2.x environment",
                timeout=600, check=True)
    stamp.write_text(want)
    return venv


@pytest.mark.tl2
def test_core_suite_passes_on_transformer_lens_2():
    venv = _venv()
    py = str(venv / "bin" / "python")
    version = run_bounded(
        [py, "-c", "from glt.core._models import tl_major_version as v; print(v())"],
        what="the TL 2.x environment reporting its TransformerLens version", timeout=300, check=True, cwd=ROOT,
    ).stdout.strip()
    assert version == "2"
    missing = [t for t in CORE if not (ROOT / t).is_file()]
    assert not missing, f"core test files moved or renamed: {missing}: update CORE"
    tests = CORE
    proc = run_bounded(
        [py, "-m", "pytest", "-q", "-o", "addopts=", "-p", "no:cacheprovider",
         "--jaxtyping-packages=glt,beartype.beartype", "-m", "not integration", *tests],
        what="the core tests under TransformerLens 2.x", timeout=1800,
        cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert " passed" in proc.stdout
