"""summarize_corpus: a corpus file in, one JSON line per summary out, resumable, on Dask or in this process.

    from minipegx.corpus import summarize_corpus
    summarize_corpus("corpus.jsonl", "out.jsonl")                          # LocalCluster, demo model
    summarize_corpus("corpus.jsonl", "out.jsonl", model="pegasus-x-base", scheduler="tcp://host:8786",
                     num_beams=4, max_new_tokens=256)
    summarize_corpus("corpus.jsonl", "out.jsonl", workers=0)               # no Dask: this process

Run it again with the same output after any crash: it keeps every whole line already written, cuts off
a torn last line, and computes only the documents that are missing.
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass, field

from ..errors import CorpusError, TruncationWarning
from .files import (Appender, check_not_input, check_output_path, input_files, read_corpus, read_done, read_files,
                    repair_output)
from .work import Job, ModelSpec, limit_blas_threads, plan_batches, summarize_batch, token_lengths


@dataclass
class CorpusRun:
    """What a run did. documents: in the corpus; already_done: found in the output and skipped;
    written: summaries appended by this run; malformed: "FILE line N: reason" of skipped input lines;
    repaired_bytes: the torn last line cut off the output; truncated: documents cut to the input limit."""
    output: str
    documents: int = 0
    already_done: int = 0
    written: int = 0
    batches: int = 0
    malformed: list = field(default_factory=list)
    repaired_bytes: int = 0
    truncated: int = 0
    unknown_in_output: int = 0
    seconds: float = 0.0

    @property
    def docs_per_second(self) -> float:
        """Documents written per second of the run (0 for a run that wrote nothing)."""
        return self.written / self.seconds if self.seconds else 0.0


def model_spec(model, backend, dtype, quantize) -> ModelSpec:
    from ..model import demo_model_path

    path = demo_model_path() if model is None else model
    if not isinstance(path, str) or not os.path.isdir(path):
        raise CorpusError(f"model must be a checkpoint directory that every worker can read (or None for the "
                          f"demo model), got {model!r}")
    return ModelSpec(os.path.abspath(path), backend, dtype, quantize)


def input_limit(spec, max_input_length):
    """(tokens the model reads of each document, the client's tokenizer)."""
    from ..config import PegasusXConfig
    from ..tokenizer import Tokenizer

    limit = max_input_length or PegasusXConfig.from_json_file(os.path.join(spec.path, "config.json")
                                                              ).max_position_embeddings
    return limit, Tokenizer.from_pretrained(spec.path)


def char_budget(limit, tokenizer) -> int:
    """Characters of a document read at most: `limit` tokens of the tokenizer's longest piece each
    (no token covers more text), twice over for what normalization drops (runs of spaces, control
    characters, combining marks), plus one piece for the word the cut lands in."""
    sp = tokenizer.sp
    longest = max(len(sp.id_to_piece(i)) for i in range(sp.get_piece_size()))
    return 2 * limit * longest + longest


def plan(records, tokenizer, text_field, batch_size, batch_tokens, limit):
    """(batches of record indices, documents longer than the limit, documents whose first char_budget
    characters hold fewer tokens than the limit), from the client's tokenizer. The texts were cut to
    char_budget as they were read, so tokenizing one costs what the limit does."""
    if batch_size < 1 or batch_tokens < 1:
        raise CorpusError(f"batch_size and batch_tokens must be positive, got {batch_size} and {batch_tokens}")
    full = token_lengths([r.fields[text_field] for r in records], tokenizer, 10**12)
    batches = plan_batches([min(n, limit) for n in full], batch_size, batch_tokens)
    short = sum(r.cut and n < limit for n, r in zip(full, records))
    return batches, sum(n > limit or r.cut for n, r in zip(full, records)), short


def in_process(job, batches, blas_threads=None):
    """Yield [(id, summary)] per batch, computed here, one after another (the reference for Dask runs)."""
    limits = limit_blas_threads(blas_threads)
    try:
        for ids, texts in batches:
            yield summarize_batch(job, ids, texts)
    finally:
        if limits is not None:
            limits.restore_original_limits()


def summarize_corpus(input, output, *, model=None, id_field="id", text_field="text", summary_field="summary",
                     scheduler=None, workers=None, blas_threads=None, batch_size=4, batch_tokens=16384,
                     max_input_length=None, on_malformed="error", progress=True, backend="numpy",
                     dtype="float32", quantize=None, **generation_options) -> CorpusRun:
    """Summarize every document of `input` into `output` (JSON lines {id_field: ..., summary_field: ...}).

    input: a JSON-lines file of {id_field, text_field} objects, or a folder of .txt files (id: the name).
    scheduler: a Dask scheduler address ("tcp://host:8786") or a distributed.Client; default: a new
    LocalCluster of `workers` processes (default cores // blas_threads). workers=0: no Dask, this process.
    blas_threads: BLAS threads per worker (default 1 on Dask; this process' own setting with workers=0).
    Documents are sorted by token length and batched: at most batch_size documents and batch_tokens
    padded tokens per batch. on_malformed: "error" (stop at the first bad line) or "skip" (leave it out,
    listed in the result's `malformed`). Generation options are those of minipegx.summarize.
    Before any work, the output must be a regular file (or not exist) in an existing folder, and not the
    input or a model file under any name, nor inside a folder corpus. Each document is cut, as it is
    read, to char_budget characters, which hold the tokens the model reads (docs/corpus.md).
    Returns a CorpusRun."""
    start = time.perf_counter()
    workers = default_workers(backend, workers, scheduler)
    spec = model_spec(model, backend, dtype, quantize)
    check_output_path(output)                     # before any work: a FIFO would block, a folder cannot be written
    check_not_input(input, output, also=[spec.path])
    limit, tokenizer = input_limit(spec, max_input_length)
    budget = char_budget(limit, tokenizer)
    records, malformed = read_corpus(input, id_field, text_field, on_malformed, budget)
    run = CorpusRun(output=output, documents=len(records), malformed=malformed)
    batches, run.truncated, short = plan(records, tokenizer, text_field, batch_size, batch_tokens, limit)
    if short:
        warnings.warn(f"{short} documents hold fewer than {limit} tokens in their first {budget:,} characters "
                      "(mostly spaces, control characters or combining marks): the model reads only those "
                      "characters of them", TruncationWarning, stacklevel=2)
    if run.truncated:
        warnings.warn(f"{run.truncated} of {len(records)} documents are longer than {limit} tokens and are cut "
                      "to it (set max_input_length / --max-input-length)", TruncationWarning, stacklevel=2)
    job = Job(spec, limit, tuple(sorted(generation_options.items())))
    with Appender(output, refuse=input_files(input) | set(read_files([spec.path]))) as out:                 # the lock first: nobody else is repairing or appending
        run.repaired_bytes = repair_output(output)
        done = read_done(output, id_field)
        ids = {r.id for r in records}
        run.unknown_in_output = len(done - ids)
        run.already_done = len(done & ids)
        todo = [([records[i].id for i in b], [records[i].fields[text_field] for i in b])
                for b in batches if any(records[i].id not in done for i in b)]
        run.batches = len(todo)
        if todo:
            _write_results(run, out, todo, done, job, id_field, summary_field, scheduler, workers,
                           blas_threads, progress)
    run.seconds = time.perf_counter() - start
    return run


def default_workers(backend, workers, scheduler):
    """workers=None on backend="cupy" with a local cluster: one worker per GPU (each worker loads the model
    onto its own GPU; one per core would load it onto the same GPU once per core)."""
    if backend == "cupy" and workers is None and scheduler is None:
        from ..backend import gpu_count
        return max(1, gpu_count())
    return workers


def _write_results(run, out, todo, done, job, id_field, summary_field, scheduler, workers, blas_threads,
                   progress):
    from tqdm import tqdm

    from ..streams import QuietStderr

    bar = tqdm(total=sum(sum(i not in done for i in ids) for ids, _ in todo), unit="doc", desc="summaries",
               file=QuietStderr(), disable=not progress, dynamic_ncols=True)
    client = cluster = None
    try:
        if workers == 0 and scheduler is None:
            results = in_process(job, todo, blas_threads)
        else:
            from .cluster import connect, run_batches

            client, cluster = connect(scheduler, workers, blas_threads or 1)
            results = run_batches(client, job, todo, blas_threads or 1)
        for pairs in results:
            for rid, summary in pairs:
                if rid not in done:            # a batch recomputed on resume holds some done ids
                    out.write({id_field: rid, summary_field: summary})
                    done.add(rid)
                    run.written += 1
                    bar.update(1)
    finally:
        bar.close()
        if client is not None and client is not scheduler:
            client.close()
        if cluster is not None:
            cluster.close()
