"""The command line: `minipegx summarize`, `minipegx demo`, `minipegx parity`, `minipegx evaluate`, `minipegx finetune`.

Errors print one line (`minipegx: error: ...`) and exit non-zero, never a traceback: exit 1 for an
error, 2 for a usage mistake, 130 for Ctrl-C at any moment (start-up and imports included), 141 when
the reader of standard output goes away (`minipegx summarize doc.txt | head -c0`), 70 for a bug (one
line; MINIPEGX_DEBUG=1 shows the traceback).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys

from .corpus import commands as corpus_commands
from .errors import MiniPegxError
from .streams import QuietStderr, hold_closed_descriptors, read_stdin, say, stdout_closed, write_stdout

EXIT_USAGE, EXIT_ERROR = 2, 1
EXIT_BUG, EXIT_INTERRUPTED, EXIT_BROKEN_PIPE = 70, 130, 141  # 70: sysexits' EX_SOFTWARE; 128 + SIGINT, SIGPIPE


def int_at_least(lo):
    """An argparse type: a whole number >= lo, with a one-line message otherwise."""
    def parse(s):
        try:
            v = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {s!r:.40}") from None
        if v < lo:
            raise argparse.ArgumentTypeError(f"expected a number >= {lo}, got {s!r:.40}")
        return v
    return parse


positive_int, non_negative_int = int_at_least(1), int_at_least(0)


def number(s):
    try:
        return float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {s!r}") from None


def early_stopping(s):
    if s in ("true", "True", "1"):
        return True
    if s in ("false", "False", "0"):
        return False
    if s == "never":
        return "never"
    raise argparse.ArgumentTypeError(f"expected true, false or never, got {s!r}")


def add_generation_flags(p):
    g = p.add_argument_group("generation (defaults from the checkpoint's generation_config.json)")
    g.add_argument("--num-beams", type=positive_int)
    g.add_argument("--max-new-tokens", type=positive_int)
    g.add_argument("--min-new-tokens", type=non_negative_int)
    g.add_argument("--max-length", type=positive_int)
    g.add_argument("--min-length", type=non_negative_int)
    g.add_argument("--length-penalty", type=number)
    g.add_argument("--early-stopping", type=early_stopping, metavar="{true,false,never}")
    g.add_argument("--no-repeat-ngram-size", type=non_negative_int)
    g.add_argument("--encoder-no-repeat-ngram-size", type=non_negative_int)
    g.add_argument("--num-return-sequences", type=positive_int)
    g.add_argument("--do-sample", action="store_true", default=None)
    g.add_argument("--temperature", type=number)
    g.add_argument("--top-k", type=non_negative_int)
    g.add_argument("--top-p", type=number)
    g.add_argument("--seed", type=non_negative_int)
    m = p.add_argument_group("model")
    m.add_argument("--model", help="checkpoint directory (default: the bundled long demo model)")
    m.add_argument("--backend", choices=["numpy", "cupy"], default="numpy")
    m.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default="float32")
    m.add_argument("--quantize", choices=["int8", "nf4"])
    m.add_argument("--max-input-length", type=positive_int, help="tokens kept per input (a cut is announced)")
    m.add_argument("--batch-size", type=positive_int, default=4)
    p.add_argument("--json", action="store_true", help="print a JSON list of {file, summary}")
    p.add_argument("--quiet", action="store_true", help="no progress display")


GENERATION_FLAGS = ("num_beams", "max_new_tokens", "min_new_tokens", "max_length", "min_length", "length_penalty",
                    "early_stopping", "no_repeat_ngram_size", "encoder_no_repeat_ngram_size",
                    "num_return_sequences", "do_sample", "temperature", "top_k", "top_p", "seed")


def read_inputs(files):
    """(name, text) for each FILE, '-' meaning standard input; clear errors for unreadable files."""
    out = []
    for name in files:
        if name == "-":
            data = read_stdin()
        else:
            if not os.path.isfile(name):
                raise MiniPegxError(f"cannot read {name}: no such file")
            try:
                with open(name, "rb") as f:
                    data = f.read()
            except OSError as e:
                raise MiniPegxError(f"cannot read {name}: {e.strerror}") from None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise MiniPegxError(f"{name} is not valid UTF-8 (bad byte at offset {e.start}); "
                                "convert it, e.g. iconv -f latin1 -t utf-8") from None
        out.append((name, text))
    return out


class Progress:
    """A tqdm bar over decoding steps on stderr: tokens generated and live beams."""

    def __init__(self, label, enabled):
        self.label, self.enabled, self.bar = label, enabled, None

    def __call__(self, step, max_steps, alive):
        if not self.enabled:
            return
        if self.bar is None:
            from tqdm import tqdm
            self.bar = tqdm(total=max_steps, desc=self.label, unit="tok", file=QuietStderr(), leave=False)
        self.bar.total = max_steps
        self.bar.set_postfix(beams=alive, refresh=False)
        self.bar.update(step - self.bar.n)

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def run_summarize(args, read):
    """Load the model first (a bad --model fails before standard input is read), then summarize what
    read(tokenizer) gives: [(name, text)]."""
    from .pipeline import load, summarize

    options = {k: getattr(args, k) for k in GENERATION_FLAGS if getattr(args, k, None) is not None}
    model, tok = load(args.model, None, args.backend, args.dtype, args.quantize)
    inputs = read(tok)
    results = []
    for name, text in inputs:
        progress = Progress(os.path.basename(name) if name != "-" else "stdin",
                            not args.quiet and QuietStderr().isatty())
        try:
            out = summarize([text], model=model, tokenizer=tok, batch_size=args.batch_size,
                            max_input_length=args.max_input_length, progress=progress, **options)
        finally:
            progress.close()
        results.append({"file": name, "summary": out[0] if len(out) == 1 else out})
    if args.json:
        write_stdout(json.dumps(results, ensure_ascii=False, indent=2))
    else:
        for r in results:
            if len(results) > 1:
                write_stdout(f"== {r['file']}")
            write_stdout(r["summary"] if isinstance(r["summary"], str) else "\n".join(r["summary"]))
    return 0


def run_demo(args):
    """`minipegx demo`: the long example document, summarized by the default (long) demo model, then its
    true summary."""
    from . import example_document, example_path, example_summary

    doc = example_document("long")
    name = os.path.basename(example_path("long", "document"))

    def read(tok):   # the header needs the loaded model's tokenizer for the token count
        write_stdout(f"Document: minipegx/data/{name} ({len(tok.encode(doc)):,} tokens, {len(doc.split()):,} "
                     f"words). It begins:\n  {doc[:300].strip()} ...\n")
        write_stdout("Summary by the bundled demo model:")
        return [(name, doc)]

    code = run_summarize(args, read)
    if not args.json:
        write_stdout(f"\nThe true summary:\n{example_summary('long').strip()}")
    return code


def add_finetune_parser(sub):
    """`minipegx finetune` (minipegx/training/finetune.py; docs/training.md). Values are checked there, by name."""
    f = sub.add_parser("finetune", help="fine-tune a model on JSON-lines {text, summary} pairs (resumable)")
    f.add_argument("--train", required=True, metavar="TRAIN.jsonl", help="JSON lines with a text and a summary")
    f.add_argument("--valid", metavar="VALID.jsonl", help="validation pairs: loss and ROUGE at each evaluation")
    f.add_argument("--model", help="checkpoint directory to start from (default: the bundled long demo model)")
    f.add_argument("--out", required=True, metavar="DIR",
                   help="where the run goes (new, empty, or this run's own folder: the same command resumes it)")
    f.add_argument("--steps", type=int, default=1000, help="optimizer steps (default 1000)")
    f.add_argument("--lr", type=number, default=1e-4, help="peak learning rate (default 1e-4)")
    f.add_argument("--batch-tokens", type=int, default=8192,
                   help="padded input tokens per batch at most; documents are batched by length (default 8192)")
    f.add_argument("--text-field", default="text")
    f.add_argument("--summary-field", default="summary")
    f.add_argument("--skip-malformed", action="store_true", help="leave malformed lines out (listed) instead of stopping")
    o = f.add_argument_group("optimization")
    o.add_argument("--warmup", type=int, help="linear warmup steps (default: 10%% of --steps, at most 100)")
    o.add_argument("--schedule", default="cosine", help="decay after warmup: cosine, linear or constant")
    o.add_argument("--weight-decay", type=number, default=0.01, help="AdamW's, on weight matrices (default 0.01)")
    o.add_argument("--max-grad-norm", type=number, default=1.0, help="clip the global gradient norm (0: off)")
    o.add_argument("--label-smoothing", type=number, default=0.0, help="the paper fine-tunes with 0.1")
    o.add_argument("--max-input-length", type=int, help="cut documents to this many tokens (default: the model's)")
    o.add_argument("--max-target-length", type=int, default=256, help="cut summaries to this many tokens")
    o.add_argument("--seed", type=int, default=0, help="the order of the batches")
    o.add_argument("--recompute", action="store_true", help="recompute each layer in the backward pass (less memory)")
    r = f.add_argument_group("evaluation, checkpoints, progress")
    r.add_argument("--eval-every", type=int, help="steps between evaluations (default: --steps / 5)")
    r.add_argument("--eval-docs", type=int, default=16, help="validation documents summarized for ROUGE (0: none)")
    r.add_argument("--save-every", type=int, help="steps between checkpoints (default: --eval-every)")
    r.add_argument("--keep-checkpoints", type=int, default=2)
    r.add_argument("--log-every", type=int, default=10)
    r.add_argument("--stop-at", type=int, metavar="STEP", help="stop after this step (and a checkpoint); rerun to go on")
    r.add_argument("--backend", choices=["numpy", "cupy"], default="numpy")
    r.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    r.add_argument("--quiet", action="store_true", help="no progress lines")
    return f


def _main(argv=None):
    ap = argparse.ArgumentParser(prog="minipegx", description="PEGASUS-X in NumPy/CuPy: summarize long documents.")
    sub = ap.add_subparsers(dest="command", required=True)
    s = sub.add_parser("summarize", help="summarize files (or standard input)")
    s.add_argument("files", nargs="*", default=["-"], metavar="FILE", help="text files; '-' reads standard input")
    add_generation_flags(s)
    corpus_commands.add_corpus_flags(s, positive_int, non_negative_int)
    corpus_commands.add_evaluate_parser(sub, non_negative_int)
    d = sub.add_parser("demo", help="summarize the bundled long example document with the default (long) demo model")
    add_generation_flags(d)
    p = sub.add_parser("parity", help="compare every intermediate with transformers (needs the test extra)")
    p.add_argument("checkpoint")
    p.add_argument("--text", default="PEGASUS-X reads long documents in blocks, with a few global tokens.")
    p.add_argument("--steps", type=non_negative_int, default=2)
    e = sub.add_parser("explore", help="write one self-contained HTML page to click through a document's attention")
    e.add_argument("file", metavar="FILE", help="a text file of up to 16,384 tokens; '-' reads standard input")
    e.add_argument("--out", required=True, help="the HTML file to write")
    e.add_argument("--model", help="checkpoint directory (default: the bundled demo model)")
    e.add_argument("--no-summary", action="store_true", help="skip generating a summary and its cross-attention")
    add_finetune_parser(sub)
    args = ap.parse_args(argv)
    _COMMAND[:] = [args.command]
    try:
        if stdout_closed() and not (args.command == "summarize" and args.input):
            raise MiniPegxError("standard output is closed; redirect it to a file (> out.txt)")
        if args.command == "finetune":
            from .training.finetune import run_cli
            return run_cli(args)
        if args.command == "parity":
            from .parity import main as parity_main
            return parity_main([args.checkpoint, "--text", args.text, "--steps", str(args.steps)])
        if args.command == "explore":
            from .explore import run_cli
            return run_cli(args, read_inputs, write_stdout)
        if args.command == "demo":
            return run_demo(args)
        if args.command == "evaluate":
            return corpus_commands.run_evaluate(args)
        if args.input:
            options = {k: getattr(args, k) for k in GENERATION_FLAGS if getattr(args, k, None) is not None}
            return corpus_commands.run_corpus(args, options)
        return run_summarize(args, lambda tok: read_inputs(args.files))
    except MiniPegxError as e:
        _say(f"minipegx: error: {e}")
        return EXIT_ERROR
    except KeyboardInterrupt:
        _say("minipegx: interrupted")
        return 130


# ---------------------------------------------------------------------------------------------- the process
def main(argv=None):
    """Run one command; whatever happens, one line on stderr and an exit code, never a traceback."""
    return _guarded(argv, after=None)


def console():
    """The `minipegx` command and `python -m minipegx`: main() as the whole process.

    Unlike main() called from Python, it leaves Ctrl-C ignored once the work is done, so the
    interpreter's exit cannot be interrupted into a traceback either, and it holds closed standard
    descriptors with /dev/null so no file it opens takes their numbers (streams.py)."""
    hold_closed_descriptors()
    return _guarded(None, after=signal.SIG_IGN)


def _guarded(argv, after):
    """_main(argv) under the CLI's rules; then SIGINT's handler is `after` (None: the one before)."""
    _INTERRUPTED.clear()
    _COMMAND.clear()
    previous = _catch_sigint()
    try:
        try:
            code = _main(argv)
        except SystemExit:  # argparse's --help and usage errors leave through SystemExit, output flushed first
            try:
                _flush_stdout()
            except MiniPegxError:
                pass
            raise
        _flush_stdout()  # a reader that went away shows up here, inside the guard, not at exit
        return code
    except KeyboardInterrupt:
        _say("minipegx: interrupted")
        return EXIT_INTERRUPTED
    except Exception as e:
        return _report(e)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, after if after is not None else previous)


def _flush_stdout() -> None:
    if sys.stdout is None:
        return
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        raise
    except (OSError, ValueError) as e:
        _silence_stdout()  # the interpreter's own flush at exit must not fail again
        raise MiniPegxError(f"cannot write standard output: {getattr(e, 'strerror', None) or e}") from None


def _report(e: Exception) -> int:
    """One line on stderr for an exception that ended the command; its exit code."""
    if _INTERRUPTED or _caused_by_interrupt(e):  # Ctrl-C inside a C extension's import arrives as an ImportError,
        # chained to the KeyboardInterrupt or (NumPy's, when the signal lands in its extension) not at all
        _say("minipegx: interrupted")
        return EXIT_INTERRUPTED
    if isinstance(e, BrokenPipeError):
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    if isinstance(e, MiniPegxError):
        _say(f"minipegx: error: {e}")
    elif isinstance(e, MemoryError):
        _say("minipegx: error: out of memory" + _MEMORY_ADVICE.get(_COMMAND[0] if _COMMAND else "", ""))
    elif isinstance(e, OSError):
        _say(f"minipegx: error: {e.strerror or e}" + (f": {e.filename}" if e.filename else ""))
    else:  # a bug: say so in one line, traceback on request
        if os.environ.get("MINIPEGX_DEBUG"):
            raise e
        _say(f"minipegx: internal error (a bug, please report it; MINIPEGX_DEBUG=1 shows the traceback): "
             f"{type(e).__name__}: {str(e)[:300]}")
        return EXIT_BUG
    return EXIT_ERROR


def _caused_by_interrupt(e: BaseException) -> bool:
    for _ in range(20):  # the chain of causes, bounded (it can be a cycle)
        if e is None:
            return False
        if isinstance(e, KeyboardInterrupt):
            return True
        e = e.__cause__ or e.__context__
    return False


_COMMAND = []  # the subcommand being run, for advice that names only its own flags
_MEMORY_ADVICE = {"summarize": "; try a smaller --batch-size, --max-input-length or --dtype bfloat16",
                  "demo": "; try --dtype bfloat16", "explore": "; try a shorter document",
                  "evaluate": "; try fewer --resamples"}
_INTERRUPTED = []  # the SIGINTs the handler below has turned into KeyboardInterrupt


def _catch_sigint():
    """From here on, the first Ctrl-C raises KeyboardInterrupt and any further one is ignored (so the
    line saying 'interrupted' cannot itself be interrupted). Returns the handler to restore."""
    def interrupted(signum, frame):
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        _INTERRUPTED.append(signum)  # a library may turn the KeyboardInterrupt into another exception
        raise KeyboardInterrupt

    try:
        return signal.signal(signal.SIGINT, interrupted)
    except ValueError:  # not the main thread: signals are not ours to handle
        return None


def _say(line: str) -> None:
    say(line)  # stderr closed or a broken pipe too: nothing left to tell


def _silence_stdout() -> None:
    """The Python docs' recipe for SIGPIPE: point stdout at devnull so the exit flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


if __name__ == "__main__":
    sys.exit(console())
