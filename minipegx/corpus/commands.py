"""The corpus side of the command line: `minipegx summarize --input ... --output ...` and `minipegx evaluate`.

cli.py adds these flags and calls these functions; nothing here imports Dask or rouge-score until a
command needs it.
"""

from __future__ import annotations

import argparse
import warnings


def add_corpus_flags(p, positive_int, non_negative_int):
    g = p.add_argument_group("a whole corpus (docs/corpus.md); with --input, FILE arguments are not allowed")
    g.add_argument("--input", metavar="CORPUS", help="a JSON-lines file of {id, text} or a folder of .txt files")
    g.add_argument("--output", metavar="OUT.jsonl", help="JSON lines {id, summary}; a rerun resumes it")
    g.add_argument("--id-field", default="id")
    g.add_argument("--text-field", default="text")
    g.add_argument("--summary-field", default="summary")
    g.add_argument("--scheduler", metavar="ADDRESS", help="a running Dask scheduler (default: a LocalCluster)")
    g.add_argument("--workers", type=non_negative_int,
                   help="LocalCluster worker processes (default: cores / --blas-threads; 0: no Dask, this process)")
    g.add_argument("--blas-threads", type=positive_int, help="BLAS threads per worker (default 1)")
    g.add_argument("--batch-tokens", type=positive_int, default=16384,
                   help="padded tokens per batch at most (documents are batched by length)")
    g.add_argument("--skip-malformed", action="store_true",
                   help="leave malformed input lines out (they are listed) instead of stopping")


def _resamples(s):
    from .evaluate import MAX_RESAMPLES

    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {s!r:.40}") from None
    if not 1 <= v <= MAX_RESAMPLES:
        raise argparse.ArgumentTypeError(f"expected a number from 1 to {MAX_RESAMPLES:,}, got {v}")
    return v


def _output_file(check):
    def parse(s):
        from ..errors import MiniPegxError

        try:
            return check(s)
        except MiniPegxError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return parse


def _plot_path(s):
    from .evaluate import check_plot_path

    return _output_file(check_plot_path)(s)


def _json_path(s):
    from .files import check_output_path

    return _output_file(lambda p: (check_output_path(p, "--json"), p)[1])(s)


def add_evaluate_parser(sub, non_negative_int):
    e = sub.add_parser("evaluate", help="ROUGE-1/2/L/Lsum of a corpus' summaries, with 95%% intervals")
    e.add_argument("--predictions", required=True, metavar="OUT.jsonl")
    e.add_argument("--references", required=True, metavar="CORPUS.jsonl")
    e.add_argument("--id-field", default="id")
    e.add_argument("--prediction-field", default="summary")
    e.add_argument("--reference-field", default="summary")
    e.add_argument("--text-field", default="text", help="the document, for the length bands")
    e.add_argument("--resamples", type=_resamples, default=1000, help="bootstrap resamples (1 to 100,000)")
    e.add_argument("--seed", type=non_negative_int, default=0)
    e.add_argument("--tokenizer", choices=["unicode", "rouge-score"], default="unicode",
                   help="ROUGE tokens: every script (default; rouge-score's own on ASCII text) or rouge-score's "
                        "a-z0-9 only")
    e.add_argument("--allow-missing", action="store_true", help="score only the references that have a prediction")
    e.add_argument("--json", metavar="PATH", type=_json_path, help="write the report as JSON")
    e.add_argument("--plot", metavar="PATH.png", type=_plot_path,
                   help="draw the bands (needs matplotlib; .png, .pdf, .svg or .jpg)")
    return e


def run_corpus(args, options) -> int:
    from ..errors import MiniPegxError
    from .run import summarize_corpus

    if args.files != ["-"]:
        raise MiniPegxError("give either FILE arguments or --input, not both")
    if not args.output:
        raise MiniPegxError("--input needs --output (the JSON-lines file the summaries go to)")
    run = summarize_corpus(args.input, args.output, model=args.model, id_field=args.id_field,
                           text_field=args.text_field, summary_field=args.summary_field, scheduler=args.scheduler,
                           workers=args.workers, blas_threads=args.blas_threads, batch_size=args.batch_size,
                           batch_tokens=args.batch_tokens, max_input_length=args.max_input_length,
                           on_malformed="skip" if args.skip_malformed else "error", progress=not args.quiet,
                           backend=args.backend, dtype=args.dtype, quantize=args.quantize, **options)
    from ..streams import say

    for line in run.malformed:
        say(f"minipegx: skipped {line}")
    notes = [f"{run.already_done} already done", f"{len(run.malformed)} malformed lines skipped"]
    if run.repaired_bytes:
        notes.append(f"a torn last line ({run.repaired_bytes} bytes) cut off and redone")
    if run.unknown_in_output:
        notes.append(f"{run.unknown_in_output} ids in the output are not in the corpus")
    say(f"{run.written} summaries written to {run.output} in {run.seconds:.1f} s "
        f"({run.docs_per_second:.2f} docs/s); {run.documents} documents, " + ", ".join(notes))
    return 0


def run_evaluate(args) -> int:
    from ..errors import MiniPegxWarning
    from .evaluate import evaluate_corpus, format_table, plot_report, write_json

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", MiniPegxWarning)
        report = evaluate_corpus(args.predictions, args.references, id_field=args.id_field,
                                 prediction_field=args.prediction_field, reference_field=args.reference_field,
                                 text_field=args.text_field, n_resamples=args.resamples, seed=args.seed,
                                 allow_missing=args.allow_missing, tokenizer=args.tokenizer,
                                 json_path=args.json, plot_path=args.plot)
    from ..streams import say

    for w in caught:
        say(f"minipegx: warning: {w.message}")
    from ..streams import write_stdout

    write_stdout(format_table(report))
    if args.json:
        write_json(report, args.json)
    if args.plot:
        plot_report(report, args.plot)
    return 0
