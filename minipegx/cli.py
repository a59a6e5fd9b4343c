"""The command line: `minipegx summarize`, `minipegx demo`, `minipegx parity`, `minipegx evaluate`.

Errors print one line (`minipegx: error: ...`) and exit non-zero, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from .corpus import commands as corpus_commands
from .errors import MiniPegxError

EXIT_USAGE, EXIT_ERROR = 2, 1


def int_at_least(lo):
    """An argparse type: a whole number >= lo, with a one-line message otherwise."""
    def parse(s):
        try:
            v = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {s!r}") from None
        if v < lo:
            raise argparse.ArgumentTypeError(f"expected a number >= {lo}, got {v}")
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
    m.add_argument("--model", help="checkpoint directory (default: the bundled demo model)")
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
            data = sys.stdin.buffer.read()
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
            self.bar = tqdm(total=max_steps, desc=self.label, unit="tok", file=sys.stderr, leave=False)
        self.bar.total = max_steps
        self.bar.set_postfix(beams=alive, refresh=False)
        self.bar.update(step - self.bar.n)

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def run_summarize(args, read):
    """Load the model first (a bad --model fails before standard input is read), then summarize."""
    from .pipeline import load, summarize

    options = {k: getattr(args, k) for k in GENERATION_FLAGS if getattr(args, k, None) is not None}
    model, tok = load(args.model, None, args.backend, args.dtype, args.quantize)
    inputs = read()
    results = []
    for name, text in inputs:
        progress = Progress(os.path.basename(name) if name != "-" else "stdin",
                            not args.quiet and sys.stderr.isatty())
        try:
            out = summarize([text], model=model, tokenizer=tok, batch_size=args.batch_size,
                            max_input_length=args.max_input_length, progress=progress, **options)
        finally:
            progress.close()
        results.append({"file": name, "summary": out[0] if len(out) == 1 else out})
    if args.json:
        print(json.dumps(results, ensure_ascii=False, indent=2))
    else:
        for r in results:
            if len(results) > 1:
                print(f"== {r['file']}")
            print(r["summary"] if isinstance(r["summary"], str) else "\n".join(r["summary"]))
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(prog="minipegx", description="PEGASUS-X in NumPy/CuPy: summarize long documents.")
    sub = ap.add_subparsers(dest="command", required=True)
    s = sub.add_parser("summarize", help="summarize files (or standard input)")
    s.add_argument("files", nargs="*", default=["-"], metavar="FILE", help="text files; '-' reads standard input")
    add_generation_flags(s)
    corpus_commands.add_corpus_flags(s, positive_int, non_negative_int)
    corpus_commands.add_evaluate_parser(sub)
    d = sub.add_parser("demo", help="summarize the bundled example document with the bundled demo model")
    add_generation_flags(d)
    p = sub.add_parser("parity", help="compare every intermediate with transformers (needs the test extra)")
    p.add_argument("checkpoint")
    p.add_argument("--text", default="PEGASUS-X reads long documents in blocks, with a few global tokens.")
    p.add_argument("--steps", type=non_negative_int, default=2)
    args = ap.parse_args(argv)
    try:
        if args.command == "parity":
            from .parity import main as parity_main
            return parity_main([args.checkpoint, "--text", args.text, "--steps", str(args.steps)])
        if args.command == "demo":
            from . import example_document
            from .model import demo_model_path
            doc = example_document()
            n_words = len(doc.split())
            print(f"Document: minipegx/data/example_document.txt ({n_words} words). It begins:\n  "
                  f"{doc[:300].strip()} ...\n", flush=True)
            print("Summary by the bundled demo model:", flush=True)
            code = run_summarize(args, lambda: [("example_document.txt", doc)])
            truth = os.path.join(demo_model_path(), "..", "example_summary.txt")
            if os.path.isfile(truth) and not args.json:
                with open(truth, encoding="utf-8") as f:
                    print(f"\nThe true summary:\n{f.read().strip()}")
            return code
        if args.command == "evaluate":
            return corpus_commands.run_evaluate(args)
        if args.input:
            options = {k: getattr(args, k) for k in GENERATION_FLAGS if getattr(args, k, None) is not None}
            return corpus_commands.run_corpus(args, options)
        return run_summarize(args, lambda: read_inputs(args.files))
    except MiniPegxError as e:
        print(f"minipegx: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("minipegx: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
