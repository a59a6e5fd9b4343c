"""The benchmark's table: each figure for minipegx and transformers, their ratio, and the figure read
against the machine's limit measured in the same run (benchmarks/limits.py).

One row per figure and thread count: name, unit, minipegx, transformers, ratio (minipegx / transformers,
below 1: minipegx faster or smaller), and where a limit applies `of_limit` for each library: the encoder's
GEMM limit over its time (a share, 1 = as fast as its products at the GEMM rate allow) or a beam step's
time over its memory floor (a multiple, 1 = as fast as reading its bytes allows). The limit is NumPy's
rate measured in minipegx's process right after that measurement (the issue's definition: NumPy's
OpenBLAS), the same for both libraries' rows; the "share of best BLAS" rows use the best rate of the
run's first measurement with either library's BLAS.
"""

from __future__ import annotations

import os
import platform
import sys


def machine(args, threads):
    import numpy as np

    from benchmarks.limits import cpu_info

    info = dict(platform=platform.platform(), python=platform.python_version(), cpus=os.cpu_count(),
                threads=threads[0] if len(threads) == 1 else threads, numpy=np.__version__,
                backend=args.backend, device=args.device, **cpu_info())
    try:
        cfg = np.show_config(mode="dicts")
        info["numpy_blas"] = f"{cfg['Build Dependencies']['blas']['name']} {cfg['Build Dependencies']['blas']['version']}"
    except Exception:  # noqa: BLE001 - only informative
        pass
    try:
        import torch
        import transformers

        info.update(torch=torch.__version__, transformers=transformers.__version__)
        if args.device == "cuda":
            info["gpu"] = torch.cuda.get_device_name(0)
    except Exception:  # noqa: BLE001
        pass
    return info


def ratio(a, b):
    return None if a is None or b is None or not b else a / b


def gib(x):
    return None if x is None else x / 2**30


def summarize(results, config, encoder_flops, step_bytes):
    """The table rows, thread count after thread count."""
    rows = []
    for threads in sorted({r["threads"] for r in results}):
        rows += _rows(threads, [r for r in results if r["threads"] == threads], config, encoder_flops, step_bytes)
    return rows


def _rows(threads, results, config, encoder_flops, step_bytes):
    by = {(r["side"], r["task"], r["length"], r.get("dtype", "float32")): r for r in results}
    rows = []

    def row(name, unit, mine, theirs, limit=(None, None)):
        rows.append(dict(threads=threads, name=name, unit=unit, minipegx=mine, transformers=theirs,
                         ratio=ratio(mine, theirs), minipegx_of_limit=limit[0], transformers_of_limit=limit[1]))

    mb, tb = (next((r for r in results if r["side"] == s and r["task"] == "blas"), None)
              for s in ("minipegx", "transformers"))
    gemm = max(mb["gflops"], tb["gflops"]) if mb and tb else None         # the machine's fp32 GEMM rate
    bandwidth = max(mb["read_gbs"], tb["read_gbs"]) if mb and tb else None
    if mb and tb:
        row("BLAS matmul, encoder shapes", "GFLOP/s", mb["gflops"], tb["gflops"])
        row("read bandwidth, matrix-vector", "GB/s", mb["read_gbs"], tb["read_gbs"])
    for L in sorted({r["length"] for r in results if r["task"] == "encoder"}):
        m, t = by[("minipegx", "encoder", L, "float32")], by[("transformers", "encoder", L, "float32")]
        rate = m.get("gemm_gflops") or gemm       # NumPy's GEMM rate right after this encoder, else the run's best
        limit = encoder_flops(config, L) / rate / 1e9 if rate else None       # seconds at the GEMM rate
        share = (lambda s: ratio(limit, s)) if limit else (lambda s: None)
        row(f"encoder {L} tokens", "s", m["seconds"], t["seconds"], (share(m["seconds"]), share(t["seconds"])))
        row(f"encoder {L} tokens, first call", "s", m["first_call"], t["first_call"],
            (share(m["first_call"]), share(t["first_call"])))
        row(f"encoder {L} tokens", "GFLOP/s", m["gflops"], t["gflops"])
        row(f"encoder {L} tokens, GEMM rate for the limit", "GFLOP/s", rate, rate)
        if mb and tb:
            row(f"encoder {L} tokens, share of own BLAS", "fraction", m["gflops"] / mb["gflops"],
                t["gflops"] / tb["gflops"])
            row(f"encoder {L} tokens, share of best BLAS", "fraction", m["gflops"] / gemm, t["gflops"] / gemm)
        row(f"encoder {L} tokens, peak memory", "GiB", gib(m["peak_rss"] or m["maxrss_process"]),
            gib(t["peak_rss"] or t["maxrss_process"]))
        bf16 = by.get(("transformers", "encoder", L, "bfloat16"))
        if bf16:
            row(f"encoder {L} tokens, transformers in bfloat16", "s", m["seconds"], bf16["seconds"],
                (share(m["seconds"]), share(bf16["seconds"])))
    for L in sorted({r["length"] for r in results if r["task"] == "beam"}):
        m, t = by[("minipegx", "beam", L, "float32")], by[("transformers", "beam", L, "float32")]
        read = m.get("read_gbs") or bandwidth     # NumPy's read bandwidth right after this beam search, else the run's best
        floor = step_bytes(config, L, m["rows"], m["steps"]) / read / 1e9 if read else None
        over = (lambda s: ratio(s, floor)) if floor else (lambda s: None)
        row(f"beam search {L} tokens, total", "s", m["seconds"], t["seconds"])
        row(f"beam search {L} tokens, per decoding step", "s", m["per_step"], t["per_step"],
            (over(m["per_step"]), over(t["per_step"])))
        if floor:
            row(f"beam search {L} tokens, memory floor of a step", "s", floor, floor)
            row(f"beam search {L} tokens, read bandwidth for the floor", "GB/s", read, read)
        few = m.get("few_row_gbs")               # what BLAS gives [rows, M] @ [M, O]: the kernel's share of the gap
        if few:
            kernel = step_bytes(config, L, m["rows"], m["steps"]) / few / 1e9
            row(f"beam search {L} tokens, the step's bytes at the few-row product rate", "s", kernel, kernel,
                (ratio(kernel, floor), ratio(kernel, floor)))
            row(f"beam search {L} tokens, few-row product read rate", "GB/s", few, few)
        row(f"beam search {L} tokens, peak memory", "GiB", gib(m["peak_rss"] or m["maxrss_process"]),
            gib(t["peak_rss"] or t["maxrss_process"]))
        if m.get("device_peak_bytes") is not None:
            row(f"beam search {L} tokens, GPU memory", "GiB", gib(m["device_peak_bytes"]), gib(t["device_peak_bytes"]))
    return rows


def print_table(rows, file=sys.stdout):
    """The table as text; `of limit` is the share of the GEMM limit (encoder) or the multiple of the memory
    floor (beam step), minipegx / transformers."""
    def fmt(x):
        return "-" if x is None else f"{x:.3g}" if abs(x) < 1000 else f"{x:.0f}"

    w = max(len(r["name"]) for r in rows) + 2
    for threads in sorted({r["threads"] for r in rows}):
        print(f"\n{threads} thread{'s' if threads > 1 else ''}", file=file)
        print(f"{'':{w}} {'unit':9} {'minipegx':>10} {'transformers':>13} {'ratio':>7} {'of limit':>13}", file=file)
        for r in rows:
            if r["threads"] != threads:
                continue
            lim = ("" if r["minipegx_of_limit"] is None and r["transformers_of_limit"] is None else
                   f"{fmt(r['minipegx_of_limit'])} / {fmt(r['transformers_of_limit'])}")
            print(f"{r['name']:{w}} {r['unit']:9} {fmt(r['minipegx']):>10} {fmt(r['transformers']):>13} "
                  f"{fmt(r['ratio']):>7} {lim:>13}", file=file)
