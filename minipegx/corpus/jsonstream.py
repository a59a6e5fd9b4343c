"""One JSON-lines record read with bounded memory, however long its line.

A short line is parsed with `json.loads`. A line longer than what a document can need (a 200 MB text
field, when the model reads 16,384 tokens) is parsed here as a stream of characters, a chunk at a time:
the top-level object's string fields named in `keep` are kept up to their character budget and only
checked after it, the small fields (the id) up to a few characters, anything else only checked. So the
memory a record takes does not grow with its line, and the whole line is still checked to be JSON
(and UTF-8), so a damaged line is refused as before.

Integers of thousands of digits (Python refuses to convert more than 4,300) come back as the HUGE
marker instead of raising: an id that is HUGE is refused by the caller; elsewhere it does no harm.
"""

from __future__ import annotations

import codecs
import json
import re

from ..errors import CorpusError

MAX_INT_DIGITS = 40                       # longer integers become HUGE (no id needs them)
MAX_OTHER_CHARS = 1 << 16                 # a non-string value kept for a field the caller uses


class _Huge:
    def __repr__(self):
        return "<an integer of more than 40 digits>"


HUGE = _Huge()


def _int(s: str):
    return int(s) if len(s) <= MAX_INT_DIGITS + 1 else HUGE


def parse_small_line(raw: bytes):
    """json.loads of one whole line, every failure a CorpusError with its reason."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CorpusError(f"not valid UTF-8 (bad byte at offset {e.start})") from None
    try:
        return json.loads(text, parse_int=_int)
    except json.JSONDecodeError as e:
        raise CorpusError(f"not JSON ({e.msg} at column {e.colno})") from None
    except (ValueError, RecursionError) as e:
        raise CorpusError(f"not JSON ({type(e).__name__})") from None


class Record(dict):
    """The parsed object; `cut` names the fields whose strings went past their budget."""
    cut: tuple = ()


class _Chars:
    """The characters of a line from its first bytes and more() (the next bytes, b"" at the end)."""

    def __init__(self, first: bytes, more):
        self.decoder = codecs.getincrementaldecoder("utf-8")()
        self.more, self.buf, self.pos, self.ended, self.offset = more, "", 0, False, 0
        self._add(first)

    def _add(self, data: bytes):
        try:
            text = self.decoder.decode(data, final=not data)
        except UnicodeDecodeError as e:
            raise CorpusError(f"not valid UTF-8 (bad byte at offset {self.offset + e.start})") from None
        self.offset += len(data)
        self.buf, self.pos = self.buf[self.pos:] + text, 0

    def extend(self) -> bool:
        """Append the next chunk to what is left of the buffer (False at the end of the line)."""
        if self.ended:
            return False
        data = self.more()
        self.ended = not data
        self._add(data)
        return bool(data)

    def peek(self) -> str:
        """The next character, not consumed ("" at the end of the line)."""
        while self.pos >= len(self.buf):
            if self.ended:
                return ""
            data = self.more()
            self.ended = not data
            self._add(data)
        return self.buf[self.pos]

    def take(self) -> str:
        c = self.peek()
        self.pos += len(c)
        return c

    def run(self, pattern) -> str:
        """The longest run of characters matching `pattern` (a compiled regex of one character class)
        from here within the buffer (callers loop: a run can continue in the next chunk)."""
        self.peek()
        m = pattern.match(self.buf, self.pos)
        self.pos = m.end()
        return m.group()

    def skip_space(self):
        while self.run(_SPACE):               # a run per chunk: a gigabyte of spaces is no Python loop per byte
            pass


_SPACE = re.compile(r"[ \t\r\n]*")
_SCALAR = re.compile(r'[^,}\]\s]*')
_OPEN_ESCAPE = re.compile(r'\\(?:u[0-9a-fA-F]{0,3})?\Z')      # an escape the chunk cuts: \ or \u12


def _closing_quote(buf: str, pos: int) -> int:
    """Index of the first quote at or after pos that ends the string (one not escaped), or -1."""
    start = pos
    while True:
        q = buf.find('"', start)
        if q < 0:
            return -1
        b = q
        while b > pos and buf[b - 1] == "\\":
            b -= 1
        if (q - b) % 2 == 0:                  # an even run of backslashes before it: they escape each other
            return q
        start = q + 1


def _string(s: _Chars, keep: int) -> tuple[str, bool]:
    """A JSON string after its opening quote: (its first `keep` characters, whether it had more).

    Each chunk's part of the string is found with str.find and decoded (and so checked) by json itself,
    a chunk at a time; an escape cut by the end of a chunk waits for the next one."""
    room = keep + 1                           # one more: the low half of a surrogate pair, joined at the end
    parts, kept, dropped = [], 0, False

    def add(text):
        nonlocal kept, dropped
        if not text:
            return
        if kept >= room:
            dropped = True
            return
        if parts and "\ud800" <= parts[-1][-1] <= "\udbff" and "\udc00" <= text[0] <= "\udfff":
            kept -= 1                         # a pair split between two chunks is one character
        parts.append(text[:room - kept])
        dropped = dropped or len(text) > room - kept
        kept += len(text)

    while True:
        if s.peek() == "":
            raise CorpusError("not JSON (the line ends inside a string)")
        buf, pos = s.buf, s.pos
        q = _closing_quote(buf, pos)
        if q >= 0:
            piece, s.pos = buf[pos:q], q + 1
        else:
            end = len(buf)
            tail = _OPEN_ESCAPE.search(buf, max(pos, end - 6))
            if tail is not None:              # is that backslash itself escaped? (an even run before it)
                b = tail.start()
                while b > pos and buf[b - 1] == "\\":
                    b -= 1
                if (tail.start() - b) % 2 == 0:
                    end = tail.start()
            piece, s.pos = buf[pos:end], end
        try:
            add(json.loads('"' + piece + '"') if ("\\" in piece or not piece.isprintable()) else piece)
        except json.JSONDecodeError as e:
            raise CorpusError(f"not JSON ({e.msg} in a string)") from None
        if q >= 0:
            # \ud83d\ude00 split over two chunks arrives as two characters: join the pairs, keep a lone
            # surrogate as it is (as json does)
            text = "".join(parts).encode("utf-16", "surrogatepass").decode("utf-16", "surrogatepass")
            return text[:keep], dropped or len(text) > keep
        if s.pos < len(s.buf) and not s.extend():
            raise CorpusError("not JSON (the line ends inside a string)")


def _value(s: _Chars, keep: int):
    """Any JSON value other than a top-level string field: parsed when its text has at most `keep`
    characters, else only checked for balanced brackets and whole strings (then None)."""
    raw, size, depth = [], 0, 0
    while True:
        s.skip_space()
        c = s.peek()
        if c == "":
            raise CorpusError("not JSON (the line ends inside a value)")
        if c == '"':
            s.take()
            text, more = _string(s, keep)
            piece = None if more else json.dumps(text)
        elif c in "[{":
            piece, depth = s.take(), depth + 1
        elif c in "]}:," and depth == 0:
            raise CorpusError(f"not JSON (unexpected {c!r})")
        elif c in "]}":
            piece, depth = s.take(), depth - 1
        elif c in ":,":
            piece = s.take()
        else:
            parts, n = [], 0
            while True:                       # a number or a literal, possibly across chunks
                p = s.run(_SCALAR)
                if not p:
                    break
                n += len(p)
                if n <= keep:
                    parts.append(p)
            if not n:
                raise CorpusError(f"not JSON (unexpected {c!r})")
            piece = "".join(parts) if n <= keep else None
        size += len(piece) if piece is not None else keep + 1
        if size <= keep:
            raw.append(piece)
        if depth == 0:
            break
    if size > keep:
        return None
    try:
        return json.loads("".join(raw), parse_int=_int)
    except (ValueError, RecursionError):
        raise CorpusError("not JSON (a bad value)") from None


def parse_long_line(first: bytes, more, keep: dict, small=(), small_chars=1025) -> Record | None:
    """The top-level object of one line read as a stream: {name: value} with the strings of `keep`'s
    fields cut to their budget (Record.cut names those that were), the `small` fields parsed up to
    `small_chars` characters (a longer string is kept at that length so the caller can refuse it),
    every other field checked and left out unless small. None for a line of whitespace only."""
    s = _Chars(first, more)
    s.skip_space()
    if s.peek() == "":
        return None                               # a blank line, however long
    if s.take() != "{":
        raise CorpusError("expected a JSON object")
    out, cut = Record(), []
    s.skip_space()
    if s.peek() == "}":
        s.take()
    else:
        while True:
            s.skip_space()
            if s.take() != '"':
                raise CorpusError("not JSON (expected a field name)")
            name, long_name = _string(s, 256)
            s.skip_space()
            if s.take() != ":":
                raise CorpusError("not JSON (expected ':' after a field name)")
            s.skip_space()
            budget = keep.get(name) if not long_name else None
            if s.peek() == '"':
                s.take()
                limit = budget if budget is not None else small_chars if name in small else 0
                text, more_text = _string(s, limit)
                if budget is not None or name in small:
                    out[name] = text
                    if more_text and budget is not None:
                        cut.append(name)
            else:
                value = _value(s, MAX_OTHER_CHARS if (name in small or name in keep) else 0)
                if name in small or name in keep:
                    out[name] = value if value is not None else HUGE
            s.skip_space()
            c = s.take()
            if c == "}":
                break
            if c != ",":
                raise CorpusError("not JSON (expected ',' or '}' between fields)")
    s.skip_space()
    if s.peek() != "":
        raise CorpusError("not JSON (extra data after the object)")
    out.cut = tuple(cut)
    return out
