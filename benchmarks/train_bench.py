#!/usr/bin/env python
"""One training step, minipegx beside torch + transformers, in one run, on one machine, with one thread count.

    python -m benchmarks.train_bench --only demo            # the demo model's shape: about a minute on 2 cores
    python -m benchmarks.train_bench                        # demo, then pegasus-x-base at 4k and 16k tokens
    python -m benchmarks.train_bench --backend cupy --device cuda      # on a GPU (CuPy beside torch CUDA)

A step is what fine-tuning does: the loss and every gradient, clipping at global norm 1.0 and one AdamW update
(minipegx.training.train_step against model(...).loss.backward(), clip_grad_norm_ and torch.optim.AdamW). The
weights are random (benchmarks/random_checkpoint.py, the reference's init) in float32, dropout 0, the labels
S random tokens. minipegx runs with and without recomputation (each encoder and decoder layer keeps only its
input in the forward and recomputes itself in the backward); torch eagerly, keeping every activation.

Each configuration runs in its own fresh process (this file with --worker; the thread count set in its
environment before NumPy or torch loads, as benchmarks/bench.py does), so one library's allocations never
count in the other's memory. One warm-up step (it also allocates AdamW's moments), then the peak of resident
memory is reset and `--repeat` steps are timed: peak memory holds the weights, the two moments and everything a
step allocates. On a GPU the peak is torch's max_memory_allocated and CuPy's memory pool size.

Each worker runs under a cap on its address space (--memory-cap, default: the machine's memory less 2 GiB), so a
configuration that does not fit fails with its own out-of-memory error, recorded as a row ("out of memory"), rather
than the kernel's OOM killer ending some other process (pegasus-x-base at 16k tokens does not fit in 24 GB for
torch eager, which keeps every activation).

Results: a table of ratios (minipegx / torch, below 1 is faster or smaller) and benchmarks/results/train-<name>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# The bundled demo models' shape (tools/train_demo.py MODEL, vocabulary of the first one).
DEMO = dict(vocab_size=784, d_model=128, encoder_layers=3, decoder_layers=2, encoder_attention_heads=4,
            decoder_attention_heads=4, encoder_ffn_dim=256, decoder_ffn_dim=512, block_size=64, num_global_tokens=16)
# name: (shape, batch rows B, input tokens T, label tokens S). The demo row is one of its recipe's batches
# (8,000 tokens of 2,000-token documents); base is one document per step, as a 16k-token fine-tune runs.
CASES = {"demo": ("demo", 4, 2000, 64), "base-4k": ("base", 1, 4096, 128), "base-16k": ("base", 1, 16384, 128),
         "toy": ("toy", 2, 64, 8)}          # toy: the smoke test's, seconds; not run by default
DEFAULT = ("demo", "base-4k", "base-16k")
CONFIGS = (("torch", False), ("torch", True), ("minipegx", False), ("minipegx", True))   # (side, recompute)


def config_name(side, recompute):
    return side + ("-recompute" if recompute else "")


def write_checkpoint(shape, directory):
    from benchmarks.bench import COMMON, SHAPES
    from benchmarks.random_checkpoint import write_random_checkpoint

    config = {**COMMON, **(DEMO if shape == "demo" else SHAPES[shape])}
    write_random_checkpoint(directory, config, seed=0)
    return config


# ============================================================================== worker side
def inputs(B, T, S, vocab, seed=0):
    import numpy as np

    rng = np.random.default_rng(seed)
    ids = rng.integers(5, vocab, size=(B, T))                       # [B, T]
    mask = np.ones((B, T), np.int64)                                # [B, T]
    if B > 1:                                                       # the last row padded by a tenth
        mask[-1, T - T // 10:] = 0
        ids[-1, T - T // 10:] = 0
    labels = rng.integers(5, vocab, size=(B, S))                    # [B, S]
    return ids, mask, labels


def out_of_memory(error) -> bool:
    """NumPy's MemoryError, or torch's CPU allocator refusing (a RuntimeError naming the allocation)."""
    return isinstance(error, MemoryError) or "can't allocate memory" in str(error) or "out of memory" in str(error)


def worker(job):
    """One configuration's steps in this process -> its figures, or {"error": "out of memory", ...}."""
    from benchmarks.bench import memory_now

    if job.get("memory_cap"):
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (job["memory_cap"], job["memory_cap"]))
    try:
        return run_steps(job)
    except Exception as error:  # noqa: BLE001 - only running out of memory is a result; the rest re-raised
        if not out_of_memory(error):
            raise
        rss, hwm = memory_now()
        return dict(error="out of memory", detail=str(error).splitlines()[0][:200], peak_rss=hwm, rss_end=rss,
                    seconds=None, first_loss=None, device_peak_bytes=None, load=os.getloadavg()[0])


def run_steps(job):
    from benchmarks.bench import memory_now, peak_reset

    B, T, S = job["B"], job["T"], job["S"]
    ids, mask, labels = inputs(B, T, S, job["config"]["vocab_size"])
    cuda = job["device"] == "cuda"
    if job["side"] == "minipegx":
        import minipegx
        from minipegx.training import AdamW, Batch, train_step

        model = minipegx.from_pretrained(job["ckpt"], backend="cupy" if cuda else "numpy")
        opt = AdamW(model, lr=1e-5)
        xp = model.xp
        batch = Batch(xp.asarray(ids), xp.asarray(mask), xp.asarray(labels))

        def step():
            return train_step(model, opt, batch, max_grad_norm=1.0, recompute=job["recompute"]).loss

        def sync():
            if cuda:
                xp.cuda.Device().synchronize()

        def device_peak():
            return xp.get_default_memory_pool().total_bytes() if cuda else None
    else:
        import torch
        import transformers

        torch.set_num_threads(job["threads"])
        dev = "cuda" if cuda else "cpu"
        model = transformers.PegasusXForConditionalGeneration.from_pretrained(job["ckpt"]).to(dev).train()
        if job["recompute"]:                # transformers' own recomputation: each layer rerun in the backward
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
        tids, tmask, tlabels = (torch.tensor(a, device=dev) for a in (ids, mask, labels))

        def step():
            loss = model(input_ids=tids, attention_mask=tmask, labels=tlabels).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            return loss.item()

        def sync():
            if cuda:
                torch.cuda.synchronize()

        def device_peak():
            return torch.cuda.max_memory_allocated() if cuda else None

    first_loss = step()
    sync()
    if cuda and job["side"] != "minipegx":
        torch.cuda.reset_peak_memory_stats()
    reset = peak_reset()
    times = []
    for _ in range(job["repeat"]):
        t = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t)
    rss, hwm = memory_now()
    return dict(first_loss=first_loss, times=times, seconds=min(times), median=statistics.median(times),
                peak_rss=hwm if reset else None, rss_end=rss, device_peak_bytes=device_peak(),
                load=os.getloadavg()[0])


# ============================================================================== parent side
def default_memory_cap():
    """The machine's memory (MemTotal) less 2 GiB, in bytes; None where /proc/meminfo is missing."""
    try:
        with open("/proc/meminfo") as f:
            total = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemTotal:"))
    except (OSError, StopIteration):
        return None
    return total - 2 * 2**30


def run_worker(job, timeout):
    env = dict(os.environ)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
        env[var] = str(job["threads"])
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_VERBOSITY", "error")
    with tempfile.NamedTemporaryFile("r", suffix=".json") as out:
        cmd = [sys.executable, "-m", "benchmarks.train_bench", "--worker", json.dumps(job), "--result-file", out.name]
        proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"worker {job['side']} {job['case']} recompute={job['recompute']} failed:\n"
                               f"{proc.stderr[-3000:]}")
        return {**job, **json.load(out)}


def table(results):
    """Rows: per case, each configuration's step time and peak memory, with the ratios to torch eager and to torch
    with gradient checkpointing (the fair comparison for recomputation; the only one where eager does not fit)."""
    lines = ["| case | library | step (s) | vs torch | vs torch (recompute) | peak memory (GiB) | vs torch | "
             "vs torch (recompute) |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]

    def peak(r):
        return r["device_peak_bytes"] if r.get("device") == "cuda" else r["peak_rss"]

    def over(a, b):
        return f"{a / b:.2f}" if a and b else "-"

    for case in dict.fromkeys(r["case"] for r in results):
        rows = [r for r in results if r["case"] == case]
        refs = [next((r for r in rows if r["side"] == "torch" and r["recompute"] == recompute and not r.get("error")),
                     None) for recompute in (False, True)]
        for r in rows:
            name = r["side"] + (" (recompute)" if r["recompute"] else "")
            if r.get("error"):
                cap = f" (cap {r['memory_cap'] / 2**30:.1f} GiB)" if r.get("memory_cap") else ""
                lines.append(f"| {case} | {name} | {r['error']}{cap} | - | - | "
                             f"> {(r.get('peak_rss') or 0) / 2**30:.2f} | - | - |")
                continue
            times = [over(r["seconds"], ref and ref["seconds"]) for ref in refs]
            mems = [over(peak(r), ref and peak(ref)) for ref in refs]
            lines.append(f"| {case} | {name} | {r['seconds']:.3f} | {times[0]} | {times[1]} | "
                         f"{(peak(r) or 0) / 2**30:.2f} | {mems[0]} | {mems[1]} |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="+", choices=sorted(CASES),
                    help=f"run only these cases (default: {', '.join(DEFAULT)})")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3, help="timed steps per configuration (after one warm-up)")
    ap.add_argument("--backend", choices=["numpy", "cupy"], default="numpy")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--timeout", type=int, default=3600, help="seconds per configuration")
    ap.add_argument("--configs", nargs="+", choices=[config_name(*c) for c in CONFIGS],
                    help="run only these configurations (default: all four)")
    ap.add_argument("--append", action="store_true",
                    help="add to the results file's rows (replacing rows of the same case and configuration)")
    ap.add_argument("--memory-cap", type=float, default=None,
                    help="GiB of address space per worker (default: the machine's memory less 2 GiB; 0: no cap)")
    ap.add_argument("--name", default=None, help="results file: benchmarks/results/train-<name>.json")
    ap.add_argument("--out", help="write the results JSON here instead")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--result-file", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        with open(args.result_file, "w") as f:
            json.dump(worker(json.loads(args.worker)), f)
        return 0
    if (args.backend == "cupy") != (args.device == "cuda"):
        ap.error("--backend cupy goes with --device cuda (and numpy with cpu)")

    from benchmarks.bench import machine

    cap = default_memory_cap() if args.memory_cap is None else int(args.memory_cap * 2**30)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        configs = {}
        for case in args.only or DEFAULT:
            shape, B, T, S = CASES[case]
            ckpt = os.path.join(tmp, shape)
            if shape not in configs:
                configs[shape] = write_checkpoint(shape, ckpt)
            for side, recompute in CONFIGS:
                if args.configs and config_name(side, recompute) not in args.configs:
                    continue
                job = dict(case=case, side=side, recompute=recompute, ckpt=ckpt, config=configs[shape], B=B, T=T,
                           S=S, threads=args.threads, repeat=args.repeat, device=args.device,
                           memory_cap=cap if args.device == "cpu" else None)
                r = run_worker(job, args.timeout)
                results.append(r)
                if r.get("error"):
                    print(f"{case:9s} {side:8s} recompute={recompute!s:5s}  {r['error']} ({r['detail']}), "
                          f"peak {(r['peak_rss'] or 0) / 2**30:.2f} GiB", flush=True)
                    continue
                print(f"{case:9s} {side:8s} recompute={recompute!s:5s}  {r['seconds']:.3f} s/step  "
                      f"peak {(r['device_peak_bytes'] or r['peak_rss'] or 0) / 2**30:.2f} GiB  "
                      f"loss {r['first_loss']:.4f}", flush=True)
    name = args.name or f"{args.device}-{args.threads}thread" + ("" if args.only is None else "-" + "-".join(args.only))
    path = args.out or os.path.join(HERE, "results", f"train-{name}.json")
    if args.append and os.path.exists(path):
        with open(path) as f:
            kept = [r for r in json.load(f)["results"]
                    if not any((r["case"], r["side"], r["recompute"]) == (n["case"], n["side"], n["recompute"])
                               for n in results)]
        results = kept + results
    print()
    print(table(results))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        rows = [{k: v for k, v in r.items() if k not in ("config", "ckpt")} for r in results]
        json.dump({"machine": machine(args, [args.threads]), "results": rows}, f, indent=1)   # one thread count
    print(f"\nwritten to {os.path.relpath(path, ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
