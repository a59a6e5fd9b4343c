"""Standard input and output for the command line: a closed or broken stream is a one-line error.

`minipegx summarize - <&-` starts with no standard input at all (sys.stdin is None), `>&-` with no
standard output, `> /dev/full` with one that fails at the first flush. Each is a MiniPegxError naming
the stream (exit 1). A reader that went away (EPIPE: `| head -c0`) is left a BrokenPipeError, which the
CLI turns into a quiet exit 141, the shell's own convention for a pipeline cut short.
"""

from __future__ import annotations

import os
import sys

from .errors import MiniPegxError

CLOSED: set = set()  # standard descriptors (0, 1, 2) found closed when the command started


def hold_closed_descriptors() -> None:
    """Point each closed standard descriptor at /dev/null, and remember it in CLOSED.

    With fd 2 closed, the next file minipegx opens (the corpus output, say) would get descriptor 2, and
    anything written to standard error (a warning, a C library's message) would land inside it. Held by
    /dev/null, the numbers stay taken; the streams' functions below still treat them as closed."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            CLOSED.add(fd)
            try:
                null = os.open(os.devnull, os.O_RDWR)
                if null != fd:
                    os.dup2(null, fd)
                    os.close(null)
            except OSError:
                pass


def read_stdin() -> bytes:
    """All of standard input; a one-line error when it is closed (`<&-`) or cannot be read (a folder,
    a write-only descriptor)."""
    stream = getattr(sys.stdin, "buffer", None)
    if stream is None or 0 in CLOSED:
        raise MiniPegxError("standard input is closed; give a FILE, or pipe the text in")
    try:
        return stream.read()
    except OSError as e:
        raise MiniPegxError(f"cannot read standard input: {e.strerror or e}") from None
    except ValueError:  # a file object closed by the caller: "I/O operation on closed file"
        raise MiniPegxError("standard input is closed; give a FILE, or pipe the text in") from None


def write_stdout(text: str) -> None:
    """print() to standard output, flushed; a one-line error when it is closed or cannot be written
    (`>&-`, /dev/full). A reader that went away (EPIPE) stays a BrokenPipeError: exit 141, quietly.
    A file name that is not valid in the output's encoding (bytes Python kept as lone surrogates) is
    written back as its original bytes (surrogateescape), else with backslash escapes."""
    if sys.stdout is None or 1 in CLOSED:
        raise MiniPegxError("standard output is closed; redirect it to a file (> out.txt)")
    try:
        try:
            print(text, flush=True)
        except UnicodeEncodeError:
            encoding = getattr(sys.stdout, "encoding", None) or "utf-8"
            try:
                data = (text + "\n").encode(encoding, "surrogateescape")
            except UnicodeEncodeError:
                data = (text + "\n").encode(encoding, "backslashreplace")
            sys.stdout.flush()
            sys.stdout.buffer.write(data)
            sys.stdout.flush()
    except BrokenPipeError:
        raise
    except OSError as e:
        raise MiniPegxError(f"cannot write standard output: {e.strerror or e}") from None
    except (ValueError, AttributeError):   # closed by the caller, or a replacement stream without .buffer
        raise MiniPegxError("standard output is closed; redirect it to a file (> out.txt)") from None


def say(line: str) -> None:
    """One line on standard error, flushed; nothing when it is closed or broken (nothing left to tell)."""
    if sys.stderr is None or 2 in CLOSED:
        return
    try:
        print(line, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


def stdout_closed() -> bool:
    return sys.stdout is None or 1 in CLOSED


class QuietStderr:
    """Standard error for progress bars: a write that fails (closed, broken, a full disk) is dropped, so
    a progress bar can never end a run."""

    def write(self, text):
        if sys.stderr is not None and 2 not in CLOSED:
            try:
                sys.stderr.write(text)
            except (OSError, ValueError):
                pass
        return len(text)

    def flush(self):
        if sys.stderr is not None and 2 not in CLOSED:
            try:
                sys.stderr.flush()
            except (OSError, ValueError):
                pass

    def isatty(self):
        try:
            return sys.stderr is not None and 2 not in CLOSED and sys.stderr.isatty()
        except (OSError, ValueError):
            return False
