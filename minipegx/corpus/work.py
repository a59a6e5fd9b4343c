"""The unit of work: a batch of documents of similar length, summarized by a model loaded once per process.

Batches are planned over the *whole* corpus, before anything is skipped, so a batch always holds the
same documents: whichever process computes it, first run or resumed, gets the same padded arrays and so
the same summaries (padding and BLAS blocking depend on the batch's shape, and a float can tip a beam).
A resumed run recomputes a batch if any of its documents is missing and writes only the missing ones.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

# Loads per model in this process: the tests read it on each worker to check "once per worker".
LOADS: Counter = Counter()
_MODELS: dict = {}


@dataclass(frozen=True)
class ModelSpec:
    """What a worker needs to load the model itself: a path it can read (None: the bundled demo model)."""
    path: str | None = None
    backend: str = "numpy"
    dtype: str = "float32"
    quantize: str | None = None


@dataclass(frozen=True)
class Job:
    """Everything that fixes a summary besides the text: the model, the input limit, generation options."""
    model: ModelSpec = field(default_factory=ModelSpec)
    max_input_length: int | None = None
    options: tuple = ()                    # generation options as sorted (name, value) pairs (hashable)


def cached_model(spec: ModelSpec):
    """(model, tokenizer) for `spec`, loaded on the first call in this process and kept."""
    if spec not in _MODELS:
        from ..pipeline import load

        if spec.backend == "cupy":             # one worker per GPU (run.default_workers): worker i uses GPU i
            from ..backend import use_gpu
            use_gpu(worker_index())
        _MODELS[spec] = load(spec.path, None, spec.backend, spec.dtype, spec.quantize)
        LOADS[spec] += 1
    return _MODELS[spec]


def worker_index() -> int:
    """This Dask worker's number in a LocalCluster (its name, 0, 1, ...); 0 outside a numbered worker."""
    try:
        from distributed import get_worker
        name = get_worker().name
    except (ImportError, ValueError):
        return 0
    return name if isinstance(name, int) else 0


def summarize_batch(job: Job, ids: list, texts: list) -> list:
    """[(id, summary)] for one batch, in one call to generate (a list of summaries when
    num_return_sequences > 1)."""
    import warnings

    from ..errors import TruncationWarning
    from ..pipeline import summarize

    model, tok = cached_model(job.model)
    options = dict(job.options)
    with warnings.catch_warnings():               # the client announces cuts once, not every worker
        warnings.simplefilter("ignore", TruncationWarning)
        out = summarize(list(texts), model=model, tokenizer=tok, batch_size=len(texts),
                        max_input_length=job.max_input_length, **options)
    n = options.get("num_return_sequences") or 1
    if n > 1:
        out = [out[i * n:(i + 1) * n] for i in range(len(texts))]
    return list(zip(ids, out))


def limit_blas_threads(n: int | None):
    """Limit this process' BLAS to n threads through threadpoolctl (the [cluster] extra); returns the
    limiter, whose restore_original_limits() undoes it. None (nothing done) when n is None."""
    if not n:
        return None
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        from ..errors import MissingDependencyError

        raise MissingDependencyError("limiting BLAS threads needs threadpoolctl: pip install 'minipegx[cluster]'"
                                     ) from None
    return threadpool_limits(limits=n, user_api="blas")


def token_lengths(texts, tokenizer, limit: int) -> list[int]:
    """Tokens each text will have in the model (its encoding, cut to `limit`)."""
    return [min(len(tokenizer.encode(t)), limit) for t in texts]


def plan_batches(lengths, batch_size: int, batch_tokens: int) -> list[list[int]]:
    """Indices of the documents grouped into batches of similar length, longest first.

    A batch holds at most `batch_size` documents and at most `batch_tokens` padded tokens
    (its longest length x its size), but always at least one document. Longest first, so that the
    slowest batches start early and the short ones fill the gaps at the end. Ties keep input order, so
    the plan is a pure function of the corpus."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches, current = [], []
    for i in order:
        longest = lengths[current[0]] if current else lengths[i]
        if current and (len(current) >= batch_size or longest * (len(current) + 1) > batch_tokens):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches
