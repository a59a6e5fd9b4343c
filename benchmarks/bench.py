#!/usr/bin/env python
"""minipegx against transformers, side by side, in one run, on one machine, with one thread count.

    python -m benchmarks.bench                      # the full CPU run (pegasus-x-base shape), 1 and 2 threads
    python -m benchmarks.bench --quick              # 1k and 4k tokens, 8 new tokens, 1 and 2 threads
    python -m benchmarks.bench --shape toy --quick  # seconds: the smoke test's path
    python -m benchmarks.bench --backend cupy --device cuda --shape large   # on a GPU (CuPy + torch CUDA)

What it measures, for both libraries, on the same random weights (normal(0, 0.02), the reference's init std),
with each thread count in turn (--threads, default 1 and all cores):
  * encoder forward at 1k, 4k and 16k tokens: the first call in a fresh process, then warmed (best of a few);
  * beam search, 4 beams, 32 new tokens (forced: min_new_tokens = max_new_tokens), on 1k, 4k and 16k tokens:
    total time and the time per decoding step (the median of the intervals between steps 2..32, so it
    leaves out the encoder and the first step, which computes the cross-attention keys/values);
  * the peak resident memory of each measurement;
  * the machine's limits (benchmarks/limits.py): the fp32 GEMM rate at the encoder's shapes with each
    library's own BLAS, and the read bandwidth of a matrix-vector product. The encoder's time is printed
    as a share of its GEMM limit (its matrix-product FLOPs at the best GEMM rate) and a beam step's as a
    multiple of its memory floor (the bytes it must read at the measured bandwidth), beside the ratio
    minipegx / transformers; with the CPU's model, flags, BLAS kernels and the load average.

Every measurement runs in its own fresh Python process (this file, with --worker), one at a time, so the
peak resident memory of one library is never polluted by the other's allocations. The thread count is set
in the worker's environment before NumPy or torch is imported (OPENBLAS/OMP/MKL_NUM_THREADS) and with
torch.set_num_threads. Peak memory is the process' high-water mark (VmHWM) from just after the model is
loaded to the end of the measurement, so it holds the weights that are resident and everything the run
allocates, but not the loader's transient copies; the whole-process figure (ru_maxrss) is recorded too.

The random checkpoint is written once (safetensors + config.json, in a temporary directory) and both
libraries load it with their own from_pretrained, so neither builds a 96103-word model more than once.
Results are printed as a table of ratios (minipegx / transformers: below 1 means minipegx is faster or
smaller) and written as JSON (benchmarks/results/<name>.json by default).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

from benchmarks.limits import few_row_read_rate, gemm_rate, gemm_shapes, read_bandwidth, step_bytes
from benchmarks.report import machine, print_table, summarize

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# pegasus-x-base and -large as their config.json files give them (relu, 128 global tokens, blocks of 512).
SHAPES = {
    "base": dict(vocab_size=96103, d_model=768, encoder_layers=12, decoder_layers=12, encoder_attention_heads=12,
                 decoder_attention_heads=12, encoder_ffn_dim=3072, decoder_ffn_dim=3072, block_size=512,
                 num_global_tokens=128),
    "large": dict(vocab_size=96103, d_model=1024, encoder_layers=16, decoder_layers=16, encoder_attention_heads=16,
                  decoder_attention_heads=16, encoder_ffn_dim=4096, decoder_ffn_dim=4096, block_size=512,
                  num_global_tokens=128),
    # For the smoke test: every code path in seconds.
    "toy": dict(vocab_size=1000, d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128, block_size=16,
                num_global_tokens=4),
}
COMMON = dict(model_type="pegasus_x", architectures=["PegasusXForConditionalGeneration"], activation_function="relu",
              max_position_embeddings=16384, scale_embedding=True, stagger_local_blocks=True, dropout=0.0,
              attention_dropout=0.0, activation_dropout=0.0, pad_token_id=0, eos_token_id=1,
              decoder_start_token_id=0, forced_eos_token_id=1, tie_word_embeddings=True, use_cache=True,
              init_std=0.02)

FULL = dict(encoder_lengths=[1024, 4096, 16384], beam_lengths=[1024, 4096, 16384], new_tokens=32, beams=4)
QUICK = dict(encoder_lengths=[1024, 4096], beam_lengths=[1024], new_tokens=8, beams=4)
SIDES = ("minipegx", "transformers")
TOY_QUICK = dict(encoder_lengths=[64, 128], beam_lengths=[64], new_tokens=4, beams=4)


# ============================================================================== the random checkpoint
def write_checkpoint(shape, directory, seed=0):
    """config.json + model.safetensors with random weights at `shape` (benchmarks/random_checkpoint.py)."""
    from benchmarks.random_checkpoint import write_random_checkpoint

    config = {**COMMON, **SHAPES[shape]}
    write_random_checkpoint(directory, config, seed)
    return config


def encoder_flops(config, T):
    """Matmul FLOPs of the encoder at T tokens (minipegx.cost, the model viz.plot_cost draws too)."""
    from minipegx.config import PegasusXConfig
    from minipegx.cost import encoder_cost

    return encoder_cost(PegasusXConfig.from_dict(config), T)["flops"]


# ============================================================================== measurements (worker side)
def peak_reset():
    """Start a new high-water mark of resident memory (Linux: writing 5 to clear_refs resets VmHWM)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def memory_now():
    """(current resident bytes, peak resident bytes since the last reset) from /proc/self/status."""
    rss = hwm = None
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) * 1024
                elif line.startswith("VmHWM:"):
                    hwm = int(line.split()[1]) * 1024
    except OSError:
        pass
    return rss, hwm


class Side:
    """What a measurement needs from a library: load, encode, generate, synchronize, a matmul, device memory."""

    def __init__(self, name, ckpt, device, threads, dtype="float32"):
        self.name, self.device = name, device
        if name == "minipegx":
            import minipegx

            self.xp = __import__("cupy") if device == "cuda" else __import__("numpy")
            self.model = minipegx.from_pretrained(ckpt, backend="cupy" if device == "cuda" else "numpy", dtype=dtype)
            self.peak = DevicePeak(self.xp) if device == "cuda" else None
        else:
            import torch
            import transformers

            torch.set_num_threads(threads)
            self.torch = torch
            self.model = transformers.PegasusXForConditionalGeneration.from_pretrained(
                ckpt, dtype=getattr(torch, dtype)).eval().to(device)

    def sync(self):
        if self.device != "cuda":
            return
        if self.name == "minipegx":
            self.xp.cuda.Device().synchronize()
        else:
            self.torch.cuda.synchronize()

    def inputs(self, T, vocab, seed=0):
        import numpy as np

        ids = np.random.default_rng(seed).integers(5, vocab, size=(1, T))
        mask = np.ones_like(ids)
        if self.name == "minipegx":
            return self.xp.asarray(ids), self.xp.asarray(mask)
        return (self.torch.as_tensor(ids, device=self.device), self.torch.as_tensor(mask, device=self.device))

    def encode(self, ids, mask):
        if self.name == "minipegx":
            return self.model.encode(ids, mask).last_hidden_state
        with self.torch.inference_mode():
            return self.model.get_encoder()(input_ids=ids, attention_mask=mask).last_hidden_state

    def generate(self, ids, mask, beams, new_tokens, on_step):
        """Beam search with a forced length; on_step() is called once per decoding step. Returns ids [rows, S]."""
        opts = dict(num_beams=beams, min_new_tokens=new_tokens, max_new_tokens=new_tokens)
        if self.name == "minipegx":
            out = self.model.generate(ids, mask, progress=lambda *_: (self.sync(), on_step()), **opts)
            return self.xp.asnumpy(out) if self.device == "cuda" else out
        import transformers

        torch = self.torch

        class EveryStep(transformers.StoppingCriteria):  # beam search calls it once per step; never stops
            def __call__(self, input_ids, scores, **kwargs):
                on_step()
                return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

        with torch.inference_mode():
            out = self.model.generate(input_ids=ids, attention_mask=mask, do_sample=False,
                                      stopping_criteria=transformers.StoppingCriteriaList([EveryStep()]), **opts)
        return out.cpu().numpy()

    def random(self, shape):
        """A float32 array of normal samples on this side's device (for the limits' products)."""
        if self.name == "minipegx":
            rng = self.xp.random.default_rng(0) if self.device != "cuda" else self.xp.random
            return rng.standard_normal(shape, dtype="float32")
        return self.torch.randn(*shape, device=self.device)

    def device_peak_bytes(self):
        if self.device != "cuda":
            return None
        if self.name == "minipegx":
            return self.peak.peak            # allocated bytes, as torch's max_memory_allocated counts them
        return int(self.torch.cuda.max_memory_allocated())

    def device_peak_reset(self):
        if self.device != "cuda":
            return
        if self.name == "minipegx":
            self.peak.reset()
        else:
            self.torch.cuda.reset_peak_memory_stats()


class DevicePeak:
    """The peak of CuPy's allocated bytes (not the pool's cached ones): every allocation goes through the pool
    and the high-water mark of its used_bytes() is kept, as torch.cuda.max_memory_allocated does."""

    def __init__(self, cupy):
        self.pool = cupy.get_default_memory_pool()
        self.peak = 0
        cupy.cuda.set_allocator(self.malloc)

    def malloc(self, size):
        mem = self.pool.malloc(size)
        self.peak = max(self.peak, self.pool.used_bytes())
        return mem

    def reset(self):
        self.peak = self.pool.used_bytes()


def timed(fn, sync, repeat):
    """Wall-clock seconds of each of `repeat` runs, and the CPU seconds (all threads) of each."""
    times, cpu = [], []
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        fn()
        sync()
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return times, cpu


def worker(jobs):
    """Measurements of one library in this (fresh) process, one after the other; a list of JSON-able dicts.

    The model is loaded once; before each measurement the peak-memory mark is reset to the current
    resident size, so each one's peak is its own (in --grouped runs it may include what an earlier
    measurement of the same library left resident)."""
    first = jobs[0]
    side = Side(first["side"], first["ckpt"], first["device"], first["threads"], first.get("dtype", "float32"))
    config = first["config"]
    results = []
    for job in jobs:
        results.append(measure(side, config, job))
    return results


def measure(side, config, job):
    result = {"side": job["side"], "task": job["task"], "length": job.get("length"), "threads": job["threads"],
              "dtype": job.get("dtype", "float32")}
    result["rss_before"], _ = memory_now()
    result["peak_reset"] = peak_reset()
    side.device_peak_reset()

    if job["task"] == "blas":
        # The encoder's products, weighted as in a layer, and the read bandwidth of a matrix-vector product.
        rate, per = gemm_rate(side, gemm_shapes(config, job["length"]))
        result.update(gflops=rate, per_shape_gflops=per, read_gbs=read_bandwidth(side))
    elif job["task"] == "encoder":
        ids, mask = side.inputs(job["length"], config["vocab_size"])
        (first,), _ = timed(lambda: side.encode(ids, mask), side.sync, 1)   # the first call of this process
        times, cpu = timed(lambda: side.encode(ids, mask), side.sync, job["repeat"])
        result.update(first_call=first, times=times, cpu_times=cpu, seconds=min(times), median=statistics.median(times),
                      gflops=encoder_flops(config, job["length"]) / min(times) / 1e9,
                      first_gflops=encoder_flops(config, job["length"]) / first / 1e9)
    elif job["task"] == "beam":
        ids, mask = side.inputs(job["length"], config["vocab_size"])
        stamps = []
        t0, c0 = time.perf_counter(), time.process_time()
        seqs = side.generate(ids, mask, job["beams"], job["new_tokens"], lambda: stamps.append(time.perf_counter()))
        side.sync()
        total = time.perf_counter() - t0
        steps = [b - a for a, b in zip(stamps, stamps[1:])]     # steps 2..S: decoding only
        result.update(seconds=total, cpu_seconds=time.process_time() - c0, rows=job["beams"], steps=len(stamps),
                      first_step_seconds=stamps[0] - t0 if stamps else None,
                      step_times=steps, per_step=statistics.median(steps) if steps else None,
                      sequences=[[int(t) for t in row] for row in seqs])
    rss, hwm = memory_now()
    result.update(load_after=os.getloadavg()[0], rss_end=rss, peak_rss=hwm if result["peak_reset"] else None,
                  maxrss_process=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                  device_peak_bytes=side.device_peak_bytes())
    # The limit again, in this process, right after minipegx's measurement (and after its memory was read):
    # on a shared machine the load changes within a run, and a limit taken minutes earlier would not fit.
    if side.name == "minipegx" and job["task"] == "encoder":
        result["gemm_gflops"], _ = gemm_rate(side, gemm_shapes(config, job["length"]), rounds=3)
    if side.name == "minipegx" and job["task"] == "beam":
        result["read_gbs"] = read_bandwidth(side, rounds=3)
        result["few_row_gbs"] = few_row_read_rate(side, config, rows=job["beams"])
    return result


# ============================================================================== orchestration (parent side)
def run_worker(jobs, threads, timeout):
    """Run jobs (all of one library) in a fresh interpreter with the thread count fixed in its environment."""
    env = dict(os.environ)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
        env[var] = str(threads)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_VERBOSITY", "error")
    with tempfile.NamedTemporaryFile("r", suffix=".json") as out:
        load = os.getloadavg()[0]
        cmd = [sys.executable, "-m", "benchmarks.bench", "--worker", json.dumps(jobs), "--result-file", out.name]
        proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"worker {jobs[0]['side']} {[(j['task'], j.get('length')) for j in jobs]} failed:\n"
                               f"{proc.stderr[-3000:]}")
        results = json.load(out)
    for r in results:
        r["load_before"] = load
    return results


def plan_jobs(args, plan, base):
    """The measurements, thread count after thread count, alternating the libraries within each."""
    jobs = []
    for threads in args.threads:
        at = dict(base, threads=threads)
        if "blas" not in args.skip:
            jobs += [dict(at, side=s, task="blas", length=max(plan["encoder_lengths"])) for s in SIDES]
        if "encoder" not in args.skip:
            for L in plan["encoder_lengths"]:
                jobs += [dict(at, side=s, task="encoder", length=L, repeat=args.repeat) for s in SIDES]
            if args.bf16:  # what transformers reaches in bfloat16 (AMX), which NumPy has no GEMM for
                jobs += [dict(at, side="transformers", task="encoder", length=L, repeat=args.repeat, dtype="bfloat16")
                         for L in plan["encoder_lengths"] if L == 4096 or len(plan["encoder_lengths"]) == 1]
        if "beam" not in args.skip:
            for L in plan["beam_lengths"]:
                jobs += [dict(at, side=s, task="beam", length=L, beams=plan["beams"], new_tokens=plan["new_tokens"])
                         for s in SIDES]
    for job in jobs:
        if job["task"] == "encoder" and not job["repeat"]:   # short inputs: more runs, the best counts
            job["repeat"] = 4 if job["length"] <= 2048 else 2 if job["length"] <= 4096 else 1
    return jobs


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", choices=sorted(SHAPES), default="base")
    ap.add_argument("--quick", action="store_true", help="1k and 4k tokens, beam search on 1k with 8 new tokens")
    ap.add_argument("--threads", type=int, nargs="+", default=sorted({1, os.cpu_count()}),
                    help="thread counts for both libraries, each measured in turn (default: 1 and all cores)")
    ap.add_argument("--backend", choices=["numpy", "cupy"], default="numpy", help="minipegx's array module")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where transformers runs")
    ap.add_argument("--dtype", choices=["float32", "float16"], default="float32",
                    help="compute dtype of both libraries (float16: on a GPU)")
    ap.add_argument("--encoder-lengths", type=int, nargs="*", help="override the encoder lengths")
    ap.add_argument("--beam-lengths", type=int, nargs="*", help="override the beam search input lengths")
    ap.add_argument("--new-tokens", type=int, help="tokens generated per beam search (forced)")
    ap.add_argument("--beams", type=int)
    ap.add_argument("--repeat", type=int, default=0,
                    help="warmed encoder runs after the first call (0: 4 up to 2k tokens, 2 up to 4k, else 1)")
    ap.add_argument("--skip", nargs="*", default=[], choices=["blas", "encoder", "beam"])
    ap.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                    help="also time transformers' encoder in bfloat16 at 4k tokens (default: when the CPU has AMX)")
    ap.add_argument("--grouped", action="store_true",
                    help="one process per library instead of one per measurement (the smoke test's mode)")
    ap.add_argument("--checkpoint", help="reuse a random checkpoint directory written by an earlier run")
    ap.add_argument("--name", help="results name (default: <device>-<shape>[-quick])")
    ap.add_argument("--out", help="JSON path (default: benchmarks/results/<name>.json)")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds allowed per measurement")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--result-file", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.worker:
        result = worker(json.loads(args.worker))
        with open(args.result_file, "w") as f:
            json.dump(result, f)
        return 0

    if (args.backend == "cupy") != (args.device == "cuda"):
        ap.error("--backend cupy goes with --device cuda (and numpy with cpu): both libraries on the same device")
    plan = dict(TOY_QUICK if args.shape == "toy" else QUICK if args.quick else FULL)
    for key in ("encoder_lengths", "beam_lengths", "new_tokens", "beams"):
        if getattr(args, key) is not None:
            plan[key] = getattr(args, key)
    name = args.name or f"{args.device}-{args.shape}{'' if args.dtype == 'float32' else '-' + args.dtype}" \
        f"{'-quick' if args.quick else ''}"
    out_path = args.out or os.path.join(HERE, "results", f"{name}.json")
    about = machine(args, args.threads)
    if args.bf16 is None:
        args.bf16 = args.device == "cpu" and "amx_bf16" in about["flags"] and args.shape != "toy"
    print(f"{about['cpu']}, flags {' '.join(about['flags'])}, NumPy's BLAS {about.get('blas')}, "
          f"load average {about['load_average'][0]:.1f}", flush=True)

    started = time.time()
    with tempfile.TemporaryDirectory(prefix="minipegx-bench-") as tmp:
        ckpt = args.checkpoint or tmp
        if args.checkpoint and os.path.isfile(os.path.join(ckpt, "config.json")):
            with open(os.path.join(ckpt, "config.json")) as f:
                config = json.load(f)
        else:
            print(f"writing a random {args.shape} checkpoint to {ckpt} ...", flush=True)
            config = write_checkpoint(args.shape, ckpt)
        jobs = plan_jobs(args, plan, dict(ckpt=ckpt, config=config, device=args.device, dtype=args.dtype))
        if args.grouped:  # one process per library and thread count (faster to start; peaks stay per measurement)
            batches = [[j for j in jobs if j["side"] == s and j["threads"] == n] for n in args.threads for s in SIDES]
        else:             # one process per measurement, alternating the libraries, so a change of load hits both
            batches = [[j] for j in jobs]
        results = []
        for batch in batches:
            t = time.perf_counter()
            for r in run_worker(batch, batch[0]["threads"], args.timeout):
                figure = (f"{r['gflops']:.1f} GFLOP/s, {r['read_gbs']:.1f} GB/s" if r["task"] == "blas" else
                          f"{r['seconds']:.3f} s (first call {r['first_call']:.3f} s)" if r["task"] == "encoder" else
                          f"{r['seconds']:.3f} s, {r['per_step']:.4f} s per step")
                print(f"  {r['threads']} thr {r['side']:12} {r['task']:8} {r['length']!s:>6} {r['dtype']:8}: {figure} "
                      f"(load average {r['load_before']:.1f} -> {r['load_after']:.1f})", flush=True)
                results.append(r)
            print(f"    ({time.perf_counter() - t:.0f} s with start-up and loading)", flush=True)

    rows = summarize(results, config, encoder_flops, step_bytes)
    same = {}
    for r in results:
        if r["task"] == "beam" and r["side"] == "minipegx":
            theirs = next(t for t in results if t["side"] == "transformers" and t["task"] == "beam"
                          and t["length"] == r["length"] and t["threads"] == r["threads"])
            same[f"{r['length']} tokens, {r['threads']} threads"] = r["sequences"] == theirs["sequences"]
    report = dict(name=name, shape=args.shape, config=config, plan=plan, machine=about,
                  load_average_end=os.getloadavg(), wall_seconds=time.time() - started,
                  same_beam_search_ids=same, table=rows, results=results)
    print_table(rows)
    if same:
        print("beam search ids identical in both libraries:", same)
    print(f"load average at the start {about['load_average'][0]:.1f}, at the end {os.getloadavg()[0]:.1f} "
          f"(on {os.cpu_count()} CPUs); {time.time() - started:.0f} s in all")
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    with open(out_path, "w") as f:
        json.dump(report, f, indent=1)
    print("written", out_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
