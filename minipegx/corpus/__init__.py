"""Whole corpora: summarize a JSON-lines file (or a folder of .txt files) on a Dask cluster, resumably,
and score the summaries with ROUGE. docs/corpus.md tells the story; the modules:

    files.py     corpus in, summaries out: malformed lines, duplicate ids, atomic appends, torn-line repair,
                 outputs that are not the input, documents cut to a character budget as they are read
    jsonstream.py  one JSON line parsed as a stream, however long, keeping only what the run needs
    work.py      the unit of work: length-sorted batches, the model cached once per process
    cluster.py   Dask distributed: LocalCluster sized to the cores, the model plugin, faults
    run.py       summarize_corpus, resuming from the output
    evaluate.py  ROUGE-1/2/L/Lsum with bootstrap intervals and length bands

Dask (the [cluster] extra) and rouge-score (the [eval] extra) are imported only when used.
"""

from .files import read_corpus
from .run import CorpusRun, summarize_corpus

__all__ = ["CorpusRun", "read_corpus", "summarize_corpus", "evaluate_corpus", "rouge_scores", "split_sentences"]


def __getattr__(name):
    if name in ("evaluate_corpus", "rouge_scores", "split_sentences"):
        from . import evaluate

        return getattr(evaluate, name)
    raise AttributeError(f"module 'minipegx.corpus' has no attribute {name!r}")
