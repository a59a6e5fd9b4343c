"""Corpus files: JSON-lines (or a folder of .txt files) in, JSON-lines out, written so that a crash never
leaves a partial or duplicated record behind.

The output is the checkpoint. Each finished document is one line, written by one `os.write` on a file
opened with O_APPEND and then fsync'ed, so a record is either wholly in the file or not at all: a
process killed between two writes leaves whole lines only. The one thing a crash can leave is a torn
*last* line (the machine lost power, or the disk filled, in the middle of a write); `repair_output`
finds it (no trailing newline, or not JSON) and cuts it off, so its document is simply done again.
An exclusive lock (flock, released by the kernel when the process dies, even by SIGKILL) keeps two
runs from writing the same output at once.

Untrusted input is read with bounded memory (docs/security.md): a document is cut to a character
budget *while it is read* (`cut_text`), a JSON line longer than what a document needs is parsed as a
stream (`jsonstream.py`) without ever holding the line, ids are strings of at most MAX_ID_CHARS
characters (valid Unicode: no lone surrogate) or integers of at most 64 bits, and the output is never
a file the run reads, nor anything but a regular file.
"""

from __future__ import annotations

import codecs
import fcntl
import json
import os
import re
import stat
from dataclasses import dataclass

from ..errors import CorpusError
from ..limits import bounded_repr
from .jsonstream import HUGE, parse_long_line, parse_small_line

MAX_ID_CHARS = 1024                      # an id is a name, not a document
MAX_ID_INT = 2 ** 63                     # |id| below this: an int64 in every tool that reads the output
READ_CHUNK = 1 << 20                     # bytes read at a time from a long line or a .txt file


@dataclass(frozen=True)
class Record:
    """One input record: its id, the fields asked for, and where it came from (for messages)."""
    id: object
    fields: dict
    where: str
    cut: bool = False                    # a field was cut to the character budget while it was read


def check_id(x, id_field="id"):
    """x itself when it is a valid id; else CorpusError naming what is wrong with it."""
    if x is HUGE:
        raise CorpusError(f"the {id_field!r} field is an integer of more than 40 digits; ids are strings or "
                          f"integers below 2^63")
    if isinstance(x, str):
        if len(x) > MAX_ID_CHARS:
            raise CorpusError(f"the {id_field!r} field has more than {MAX_ID_CHARS:,} characters; an id is a "
                              f"name of at most {MAX_ID_CHARS:,}")
        if re.search("[\ud800-\udfff]", x):
            raise CorpusError(f"the {id_field!r} field {bounded_repr(x)} holds a lone surrogate (an escape "
                              "such as \\ud800 without its pair), which cannot be written as UTF-8")
        return x
    if isinstance(x, int) and not isinstance(x, bool):
        if not -MAX_ID_INT < x < MAX_ID_INT:
            raise CorpusError(f"the {id_field!r} field {bounded_repr(x)} is out of range; integer ids must "
                              f"lie strictly between -2^63 and 2^63")
        return x
    raise CorpusError(f"the {id_field!r} field must be a string or an integer, got {bounded_repr(x, 40)}")


def cut_text(text: str, budget) -> tuple[str, bool]:
    """(text cut to at most `budget` characters, whether it was cut). The cut is moved back to the last
    whitespace, so every word kept is whole: the tokenizer splits at whitespace and encodes each word
    alone, so the kept words give exactly the tokens the whole text begins with (a single word longer
    than the budget is cut inside it)."""
    if budget is None or len(text) <= budget:
        return text, False
    head = text[:budget]
    m = re.search(r"\s\S*\Z", head)
    return (head[:m.start()] if m and m.start() > 0 else head), True


def parse_line(raw: bytes, id_field: str, fields, optional=(), budget=None, more=None):
    """(id, {field: value}, cut) of one JSON line; CorpusError with the reason when it is malformed.

    raw: the line, or its first bytes when `more` (a function giving the next bytes of the line, b""
    at its end) is given: then the line is parsed as a stream and only `budget` characters of each
    string field in `fields` and `optional` are kept."""
    if more is None:
        obj = parse_small_line(raw)
    else:
        # one character more than the budget: cut_text then sees the text is longer and cuts at a whitespace
        obj = parse_long_line(raw, more, keep={name: budget + 1 for name in (*fields, *optional)},
                              small=(id_field,), small_chars=MAX_ID_CHARS + 1)
        if obj is None:
            return None
    if not isinstance(obj, dict):
        raise CorpusError(f"expected a JSON object, got {type(obj).__name__}")
    if id_field not in obj:
        names = ", ".join(bounded_repr(k, 40) for k in list(obj)[:10])
        raise CorpusError(f"no {id_field!r} field (fields: {names or 'none'})")
    rid = check_id(obj[id_field], id_field)
    out, cut = {}, False
    for name in fields:
        if not isinstance(obj.get(name), str):
            got = "no such field" if name not in obj else f"a {type(obj[name]).__name__}"
            raise CorpusError(f"the {name!r} field must be a string ({got})")
        out[name], c = cut_text(obj[name], budget)
        cut = cut or c or name in getattr(obj, "cut", ())
    for name in optional:
        if isinstance(obj.get(name), str):
            out[name], _ = cut_text(obj[name], budget)
    return rid, out, cut


def _lines(f, small):
    """(first bytes, more) per line of a binary file: a line of at most `small` bytes whole (more is
    None), a longer one as its first `small` bytes and a function giving the rest, READ_CHUNK at a time."""
    while True:
        raw = f.readline(small + 1)
        if not raw:
            return
        if len(raw) <= small or raw.endswith(b"\n"):
            yield raw, None
            continue
        ended = []

        def more():
            if ended:
                return b""
            chunk = f.readline(READ_CHUNK)
            if not chunk or chunk.endswith(b"\n"):
                ended.append(True)
            return chunk
        yield raw, more
        while more():                       # the parser stopped early (an error): skip to the line's end
            pass


def read_jsonl(path, id_field="id", fields=("text",), optional=(), on_malformed="error", budget=None,
               skip_advice="pass --skip-malformed / on_malformed='skip' to leave such lines out"):
    """(records, malformed) of a JSON-lines file. Blank lines are ignored.

    A malformed line (not UTF-8, not JSON, not an object, a missing or mistyped field, an id that is
    not a string of at most MAX_ID_CHARS characters without lone surrogates or an integer below 2^63)
    is an error naming its line number, or, with on_malformed="skip", is left out and listed in
    `malformed` as "FILE line N: reason". An id that appears twice is always an error naming both lines.
    budget: characters kept of each text field (None: all); a longer line is read as a stream, so
    memory never holds more than about 4 x budget bytes of any line."""
    if on_malformed not in ("error", "skip"):
        raise CorpusError(f"on_malformed must be 'error' or 'skip', got {on_malformed!r}")
    if not os.path.isfile(path):
        kind = _kind(os.stat(path).st_mode) if os.path.exists(path) else "no such file"
        raise CorpusError(f"cannot read {path}: " + (kind if kind == "no such file" else f"it is {kind}, not a "
                                                     "regular file"))
    small = 1 << 62 if budget is None else 6 * budget + (1 << 16)   # a \uXXXX escape is 6 bytes a character
    records, malformed, seen = [], [], {}
    with open(path, "rb") as f:
        for number, (raw, more) in enumerate(_lines(f, small), start=1):
            if more is None and not raw.strip():
                continue
            where = f"{path} line {number}"
            try:
                parsed = parse_line(raw, id_field, fields, optional, budget, more)
                if parsed is None:                  # a long line of nothing but whitespace
                    continue
                rid, values, cut = parsed
            except CorpusError as e:
                if on_malformed == "error":
                    raise CorpusError(f"{where}: {e}" + (f" ({skip_advice})" if skip_advice else "")) from None
                malformed.append(f"{where}: {e}")
                continue
            if rid in seen:
                raise CorpusError(f"{where}: duplicate id {bounded_repr(rid)}, first seen at {seen[rid]}; "
                                  "ids must be unique")
            seen[rid] = where
            records.append(Record(rid, values, where, cut))
    return records, malformed


def read_text(path, budget=None) -> tuple[str, bool]:
    """(the first `budget` characters of a UTF-8 file, whether there was more), READ_CHUNK bytes at a time;
    the rest is still read and checked to be UTF-8 (UnicodeDecodeError with the file's offset)."""
    decoder, parts, kept, cut, offset = codecs.getincrementaldecoder("utf-8")(), [], 0, False, 0
    with open(path, "rb") as f:
        while True:
            chunk = f.read(READ_CHUNK)
            pending = len(decoder.getstate()[0])          # bytes of a character the last chunk cut
            try:
                text = decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as e:               # its offsets count from the pending bytes
                start = offset - pending
                raise UnicodeDecodeError(e.encoding, e.object, start + e.start, start + e.end, e.reason) from None
            offset += len(chunk)
            if budget is None or kept < budget:
                parts.append(text)
                kept += len(text)
            elif text:
                cut = True
            if not chunk:
                break
    text = "".join(parts)
    short, c = cut_text(text, budget)
    return short, cut or c


def read_folder(path, text_field="text", on_malformed="error", budget=None):
    """(records, malformed) of a folder's *.txt files, in name order; the id is the file name without .txt.
    Each file is read READ_CHUNK bytes at a time and only its first `budget` characters are kept."""
    records, malformed = [], []
    for name in sorted(os.listdir(path)):
        full = os.path.join(path, name)
        if not name.endswith(".txt") or not os.path.isfile(full):
            continue
        try:
            rid = check_id(name[:-len(".txt")], "file name")
            text, cut = read_text(full, budget)
        except (UnicodeDecodeError, CorpusError) as e:
            reason = f"not valid UTF-8 (bad byte at offset {e.start})" if isinstance(e, UnicodeDecodeError) else e
            message = f"{full}: {reason}"
            if on_malformed == "error":
                raise CorpusError(message + " (pass --skip-malformed to leave such files out)") from None
            malformed.append(message)
            continue
        records.append(Record(rid, {text_field: text}, full, cut))
    return records, malformed


def read_corpus(path, id_field="id", text_field="text", on_malformed="error", budget=None):
    """(records, malformed) of a corpus: a JSON-lines file or a folder of .txt files; each text is cut to
    `budget` characters while it is read (None: whole)."""
    if os.path.isdir(path):
        records, malformed = read_folder(path, text_field, on_malformed, budget)
    else:
        records, malformed = read_jsonl(path, id_field, (text_field,), on_malformed=on_malformed, budget=budget)
    if not records:
        raise CorpusError(f"{path} holds no documents" + (f" ({len(malformed)} malformed lines skipped)"
                                                           if malformed else ""))
    return records, malformed


def repair_output(path) -> int:
    """Cut a torn last line (one without its newline) off `path`; returns the number of bytes removed.

    Only the last line can be torn: every record is appended whole, newline included, so a complete
    line that is not JSON means someone else wrote to the file; `read_done` reports that as an error."""
    if not os.path.exists(path):
        return 0
    with open(path, "rb") as f:
        data = f.read()
    keep = data.rfind(b"\n") + 1                      # the end of the last complete line (0: none)
    if keep < len(data):
        with open(path, "r+b") as f:
            f.truncate(keep)
            os.fsync(f.fileno())
    return len(data) - keep


def read_done(path, id_field="id") -> set:
    """The ids already in an output file (after `repair_output`)."""
    done = set()
    if not os.path.exists(path):
        return done
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
                done.add(obj[id_field])
            except (ValueError, KeyError, TypeError):
                raise CorpusError(f"{path} line {number} is not a record with an {id_field!r} field; "
                                  "is this the output of another program? Use a new --output") from None
    return done


_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def _kind(mode) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def check_output_path(path, flag="--output", error=CorpusError) -> None:
    """Refuse, before any work, an output that exists and is not a regular file (after symlinks): a FIFO
    would block the open until a reader comes, a device or a folder cannot hold the records. Its folder
    must exist, so the run does not end, after all its work, on an output it cannot create."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise error(f"{flag} {path}: there is no folder {folder}") from None
        return
    except OSError as e:
        raise error(f"{flag} {path}: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{flag} {path} is {_kind(st.st_mode)}, not a regular file; name a file to write")


def _identity(path):
    st = os.stat(path)
    return st.st_dev, st.st_ino


def read_files(paths, suffix="") -> dict:
    """{(device, inode): path} of every file a run reads: each path that is a file, and the files directly
    inside each path that is a folder (those ending in `suffix`)."""
    out = {}
    for path in paths:
        if path is None or not os.path.exists(path):
            continue
        if not os.path.isdir(path):
            out[_identity(path)] = str(path)
            continue
        for name in os.listdir(path):
            full = os.path.join(path, name)
            if name.endswith(suffix) and os.path.isfile(full):
                out[_identity(full)] = full
    return out


def input_files(path) -> set:
    """(device, inode) of every file a corpus run reads: the JSON-lines file, or a folder's .txt files."""
    return set(read_files([path], ".txt"))


def check_not_reading(output, read, flag="--output", error=CorpusError) -> None:
    """Refuse an output that is one of the files `read` ({(device, inode): path}, from read_files) under
    any name: the same path, a symlink, a hard link."""
    if os.path.exists(output) and _identity(output) in read:
        raise error(f"{flag} {output} is {read[_identity(output)]}, which this run reads (the same file under "
                    "another name or a link); write to a new file")


def check_not_input(input, output, also=()) -> None:
    """Refuse an output that is the input (the same file by any name: a symlink, a hard link), lies
    inside a folder corpus, or is one of the files in `also` (the model's): resuming would cut the
    input's last line for a torn one, the summaries would be read back as documents, or a checkpoint
    would be appended to."""
    if os.path.isdir(input):
        folder = os.path.realpath(input)
        where = os.path.realpath(output)
        if os.path.commonpath([folder, where]) == folder:
            raise CorpusError(f"--output {output} is inside the corpus folder {input}; write it elsewhere")
    if os.path.exists(output) and _identity(output) in input_files(input):
        raise CorpusError(f"--output {output} is the input {input} (the same file under another name or a "
                          "link); write the summaries to a new file")
    check_not_reading(output, read_files(also))


class Appender:
    """Appends one JSON record per line to `path`: one os.write on an O_APPEND descriptor, then fsync.

    Holds an exclusive flock on the file for its lifetime, so a second run on the same output fails
    at once instead of interleaving records."""

    def __init__(self, path, refuse=frozenset()):
        """refuse: (device, inode) pairs the output must not be (the input's files), checked on the
        descriptor itself, so a file swapped in after the path checks is still refused."""
        self.path = path
        # O_NONBLOCK: a FIFO put in the output's place after check_output_path fails here instead of waiting
        try:
            self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK, 0o644)
        except OSError as e:                      # ENXIO: a FIFO without a reader; EISDIR: a folder
            raise CorpusError(f"cannot write --output {path}: {e.strerror}; name a regular file") from None
        st = os.fstat(self.fd)
        if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) in refuse:
            os.close(self.fd)
            raise CorpusError(f"--output {path} is " + ("the input" if stat.S_ISREG(st.st_mode) else
                                                        _kind(st.st_mode)) + "; write the summaries to a new file")
        os.set_blocking(self.fd, True)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise CorpusError(f"{path} is being written by another run (it holds the file's lock); "
                              "wait for it or choose another --output") from None

    def write(self, record: dict) -> None:
        line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        n = os.write(self.fd, line)
        if n != len(line):                            # a full disk: the next run cuts this torn line off
            raise CorpusError(f"short write to {self.path} ({n} of {len(line)} bytes); is the disk full?")
        os.fsync(self.fd)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)                         # also releases the lock
            self.fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
