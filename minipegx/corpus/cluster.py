"""Running batches on Dask distributed: a LocalCluster sized to the cores, or a cluster already running.

Threads. NumPy's BLAS (OpenBLAS here) starts one thread per core in *every* process, so N worker
processes on N cores would run N x N BLAS threads and thrash. The default LocalCluster therefore has
cores // blas_threads worker processes with one Dask thread each (one batch at a time per process), and
each process gets blas_threads BLAS threads (default 1): OMP/OPENBLAS/MKL_NUM_THREADS are set in the
worker's environment by its nanny before NumPy is imported, and `ModelPlugin.setup` sets the same limit
again through threadpoolctl, which also covers workers started by hand (`dask worker`).

Memory. Dask's nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536 (so that freed memory goes back
to the OS). Setting it turns off glibc's adaptive thresholds, and then every NumPy temporary above
128 KiB is a fresh mmap whose pages fault in again: measured here, the demo model's batches took 40%
more CPU time in a Dask worker than in a plain process. `relax_malloc` (in the plugin) restores the
reuse: arrays up to 32 MiB come from the heap, and up to 1 GiB of free heap top is kept.

The model. `ModelPlugin` is registered on every worker, present and future (a worker restarted after a
crash gets it too); its setup loads the model into the worker process' cache (work.cached_model), and
each task takes it from there: one load per worker process, never one per task.

Faults. A worker that dies loses its running batch; the scheduler gives it to another worker (Dask
retries a task on up to `distributed.scheduler.allowed-failures` dead workers, 3 by default, then
fails it with KilledWorker, which becomes a CorpusError here). A client that dies takes its futures with
it; the next run reads the output, skips what is done, and submits the rest.
"""

from __future__ import annotations

import os

from ..errors import CorpusError, MissingDependencyError
from .work import ModelSpec, cached_model, limit_blas_threads, summarize_batch

try:
    import distributed
except ImportError:                                # pragma: no cover - the [cluster] extra is missing
    raise MissingDependencyError("running a corpus on Dask needs the cluster extra: "
                                 "pip install 'minipegx[cluster]' (or pass workers=0 / --workers 0 to run "
                                 "in this process)") from None

BLAS_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def relax_malloc() -> bool:
    """Undo the nanny's MALLOC_TRIM_THRESHOLD_ with mallopt (glibc only); whether it was done."""
    if "MALLOC_TRIM_THRESHOLD_" not in os.environ:
        return False
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):             # not glibc: nothing to undo
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3   # glibc's malloc.h
    return bool(mallopt(M_MMAP_THRESHOLD, 32 * 2**20) and mallopt(M_TRIM_THRESHOLD, 2**30))


class ModelPlugin(distributed.WorkerPlugin):
    """Loads the model once when a worker starts (or when the plugin is registered), limits its BLAS
    threads and relaxes malloc's trimming."""

    def __init__(self, spec: ModelSpec, blas_threads: int | None):
        self.spec, self.blas_threads = spec, blas_threads

    def setup(self, worker):
        relax_malloc()
        self._limits = limit_blas_threads(self.blas_threads)
        cached_model(self.spec)


def plugin_name(spec: ModelSpec) -> str:
    return "minipegx-model-" + "-".join(str(v) for v in (spec.path, spec.backend, spec.dtype, spec.quantize))


def local_cluster(n_workers: int | None = None, blas_threads: int = 1, processes: bool = True):
    """A LocalCluster of n_workers processes (default: cores // blas_threads), one task at a time each."""
    cores = os.cpu_count() or 1
    n_workers = n_workers or max(1, cores // blas_threads)
    env = {name: str(blas_threads) for name in BLAS_ENV}
    kwargs = dict(env=env) if processes else {}
    return distributed.LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=processes,
                                    dashboard_address=None, **kwargs)


def connect(scheduler=None, n_workers=None, blas_threads=1):
    """(client, cluster we started or None): an address or a Client, else a new LocalCluster."""
    if isinstance(scheduler, distributed.Client):
        return scheduler, None
    if scheduler:
        try:
            return distributed.Client(scheduler, timeout="30s"), None
        except OSError as e:
            raise CorpusError(f"cannot reach the Dask scheduler at {scheduler}: {e}; start one with "
                              "`dask scheduler` and workers with `dask worker ADDRESS`") from None
    cluster = local_cluster(n_workers, blas_threads)
    return distributed.Client(cluster), cluster


def run_batches(client, job, batches, blas_threads=1, window=None):
    """Yield [(id, summary)] per batch as batches finish, on `client`'s cluster.

    batches: [(ids, texts)]. At most `window` batches are in flight (default: 2 per worker thread), so
    neither the scheduler nor the workers hold the whole corpus at once."""
    client.register_plugin(ModelPlugin(job.model, blas_threads), name=plugin_name(job.model))
    threads = sum(client.nthreads().values()) or 1
    window = window or 2 * threads
    pending = iter(batches)
    done = distributed.as_completed()

    def submit_next():
        for ids, texts in pending:
            done.add(client.submit(summarize_batch, job, ids, texts, pure=False))
            return

    for _ in range(window):
        submit_next()
    for future in done:
        try:
            result = future.result()
        except distributed.KilledWorker as e:
            raise CorpusError(f"a batch killed several workers in a row ({e}); out of memory? Lower "
                              "--batch-tokens, then run the same command again to resume") from None
        future.release()
        submit_next()
        yield result
