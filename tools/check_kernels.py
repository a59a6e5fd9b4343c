"""Rerun the numeric tests under other CPUs' kernels and other thread counts, before changing a numeric
test or a figure in the docs.

    python -m tools.check_kernels            # the default matrix: 4 settings, about 4 x 3 min on 2 cores
    python -m tools.check_kernels --full     # every kernel x torch x thread combination this CPU can run
    python -m tools.check_kernels --all      # the whole suite instead of the numeric tests
    python -m tools.check_kernels -- -k beam # anything after -- goes to pytest

Why: a bound that was measured on one machine and then asserted fails on the next one (issue 24: the LM
head agreed with transformers to 1.43e-5 on Haswell kernels, 1.23e-5 on Nehalem's, against an asserted
1e-5). A numeric test must check a bound that holds on any IEEE-754 machine (the ladder of
minipegx.tolerances, or a bound derived the same way), so it must pass under every setting below.

What it varies, each through the library's own documented switch, in the child processes only:
  - NumPy's OpenBLAS kernels: OPENBLAS_CORETYPE (Nehalem: SSE only; Sandybridge: AVX; Haswell: AVX2;
    SkylakeX: AVX-512, only where the CPU has it). OPENBLAS_L2_SIZE is left as the machine sets it.
  - torch's kernels: ATEN_CPU_CAPABILITY=default (portable, no SIMD dispatch) or avx2, and MKL held to an
    older instruction set (MKL_ENABLE_INSTRUCTIONS=SSE4_2 / AVX / AVX2).
  - threads: 1 or 2 (OMP_NUM_THREADS, OPENBLAS_NUM_THREADS, MKL_NUM_THREADS), which changes how GEMMs
    are split and so the order of their sums.
CI and the test suite never set these variables: they leave them as the machine sets them (some machines
set OPENBLAS_CORETYPE on purpose). This script is for contributors, outside CI.
"""

from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# The tests that compare floating-point numbers: parity, precision, docs prose, teaching, the notebooks'
# asserts (nbmake runs them), the course checker's cases, generation and the demo models' claims.
NUMERIC_TESTS = ["tests/test_parity.py", "tests/test_parity_tool.py", "tests/test_goldens.py",
                 "tests/test_generate.py", "tests/test_precision.py", "tests/test_docs_prose.py",
                 "tests/test_teaching.py", "tests/test_demo_model.py", "tests/test_course.py",
                 "tests/test_views.py", "tests/test_viz.py", "tests/test_ablate.py", "tests/test_cli.py",
                 "tests/test_near_ties.py",
                 "notebooks"]

# OpenBLAS core types, oldest first, with the CPU flag each needs.
OPENBLAS_KERNELS = {"Nehalem": "sse4_2", "Sandybridge": "avx", "Haswell": "avx2", "SkylakeX": "avx512f"}
# torch: the portable kernels with MKL on SSE4.2 (an old CPU), or AVX2 dispatch with MKL on AVX2.
TORCH_KERNELS = {"portable": {"ATEN_CPU_CAPABILITY": "default", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2"},
                 "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}}
THREADS = (1, 2)
# The default matrix: every OpenBLAS kernel once, both torch kernel sets, both thread counts.
DEFAULT = [("Nehalem", "portable", 1), ("Sandybridge", "portable", 2), ("Haswell", "avx2", 1),
           ("SkylakeX", "avx2", 2)]


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    return set(line.partition(":")[2].split())


def runnable(kernel: str, flags: set[str]) -> bool:
    """An OpenBLAS core type whose instructions this CPU lacks would crash (SIGILL): skip it, and say so."""
    return not flags or OPENBLAS_KERNELS[kernel] in flags


def environment(kernel: str, torch_kernels: str, threads: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(TORCH_KERNELS[torch_kernels])
    env["OPENBLAS_CORETYPE"] = kernel
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[name] = str(threads)
    return env


def run(setting, paths, extra, log_dir: Path) -> tuple[int, str, float]:
    kernel, torch_kernels, threads = setting
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *paths, *extra]
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, env=environment(*setting), capture_output=True, text=True)
    log = log_dir / f"{kernel}-{torch_kernels}-{threads}thread.log"
    log.write_text(done.stdout + done.stderr)
    lines = (done.stdout + done.stderr).strip().splitlines()
    summary = next((ln for ln in reversed(lines) if " passed" in ln or " failed" in ln or " error" in ln),
                   lines[-1] if lines else "(no output)")
    if done.returncode:
        failures = [ln for ln in lines if ln.startswith(("FAILED", "ERROR"))]
        summary += "".join(f"\n      {ln}" for ln in failures) + f"\n      whole log: {log}"
    return done.returncode, summary, time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="every kernel x torch kernels x threads combination")
    parser.add_argument("--all", action="store_true", help="the whole suite, not only the numeric tests")
    parser.add_argument("--logs", type=Path, default=None, help="folder for each setting's pytest log "
                        "(default: a new temporary folder)")
    parser.add_argument("pytest_args", nargs="*", help="after --: passed to pytest")
    args = parser.parse_args(argv)

    flags = cpu_flags()
    matrix = list(itertools.product(OPENBLAS_KERNELS, TORCH_KERNELS, THREADS)) if args.full else DEFAULT
    skipped = [s for s in matrix if not runnable(s[0], flags)]
    matrix = [s for s in matrix if runnable(s[0], flags)]
    paths = [] if args.all else NUMERIC_TESTS
    for s in skipped:
        print(f"not run: OpenBLAS {s[0]} needs {OPENBLAS_KERNELS[s[0]]}, which this CPU lacks")
    log_dir = args.logs or Path(tempfile.mkdtemp(prefix="check_kernels-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    print(f"logs: {log_dir}")
    failed = 0
    for setting in matrix:
        code, summary, seconds = run(setting, paths, args.pytest_args, log_dir)
        failed += bool(code)
        kernel, torch_kernels, threads = setting
        print(f"{'FAIL' if code else 'ok  '}  OpenBLAS {kernel:<11} torch {torch_kernels:<8} threads {threads}"
              f"  {seconds:5.0f} s  {summary}", flush=True)
    print(f"{len(matrix) - failed} of {len(matrix)} settings passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
