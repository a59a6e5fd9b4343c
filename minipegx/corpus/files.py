"""Corpus files: JSON-lines (or a folder of .txt files) in, JSON-lines out, written so that a crash never
leaves a partial or duplicated record behind.

The output is the checkpoint. Each finished document is one line, written by one `os.write` on a file
opened with O_APPEND and then fsync'ed, so a record is either wholly in the file or not at all: a
process killed between two writes leaves whole lines only. The one thing a crash can leave is a torn
*last* line (the machine lost power, or the disk filled, in the middle of a write); `repair_output`
finds it (no trailing newline, or not JSON) and cuts it off, so its document is simply done again.
An exclusive lock (flock, released by the kernel when the process dies, even by SIGKILL) keeps two
runs from writing the same output at once.
"""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import dataclass

from ..errors import CorpusError


@dataclass(frozen=True)
class Record:
    """One input record: its id, the fields asked for, and where it came from (for messages)."""
    id: object
    fields: dict
    where: str


def _valid_id(x) -> bool:
    return isinstance(x, str) or (isinstance(x, int) and not isinstance(x, bool))


def parse_line(raw: bytes, id_field: str, fields, optional=()) -> tuple[object, dict]:
    """(id, {field: value}) of one JSON line; CorpusError with the reason when it is malformed."""
    try:
        obj = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise CorpusError(f"not valid UTF-8 (bad byte at offset {e.start})") from None
    except json.JSONDecodeError as e:
        raise CorpusError(f"not JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(obj, dict):
        raise CorpusError(f"expected a JSON object, got {type(obj).__name__}")
    if id_field not in obj:
        raise CorpusError(f"no {id_field!r} field (fields: {', '.join(map(repr, obj)) or 'none'})")
    if not _valid_id(obj[id_field]):
        raise CorpusError(f"the {id_field!r} field must be a string or an integer, got {obj[id_field]!r:.40}")
    out = {}
    for name in fields:
        if not isinstance(obj.get(name), str):
            got = "no such field" if name not in obj else f"a {type(obj[name]).__name__}"
            raise CorpusError(f"the {name!r} field must be a string ({got})")
        out[name] = obj[name]
    for name in optional:
        if isinstance(obj.get(name), str):
            out[name] = obj[name]
    return obj[id_field], out


def read_jsonl(path, id_field="id", fields=("text",), optional=(), on_malformed="error"):
    """(records, malformed) of a JSON-lines file. Blank lines are ignored.

    A malformed line (not UTF-8, not JSON, not an object, a missing or mistyped field) is an error
    naming its line number, or, with on_malformed="skip", is left out and listed in `malformed` as
    "FILE line N: reason". An id that appears twice is always an error naming both lines."""
    if on_malformed not in ("error", "skip"):
        raise CorpusError(f"on_malformed must be 'error' or 'skip', got {on_malformed!r}")
    if not os.path.isfile(path):
        raise CorpusError(f"cannot read {path}: no such file")
    records, malformed, seen = [], [], {}
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            where = f"{path} line {number}"
            try:
                rid, values = parse_line(raw, id_field, fields, optional)
            except CorpusError as e:
                if on_malformed == "error":
                    raise CorpusError(f"{where}: {e} (pass --skip-malformed / on_malformed='skip' to "
                                      "leave such lines out)") from None
                malformed.append(f"{where}: {e}")
                continue
            if rid in seen:
                raise CorpusError(f"{where}: duplicate id {rid!r}, first seen at {seen[rid]}; ids must be unique")
            seen[rid] = where
            records.append(Record(rid, values, where))
    return records, malformed


def read_folder(path, text_field="text", on_malformed="error"):
    """(records, malformed) of a folder's *.txt files, in name order; the id is the file name without .txt."""
    records, malformed = [], []
    for name in sorted(os.listdir(path)):
        full = os.path.join(path, name)
        if not name.endswith(".txt") or not os.path.isfile(full):
            continue
        try:
            with open(full, "rb") as f:
                text = f.read().decode("utf-8")
        except UnicodeDecodeError as e:
            message = f"{full}: not valid UTF-8 (bad byte at offset {e.start})"
            if on_malformed == "error":
                raise CorpusError(message) from None
            malformed.append(message)
            continue
        records.append(Record(name[:-len(".txt")], {text_field: text}, full))
    return records, malformed


def read_corpus(path, id_field="id", text_field="text", on_malformed="error"):
    """(records, malformed) of a corpus: a JSON-lines file or a folder of .txt files."""
    if os.path.isdir(path):
        records, malformed = read_folder(path, text_field, on_malformed)
    else:
        records, malformed = read_jsonl(path, id_field, (text_field,), on_malformed=on_malformed)
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


class Appender:
    """Appends one JSON record per line to `path`: one os.write on an O_APPEND descriptor, then fsync.

    Holds an exclusive flock on the file for its lifetime, so a second run on the same output fails
    at once instead of interleaving records."""

    def __init__(self, path):
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
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
