#!/usr/bin/env python
"""The device check: everything a session with a GPU should run, in one command, in under 8 minutes.

    python -m benchmarks.gpu_check                 # the gpu tests, then the benchmark, then one table
    python -m benchmarks.gpu_check --skip-tests    # the benchmark only

1. the `gpu` tests (tests/test_cupy.py: CuPy logits, attentions and beam-search ids against NumPy and the
   transformers goldens) and the stand-in suite (tests/test_cupy_standin.py), with pytest;
2. benchmarks/bench.py with minipegx on CuPy and transformers on CUDA, side by side, on the same GPU, at
   pegasus-x-base and -large shape, 4k and 16k tokens, float32 and float16: the encoder forward and a
   4-beam search of 16 forced new tokens (its time per decoding step and the GPU memory allocated at its
   peak, measured for both libraries as torch.cuda.max_memory_allocated counts it);
3. one table of every figure: minipegx, transformers and their ratio (below 1: minipegx faster/smaller).

TF32 is off on both sides (CuPy's default; transformers' matmuls in "highest" precision), as for parity.
Without CuPy, a GPU or torch with CUDA it says which is missing and exits with status 2: no figure is
printed that was not measured on a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SHAPES = ("base", "large")
DTYPES = ("float32", "float16")
LENGTHS = (4096, 16384)
PLAN = dict(beams=4, new_tokens=16)


def missing():
    """Why this machine cannot run the check ('' when it can). Run as `python -m benchmarks.gpu_check` from the
    repository (or with minipegx installed), so minipegx imports without editing sys.path."""
    from minipegx.backend import cupy_available

    if not cupy_available():
        return "CuPy with a CUDA GPU is not available (pip install 'minipegx[gpu]' on a machine with a GPU)"
    try:
        import torch
    except ImportError:
        return "torch is not installed (transformers runs beside minipegx)"
    if not torch.cuda.is_available():
        return "torch has no CUDA device (install a CUDA build of torch)"
    return ""


def run_tests():
    """The gpu tests and the stand-in suite; returns (passed, the last lines of pytest's summary)."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=-ra",
           "tests/test_cupy.py", "tests/test_cupy_standin.py"]
    env = dict(os.environ, CUPY_TF32="0")
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    return proc.returncode == 0, proc.stdout.strip().splitlines()[-1:] + proc.stderr.strip().splitlines()[-3:]


def run_bench(shape, dtype, ckpt, out, timeout):
    """One benchmark run (both libraries, grouped: one process each); returns its JSON report."""
    cmd = [sys.executable, "-m", "benchmarks.bench", "--backend", "cupy", "--device", "cuda", "--shape", shape,
           "--dtype", dtype, "--encoder-lengths", *map(str, LENGTHS), "--beam-lengths", *map(str, LENGTHS),
           "--beams", str(PLAN["beams"]), "--new-tokens", str(PLAN["new_tokens"]), "--repeat", "2",
           "--skip", "blas", "--grouped", "--checkpoint", ckpt, "--out", out, "--timeout", str(timeout)]
    env = dict(os.environ, CUPY_TF32="0", NVIDIA_TF32_OVERRIDE="0")
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, timeout=timeout)
    with open(out) as f:
        return json.load(f)


def table(reports):
    """One row per (shape, dtype, figure): [label, unit, minipegx, transformers, ratio]."""
    rows = []
    for (shape, dtype), report in reports.items():
        for r in report["table"]:
            if r["unit"] in ("s", "GiB"):
                rows.append([f"{shape} {dtype} {r['name']}", r["unit"], r["minipegx"], r["transformers"], r["ratio"]])
        for length, same in report.get("same_beam_search_ids", {}).items():
            rows.append([f"{shape} {dtype} beam search {length} tokens, same ids", "bool", same, None, None])
    return rows


def print_table(rows, file=sys.stdout):
    def fmt(x):
        if x is None:
            return "-"
        if isinstance(x, bool):
            return "yes" if x else "no"
        return f"{x:.3g}" if abs(x) < 1000 else f"{x:.0f}"

    w = max(len(r[0]) for r in rows) + 2
    print(f"{'':{w}} {'unit':5} {'minipegx':>10} {'transformers':>13} {'ratio':>7}", file=file)
    for name, unit, mine, theirs, ratio in rows:
        print(f"{name:{w}} {unit:5} {fmt(mine):>10} {fmt(theirs):>13} {fmt(ratio):>7}", file=file)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--skip-tests", action="store_true", help="run the benchmark only")
    ap.add_argument("--shapes", nargs="*", default=list(SHAPES), choices=SHAPES)
    ap.add_argument("--dtypes", nargs="*", default=list(DTYPES), choices=DTYPES)
    ap.add_argument("--out", default=os.path.join(HERE, "results", "gpu-check.json"))
    args = ap.parse_args(argv)

    why = missing()
    if why:
        print(f"gpu_check: cannot run here: {why}. No GPU figures were measured.", file=sys.stderr)
        return 2
    started = time.time()
    tests_ok, summary = (None, ["skipped"]) if args.skip_tests else run_tests()
    print("gpu tests:", "passed" if tests_ok else "skipped" if tests_ok is None else "FAILED", *summary, sep="\n  ")
    reports = {}
    with tempfile.TemporaryDirectory(prefix="minipegx-gpu-check-") as tmp:
        for shape in args.shapes:
            ckpt = os.path.join(tmp, shape)                # one random checkpoint per shape, both dtypes read it
            for dtype in args.dtypes:
                reports[(shape, dtype)] = run_bench(shape, dtype, ckpt, os.path.join(tmp, f"{shape}-{dtype}.json"),
                                                    timeout=300)
    rows = table(reports)
    print()
    print_table(rows)
    print(f"\n{time.time() - started:.0f} s in all")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(dict(tests_passed=tests_ok, tests_summary=summary, rows=rows,
                       reports={f"{s}-{d}": r for (s, d), r in reports.items()}), f, indent=1)
    print("written", args.out)
    return 0 if tests_ok in (True, None) else 1


if __name__ == "__main__":
    sys.exit(main())
