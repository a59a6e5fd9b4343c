"""The one seam where minipegx uses several cores outside BLAS: `for_slices`.

BLAS spreads a large matrix product over every core, but the rest of a layer -- softmax, masks, layer
norms, the small per-block products of the encoder's attention -- is NumPy on one core while the others
idle (a third of the encoder's time at 2 threads). That work splits into independent pieces (blocks of
tokens, heads, rows of positions), and NumPy releases the GIL inside its loops and BLAS calls, so a
small pool of Python threads can hand the pieces out. The layer functions do not know about it: a
caller writes the work for a slice of pieces once, as it would for all of them, and `for_slices` decides
how the slices are cut:

  * NumPy with several BLAS threads: one slice per piece (or `step` pieces), handed out to a pool of as
    many threads as BLAS uses, with BLAS limited to one thread meanwhile (so the pool's threads and
    BLAS's never compete for the same cores);
  * NumPy with one BLAS thread: the same slices in a plain loop (a small piece stays in cache);
  * CuPy: one slice covering every piece, so each product is one batched launch whatever the number of
    blocks (the GPU runs a batch in parallel by itself; per-piece launches would be thousands of tiny ones).

`by_rows(f, x, width, dtype, step)` is the common case written once: a function of each row alone (a linear
layer, a layer norm) over pieces of rows, each piece writing its rows of one output.

A whole pass can also hold BLAS at one thread from start to end (`one_blas_thread`, around the encoder's
layers), with every large product cut into pieces through `for_slices`. That matters because OpenBLAS's own
threads do not stop when a threaded product ends: they spin for about 0.1 s (2^28 cycles, its
OPENBLAS_THREAD_TIMEOUT) waiting for the next one, and a spinning thread takes a core from the pool's threads.
Measured at 4k tokens on 2 cores: the local attention took 99 ms a layer with a threaded projection just
before it, and 64 ms when OpenBLAS was told not to spin.
"""

from __future__ import annotations

import itertools
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager, nullcontext

from .backend import array_module, is_host_module


_state = threading.local()   # .inside: True in a pool thread (a nested for_slices runs as a plain loop);
                             # .held: the pool's size while this thread holds BLAS at one thread (one_blas_thread)
_pool = None                 # (process id, ThreadPoolExecutor), made at the first parallel call
_section = threading.Lock()  # one parallel section at a time: BLAS's thread count is process-wide


def _blas_controller():
    """threadpoolctl's handle on the BLAS libraries loaded now (~1 ms): made afresh at each call, since a
    library loaded later (another extension's BLAS) would escape a handle kept from an earlier call."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController().select(user_api="blas")


def workers(blas=None) -> int:
    """Threads the seam uses on NumPy: as many as BLAS was given (OPENBLAS_NUM_THREADS, threadpoolctl...)."""
    info = (blas or _blas_controller()).info()
    return max([lib["num_threads"] for lib in info] or [1])


def for_slices(work, count, xp, step=1):
    """Call work(s) for slices s that together cover range(count) once; work writes its results itself
    (into disjoint parts of arrays the caller allocated) and returns nothing. count may be a tuple, the
    sizes of a grid (heads x blocks): then work(s1, s2, ...) gets one slice per axis, and the pieces are
    the grid's cells.

    CuPy: one call over everything, work(slice(0, count)). NumPy: work(slice(i, i + step)) for
    i = 0, step, 2*step, ... (along every axis of a grid), on a pool of `workers()` threads with BLAS at
    one thread meanwhile, or in a plain loop when BLAS has one thread, inside a pool thread, or while
    another thread of the program is in a parallel section (BLAS's thread count is one per process).
    On the pool, a single axis with step > 1 is cut into equal pieces of at most `step`, as many as a
    multiple of the pool's threads, so the threads finish together (1,152 rows in pieces of 512 would
    leave one thread 640 rows and the other 512).
    An exception in any piece is raised here."""
    counts = count if isinstance(count, tuple) else (count,)
    if not is_host_module(xp):
        work(*(slice(0, c) for c in counts))
        return
    alone = getattr(_state, "inside", False) or math.prod(-(-c // step) for c in counts) < 2   # no pool to use
    held = getattr(_state, "held", None)
    if held and not alone:
        _run_on_pool(work, _cut(counts, step, held), held, None)  # BLAS already at one thread for the whole pass
        return
    if alone:
        blas, threads = None, 1
    else:
        blas = _blas_controller()                # one handle per section: read the threads, then limit them
        threads = workers(blas)
    if threads < 2 or not _section.acquire(blocking=False):
        for s in _cut(counts, step):
            work(*s)
        return
    try:
        _run_on_pool(work, _cut(counts, step, threads), threads, blas)
    finally:
        _section.release()


def by_rows(f, x, width, dtype, step):
    """f(x) for a function f of each row alone (a linear layer, a layer norm): x [B, R, I] -> [B, R, width] of
    dtype, the R rows in pieces of at most `step` handed out through for_slices, each written into its rows of
    one output array."""
    xp = array_module(x)
    out = xp.empty(x.shape[:-1] + (width,), dtype)               # [B, R, width]

    def rows_of(rows):                                           # a slice of the R rows
        out[:, rows] = f(x[:, rows])                             # [B, r, I] -> [B, r, width]

    for_slices(rows_of, x.shape[1], xp, step=step)
    return out


def _cut(counts, step, threads=1):
    """The pieces: cells of the grid, step along each axis; for one axis with step > 1 on `threads` threads,
    equal pieces of at most step, as many as a multiple of threads."""
    if len(counts) == 1 and step > 1 and threads > 1:
        n = -(-counts[0] // step)                                   # pieces of at most step
        n = -(-n // threads) * threads                              # ... as many as a multiple of the threads
        step = max(1, -(-counts[0] // n))
    return list(itertools.product(*([slice(i, min(i + step, c)) for i in range(0, c, step)] for c in counts)))


@contextmanager
def one_blas_thread(xp):
    """Hold BLAS at one thread for the whole `with` body, the pool (as many threads as BLAS had) running every
    for_slices inside it; so no product in the body wakes BLAS's own threads, which would spin on a core the
    pool needs (the module docstring). Products in the body outside for_slices run on one thread: a caller
    cuts every large one into pieces. Nothing on CuPy, with one BLAS thread, inside a pool thread, in a nested
    use, or while another thread of the program holds the seam."""
    if (not is_host_module(xp) or getattr(_state, "inside", False) or getattr(_state, "held", None)
            or not _section.acquire(blocking=False)):
        yield
        return
    try:
        blas = _blas_controller()
        threads = workers(blas)
        if threads < 2:
            yield
            return
        with blas.limit(limits=1):
            _state.held = threads
            try:
                yield
            finally:
                _state.held = None
    finally:
        _section.release()


def _run_on_pool(work, pieces, threads, blas):
    global _pool
    if _pool is None or _pool[0] != os.getpid() or _pool[1]._max_workers != threads:  # a forked child has no threads
        _pool = (os.getpid(), ThreadPoolExecutor(max_workers=threads, thread_name_prefix="minipegx"))

    def run(s):
        _state.inside = True
        try:
            work(*s)
        finally:
            _state.inside = False

    with blas.limit(limits=1) if blas is not None else nullcontext():
        futures = [_pool[1].submit(run, s) for s in pieces]
        wait(futures)                      # every piece finished (or failed) before BLAS gets its threads back
    for future in futures:
        future.result()                    # raises the first failure
