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
import sys
import time
import warnings
from dataclasses import dataclass, field

from ..errors import CorpusError, TruncationWarning
from .files import Appender, read_corpus, read_done, repair_output
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


def plan(records, spec, text_field, batch_size, batch_tokens, max_input_length):
    """(batches of record indices, input limit, documents longer than it), from the client's tokenizer."""
    from ..config import PegasusXConfig
    from ..tokenizer import Tokenizer

    if batch_size < 1 or batch_tokens < 1:
        raise CorpusError(f"batch_size and batch_tokens must be positive, got {batch_size} and {batch_tokens}")
    limit = max_input_length or PegasusXConfig.from_json_file(os.path.join(spec.path, "config.json")
                                                              ).max_position_embeddings
    tok = Tokenizer.from_pretrained(spec.path)
    full = token_lengths([r.fields[text_field] for r in records], tok, 10**12)
    batches = plan_batches([min(n, limit) for n in full], batch_size, batch_tokens)
    return batches, limit, sum(n > limit for n in full)


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
    Returns a CorpusRun."""
    start = time.perf_counter()
    spec = model_spec(model, backend, dtype, quantize)
    records, malformed = read_corpus(input, id_field, text_field, on_malformed)
    run = CorpusRun(output=output, documents=len(records), malformed=malformed)
    batches, limit, run.truncated = plan(records, spec, text_field, batch_size, batch_tokens, max_input_length)
    if run.truncated:
        warnings.warn(f"{run.truncated} of {len(records)} documents are longer than {limit} tokens and are cut "
                      "to it (set max_input_length / --max-input-length)", TruncationWarning, stacklevel=2)
    job = Job(spec, limit, tuple(sorted(generation_options.items())))
    with Appender(output) as out:                 # the lock first: nobody else is repairing or appending
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


def _write_results(run, out, todo, done, job, id_field, summary_field, scheduler, workers, blas_threads,
                   progress):
    from tqdm import tqdm

    bar = tqdm(total=sum(sum(i not in done for i in ids) for ids, _ in todo), unit="doc", desc="summaries",
               file=sys.stderr, disable=not progress, dynamic_ncols=True)
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
