"""Flake hunt: run test tiers many times in a row, half of them under CPU load, and count.

Run it after changing the distributed code (glt/core/_distributed.py, glt/decoding/_sharded.py,
the torchrun tests) or anything the integration tier exercises::

    python tests/flake_hunt.py                       # distributed + integration, 20 runs each
    python tests/flake_hunt.py --tiers distributed --runs 6
    python tests/flake_hunt.py --readme 3            # also the README test command, fresh clones

Each run is one ``python -m pytest -m <tier>`` in a fresh process (``CI=true``, so hypothesis
draws the examples CI draws). Every second run starts a load generator first: one busy process
per CPU core, each stopped after the run (and each ending by itself after ``--load-limit``
seconds should this script die), so the tier meets the scheduling delays of a shared CI machine.
``--readme N`` clones the repository's committed HEAD into a temporary folder N times and runs
the README's test command there (in a fresh virtual environment; slow, needs the network or a
package cache). A run that exceeds ``--timeout`` seconds is killed and counted as a failure.

The script prints one row per tier: runs, passes, failures, timeouts, each split by load, and the
median seconds per run; the logs of failing runs are kept under ``--logs`` (default a temporary
folder). Exit status 1 if any run failed. A failure is a bug to fix at its cause: a bounded wait
that names what it waited for (tests/helpers.py ``run_bounded``) says where to look.
"""

import argparse
import multiprocessing
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _spin(limit_s: float) -> None:
    end = time.monotonic() + limit_s
    x = 0
    while time.monotonic() < end:
        x = (x * 1103515245 + 12345) % 2**31


class Load:
    """One busy process per core for the duration of ``with`` (each also stops after limit_s)."""

    def __init__(self, n: int, limit_s: float):
        self.n, self.limit_s, self.procs = n, limit_s, []

    def __enter__(self) -> "Load":
        for _ in range(self.n):
            p = multiprocessing.Process(target=_spin, args=(self.limit_s,), daemon=True)
            p.start()
            self.procs.append(p)
        return self

    def __exit__(self, *exc) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
                p.join(timeout=10)


def run_once(argv: list[str], cwd: Path, timeout: float, log: Path) -> tuple[str, float]:
    """Run ``argv``; return ("pass" | "fail" | "timeout", seconds) and keep its output in ``log``."""
    env = {**os.environ, "CI": "true"}
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        try:
            rc = subprocess.run(argv, cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                timeout=timeout).returncode
            status = "pass" if rc == 0 else "fail"
        except subprocess.TimeoutExpired:
            status = "timeout"
    return status, time.perf_counter() - t0


def readme_command() -> str:
    block = (ROOT / "README.md").read_text().split("## Run the tests", 1)[1]
    return re.search(r"```bash\n(.+?)\n```", block, re.S).group(1).strip()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tiers", default="distributed,integration",
                    help="comma-separated pytest markers to run (default: distributed,integration)")
    ap.add_argument("--runs", type=int, default=20, help="runs per tier (default 20; half under load)")
    ap.add_argument("--readme", type=int, default=0, help="also run the README test command N times from fresh clones")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds before a run counts as a timeout")
    ap.add_argument("--load-limit", type=float, default=3600, help="seconds after which a load process stops itself")
    ap.add_argument("--cores", type=int, default=os.cpu_count() or 2, help="busy processes under load")
    ap.add_argument("--logs", default=None, help="folder for the logs of failing runs")
    ap.add_argument("--pytest-args", default="-q -p no:randomly", help="extra pytest arguments")
    args = ap.parse_args(argv)
    logs = Path(args.logs or tempfile.mkdtemp(prefix="glt-flake-hunt-"))
    logs.mkdir(parents=True, exist_ok=True)

    jobs: list[tuple[str, list[str], Path]] = [
        (tier, [sys.executable, "-m", "pytest", "-m", tier, *args.pytest_args.split()], ROOT)
        for tier in args.tiers.split(",") if tier
    ]
    results: dict[str, list[tuple[bool, str, float]]] = {}
    for name, cmd, cwd in jobs:
        for i in range(args.runs):
            loaded = i % 2 == 1
            log = logs / f"{name}-{i:02d}.log"
            if loaded:
                with Load(args.cores, args.load_limit):
                    status, secs = run_once(cmd, cwd, args.timeout, log)
            else:
                status, secs = run_once(cmd, cwd, args.timeout, log)
            results.setdefault(name, []).append((loaded, status, secs))
            if status == "pass":
                log.unlink()
            print(f"{name} run {i + 1}/{args.runs} ({'load' if loaded else 'idle'}): {status} in {secs:.0f} s"
                  + ("" if status == "pass" else f" (log {log})"), flush=True)
    for i in range(args.readme):
        clone = Path(tempfile.mkdtemp(prefix="glt-fresh-clone-"))
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone / "glt")], check=True, timeout=600)
        cmd = ["bash", "-c", f"python3 -m venv .venv && . .venv/bin/activate && {readme_command()}"]
        log = logs / f"readme-{i:02d}.log"
        status, secs = run_once(cmd, clone / "glt", args.timeout * 4, log)
        results.setdefault("readme", []).append((False, status, secs))
        print(f"readme run {i + 1}/{args.readme}: {status} in {secs:.0f} s", flush=True)

    print(f"\n{'tier':<14}{'runs':>5}{'pass':>6}{'fail':>6}{'timeout':>9}{'fail idle/load':>16}{'median s':>10}")
    bad = 0
    for name, rows in results.items():
        n_fail = sum(s == "fail" for _, s, _ in rows)
        n_to = sum(s == "timeout" for _, s, _ in rows)
        split = f"{sum(s != 'pass' for ld, s, _ in rows if not ld)}/{sum(s != 'pass' for ld, s, _ in rows if ld)}"
        med = statistics.median(t for *_, t in rows)
        print(f"{name:<14}{len(rows):>5}{len(rows) - n_fail - n_to:>6}{n_fail:>6}{n_to:>9}{split:>16}{med:>10.0f}")
        bad += n_fail + n_to
    print(f"logs of failing runs: {logs}" if bad else "no failures")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
