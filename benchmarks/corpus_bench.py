#!/usr/bin/env python
"""Documents per second for a whole corpus: in one process, and on Dask with 1 and with 2 worker processes.

    python -m benchmarks.corpus_bench                 # 64 demo documents of 1,000-3,000 tokens, ~3 min on 2 cores
    python -m benchmarks.corpus_bench --quick         # 6 short documents: seconds (the smoke test's path)

Every setting summarizes the same documents with the same model, generation options and batch plan
(batch size 4, length-sorted) into a fresh output file, and every setting must produce the same
summaries (checked, recorded). The settings:

  one process, 1 BLAS thread     summarize_corpus(workers=0, blas_threads=1): no Dask at all
  one process, all BLAS threads  summarize_corpus(workers=0, blas_threads=cores): BLAS parallelism only
  Dask, 1 worker                 a LocalCluster of 1 process x 1 thread x 1 BLAS thread
  Dask, 2 workers                a LocalCluster of 2 processes x 1 thread x 1 BLAS thread each

The clusters are started, and the model loaded on every worker, before the clock starts (a warm-up
run on 2 documents), so the figure is the corpus' throughput; the start-up time is recorded apart.
The machine's load average (os.getloadavg) is recorded before and after each setting: on a shared
machine, other processes take cores away and the 2-worker figure is the one that suffers. --repeats N
runs all settings N times, interleaved, and keeps each setting's best run (all are recorded). The CPU
seconds per document (this process plus every worker process) say what the work costs whatever the
load: equal figures for 1 and 2 workers mean the second worker adds no work of its own.
Prints ratios and writes benchmarks/results/<name>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def write_corpus(path, n, lo, hi, seed=0):
    from tools.demo_data import make_example  # the default (long) demo model's task

    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            doc, summary = make_example(rng, rng.randint(lo, hi))
            f.write(json.dumps({"id": f"doc-{i:04d}", "text": doc, "summary": summary}) + "\n")


def read_summaries(path):
    with open(path, encoding="utf-8") as f:
        return {r["id"]: r["summary"] for r in map(json.loads, f)}


def timed(corpus, out, **kwargs):
    """(seconds, summaries, loads before, loads after) of one summarize_corpus run into a fresh file."""
    from minipegx.corpus import summarize_corpus

    before, cpu = os.getloadavg()[0], time.process_time()
    run = summarize_corpus(corpus, out, progress=False, **kwargs)
    # This process' CPU: the whole work in one process; the client and the scheduler on a LocalCluster.
    return dict(seconds=run.seconds, docs=run.written, docs_per_second=run.docs_per_second,
                this_process_cpu_seconds=time.process_time() - cpu, load_before=before,
                load_after=os.getloadavg()[0]), read_summaries(out)


def on_cluster(corpus, warmup, tmp, n_workers, batch_size, repeat=0):
    import distributed

    from minipegx.corpus.cluster import local_cluster

    t0 = time.perf_counter()
    with local_cluster(n_workers=n_workers) as cluster, distributed.Client(cluster) as client:
        timed(warmup, os.path.join(tmp, f"warm-{n_workers}-{repeat}.jsonl"), scheduler=client, batch_size=batch_size)
        startup = time.perf_counter() - t0
        cpu = client.run(time.process_time)
        result, summaries = timed(corpus, os.path.join(tmp, f"dask-{n_workers}-{repeat}.jsonl"), scheduler=client,
                                  batch_size=batch_size)
        workers_cpu = sum(t - cpu[w] for w, t in client.run(time.process_time).items())
    return dict(result, startup_seconds=startup, workers=n_workers, blas_threads=1,
                workers_cpu_seconds=workers_cpu), summaries


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--docs", type=int, default=64)
    ap.add_argument("--min-tokens", type=int, default=1000)
    ap.add_argument("--max-tokens", type=int, default=3000)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=1, help="run every setting this many times, keep the best")
    ap.add_argument("--quick", action="store_true", help="6 documents of 300-500 tokens")
    ap.add_argument("--name", default="corpus-cpu")
    ap.add_argument("--out", help="JSON path (default: benchmarks/results/<name>.json)")
    args = ap.parse_args(argv)
    if args.quick:
        args.docs, args.min_tokens, args.max_tokens = 6, 300, 500
    cores = os.cpu_count() or 1
    runs, outputs = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        corpus, warmup = os.path.join(tmp, "corpus.jsonl"), os.path.join(tmp, "warmup.jsonl")
        write_corpus(corpus, args.docs, args.min_tokens, args.max_tokens)
        write_corpus(warmup, 2, args.min_tokens, args.min_tokens, seed=1)
        timed(warmup, os.path.join(tmp, "warm-0.jsonl"), workers=0)          # the model, loaded once here
        for repeat in range(args.repeats):          # settings interleaved, so a load spike hits all of them
            for name, threads in (("one process, 1 BLAS thread", 1), (f"one process, {cores} BLAS threads", cores)):
                r, outputs[name] = timed(corpus, os.path.join(tmp, f"one-{threads}-{repeat}.jsonl"), workers=0,
                                         blas_threads=threads, batch_size=args.batch_size)
                runs.setdefault(name, []).append(dict(r, workers=0, blas_threads=threads))
            for n in (1, 2):
                name = f"Dask, {n} worker{'s' if n > 1 else ''}"
                r, outputs[name] = on_cluster(corpus, warmup, tmp, n, args.batch_size, repeat)
                runs.setdefault(name, []).append(r)
    # The best of the repeats: the one least slowed down by whatever else ran on the machine.
    results = {name: dict(max(rs, key=lambda r: r["docs_per_second"]), repeats=rs) for name, rs in runs.items()}
    reference = next(iter(outputs.values()))
    same = {name: out == reference for name, out in outputs.items()}
    rate = {name: r["docs_per_second"] for name, r in results.items()}
    one, many = "one process, 1 BLAS thread", f"one process, {cores} BLAS threads"
    ratios = {
        "Dask 2 workers / Dask 1 worker": rate["Dask, 2 workers"] / rate["Dask, 1 worker"],
        "Dask 2 workers / one process, all BLAS threads": rate["Dask, 2 workers"] / rate[many],
        "Dask 1 worker / one process, 1 BLAS thread (Dask's overhead)": rate["Dask, 1 worker"] / rate[one],
        "one process: all BLAS threads / 1 BLAS thread": rate[many] / rate[one],
    }
    print(f"{args.docs} documents of {args.min_tokens}-{args.max_tokens} tokens, batch size {args.batch_size}, "
          f"{cores} cores")
    for name, r in results.items():
        print(f"  {name:<32} {r['docs_per_second']:7.2f} docs/s  ({r['seconds']:.1f} s, this process' CPU "
              f"{r['this_process_cpu_seconds']:.1f} s; load average "
              f"{r['load_before']:.2f} -> {r['load_after']:.2f}){'' if same[name] else '  DIFFERENT SUMMARIES'}")
    for name, r in results.items():                # CPU per document: what the work costs, whatever the load
        r["cpu_seconds_per_doc"] = (r["this_process_cpu_seconds"] + r.get("workers_cpu_seconds", 0)) / r["docs"]
        print(f"  {name:<32} {r['cpu_seconds_per_doc']:.3f} CPU seconds per document (all processes)")
    for name, v in ratios.items():
        print(f"  ratio {name}: {v:.2f}")
    report = dict(name=args.name, time=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                  machine=dict(platform=platform.platform(), python=platform.python_version(), cpus=cores),
                  load_average_at_end=os.getloadavg(),
                  plan=dict(docs=args.docs, repeats=args.repeats, min_tokens=args.min_tokens, max_tokens=args.max_tokens,
                            batch_size=args.batch_size, model="bundled demo model"),
                  results=results, ratios=ratios, same_summaries=same)
    out = args.out or os.path.join(HERE, "results", f"{args.name}.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
    print(f"written {out}")
    return 0 if all(same.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
