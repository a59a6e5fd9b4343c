"""The command line with a closed or broken standard stream: a one-line error naming the stream, exit 1,
never a traceback (a reader that goes away is the one exception: exit 141, tests/test_cli_signals.py).
Real processes, the streams set up as a shell would (`<&-`, `>&-`, `> /dev/full`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

SUMMARIZE = [sys.executable, "-m", "minipegx", "summarize", "--quiet", "--max-new-tokens", "2"]


@pytest.fixture
def doc(tmp_path):
    p = tmp_path / "doc.txt"
    p.write_text("Mirela carried 47 lanterns to Ostbridge. Tobias sold 12 barrels to Kellin.", encoding="utf-8")
    return p


def run(argv, stdin=None, stdout=None, stderr=None):
    """(exit code, stderr) of argv with the given standard streams; "closed" closes the descriptor."""
    def close():
        for fd, how in ((0, stdin), (1, stdout), (2, stderr)):
            if how == "closed":
                os.close(fd)
    r = subprocess.run(argv, stdin=None if stdin == "closed" else stdin,
                       stdout=None if stdout == "closed" else stdout or subprocess.DEVNULL,
                       stderr=None if stderr == "closed" else stderr or subprocess.PIPE, preexec_fn=close,
                       timeout=120)
    return r.returncode, (r.stderr or b"").decode()


def one_line_error(result, *words):
    code, err = result
    assert code == 1 and err.startswith("minipegx: error:") and err.count("\n") == 1, result
    assert all(w in err for w in words), err


def test_standard_input_closed(doc):
    one_line_error(run(SUMMARIZE + ["-"], stdin="closed"), "standard input is closed")
    one_line_error(run([sys.executable, "-m", "minipegx", "explore", "-", "--out", str(doc) + ".html"],
                       stdin="closed"), "standard input is closed")


def test_standard_input_that_cannot_be_read(doc, tmp_path):
    with open(tmp_path / "w", "wb") as write_only:           # fd 0 open for writing only: read fails (EBADF)
        one_line_error(run(SUMMARIZE + ["-"], stdin=write_only), "cannot read standard input")


def test_standard_output_closed(doc):
    one_line_error(run(SUMMARIZE + [str(doc)], stdout="closed"), "standard output is closed")


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize("flags", [[], ["--json"]])
def test_standard_output_that_cannot_be_written(doc, flags):
    with open("/dev/full", "wb") as full:
        one_line_error(run(SUMMARIZE + flags + [str(doc)], stdout=full), "cannot write standard output")


def test_evaluate_with_standard_output_closed_writes_nothing_and_says_so(tmp_path):
    refs = tmp_path / "r.jsonl"
    refs.write_text('{"id": 1, "summary": "a b c"}\n')
    one_line_error(run([sys.executable, "-m", "minipegx", "evaluate", "--predictions", str(refs), "--references",
                        str(refs), "--resamples", "5"], stdout="closed"), "standard output is closed")


@pytest.mark.parametrize("stderr", ["closed", "full"])
def test_a_corpus_run_with_standard_error_closed_or_full_writes_every_summary_and_only_them(tmp_path, stderr):
    """Its progress bar and its report go to standard error: they are dropped, the run goes on; and the
    output file, opened while descriptor 2 is free, never receives what is written to standard error."""
    corpus, out = tmp_path / "c.jsonl", tmp_path / "out.jsonl"
    corpus.write_text('{"id": 1, "text": "Mirela carried 47 lanterns to Ostbridge."}\n'
                      '{"id": 2, "text": "Tobias sold 12 barrels to Kellin."}\n', encoding="utf-8")
    argv = [sys.executable, "-m", "minipegx", "summarize", "--input", str(corpus), "--output", str(out),
            "--workers", "0", "--max-new-tokens", "2", "--max-input-length", "4"]   # a cut: a warning on stderr
    if stderr == "full" and not os.path.exists("/dev/full"):
        pytest.skip("needs /dev/full")
    with open("/dev/full" if stderr == "full" else os.devnull, "wb") as full:
        code, _ = run(argv, stderr="closed" if stderr == "closed" else full)
    assert code == 0
    lines = out.read_text(encoding="utf-8").splitlines()
    assert sorted(json.loads(line)["id"] for line in lines) == [1, 2]
