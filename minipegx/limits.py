"""What minipegx will read from a file it does not trust: every bound, stated once.

A checkpoint directory is untrusted input. Each reader checks what it is about to read against these
bounds *before* it allocates, parses or hashes anything, and says which bound was hit and how to raise
it. The defaults are far above every released PEGASUS-X checkpoint (pegasus-x-large: 16 + 16 layers,
d_model 1024, 16 heads, FFN 4096, vocabulary 96103, block 512, 128 global tokens) and far below what
would exhaust a laptop.

A legitimately huge model raises a bound in one of two ways (docs/security.md):

    MINIPEGX_LIMITS="max_layers=512,max_block_size=8192" python train.py      # the whole process

    from minipegx import limits
    with limits.override(max_layers=512):                                    # one block of code
        model = minipegx.from_pretrained("huge-model/")

The module also holds the two helpers every reader uses: ``read_json`` (the only way minipegx reads a
JSON file: size, nesting depth, duplicate keys and NaN checked before or while parsing) and
``bounded_repr`` (an error message never formats an untrusted object without a length bound).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import json
import os
import re
import stat
from dataclasses import dataclass

from .errors import ConfigError, MiniPegxError

MiB = 1 << 20


@dataclass(frozen=True)
class Limits:
    # JSON files: config.json, generation_config.json, the shard index, tokenizer files, quantization config
    max_json_bytes: int = 16 * MiB        # the shard index of a 100,000-tensor model: about 8 MB
    max_json_depth: int = 64              # real files nest 3 levels
    # tensors, in any format; the bytes a tensor claims are also checked against the file itself
    max_safetensors_header_bytes: int = 16 * MiB  # ~150,000 entries; parsed, a header takes ~8x its size
    max_spiece_bytes: int = 64 * MiB      # spiece.model (PEGASUS-X's: 1.9 MB)
    max_tensor_rank: int = 8              # PEGASUS-X tensors have rank 1 or 2; NumPy stops at 64
    max_tensor_elements: int = 1 << 32    # pegasus-x-large's largest tensor has 98 million
    max_shards: int = 4096
    # torch .bin: zip archives and pickles
    max_zip_entries: int = 100_000
    max_decompression_ratio: int = 16     # a deflated member may expand 16x (+64 KiB); torch stores uncompressed
    max_pickle_bytes: int = 64 * MiB      # data.pkl of a 16 + 16-layer PEGASUS-X: 95 KB
    max_pickle_opcodes: int = 1_000_000   # a 16 + 16-layer PEGASUS-X: 19,528 (scanned in 0.06 s)
    max_pickle_depth: int = 32            # containers inside containers; a state dict needs 5
    max_pickle_memo: int = 1_000_000      # memo slots (a LONG_BINPUT index makes CPython allocate them all)
    # config.json values
    max_layers: int = 256                 # encoder_layers, decoder_layers
    max_heads: int = 1024                 # encoder_attention_heads, decoder_attention_heads
    max_d_model: int = 65536
    max_ffn_dim: int = 262144             # encoder_ffn_dim, decoder_ffn_dim
    max_vocab_size: int = 1 << 22         # 4,194,304
    max_position_embeddings: int = 1 << 20
    max_block_size: int = 4096            # local attention costs block_size^2 per head, even for a short input
    max_global_tokens: int = 4096
    # what a page of `minipegx explore` may allocate for one document's attention (explore.attention_bytes);
    # the demo models at 16,384 tokens need 0.06 GiB, pegasus-x-base 1.7 GiB, -large 2.3 GiB
    max_attention_bytes: int = 2 << 30

    def __post_init__(self):
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"limit {f.name} must be a positive integer, got {bounded_repr(v)}")


ENV = "MINIPEGX_LIMITS"
_override: contextvars.ContextVar = contextvars.ContextVar("minipegx_limits", default=None)


def _from_env(text: str) -> Limits:
    changes = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        name, sep, value = item.partition("=")
        if not sep or not value.strip().isdigit():
            raise ConfigError(f"{ENV}: {bounded_repr(item)} is not name=whole_number "
                              f"(e.g. {ENV}=\"max_layers=512,max_block_size=8192\")")
        changes[name.strip()] = int(value)
    return _replace(Limits(), changes, ENV)


def _replace(base: Limits, changes: dict, where: str) -> Limits:
    names = {f.name for f in dataclasses.fields(Limits)}
    unknown = sorted(set(changes) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown limit {bounded_repr(unknown[0])}; the limits are "
                          f"{', '.join(sorted(names))}")
    return dataclasses.replace(base, **changes)


def current() -> Limits:
    """The limits in force: defaults, then MINIPEGX_LIMITS, then the innermost override()."""
    active = _override.get()
    if active is not None:
        return active
    text = os.environ.get(ENV, "")
    return _from_env(text) if text.strip() else Limits()


@contextlib.contextmanager
def override(**changes):
    """Change some limits inside a with block (raise them for a huge model, lower them in tests)."""
    token = _override.set(_replace(current(), changes, "limits.override"))
    try:
        yield current()
    finally:
        _override.reset(token)


def over_limit(what: str, value, name: str) -> str:
    """The sentence every bound uses: what, the value, the bound, and how to raise it."""
    bound = getattr(current(), name)
    value = bounded_repr(value) if isinstance(value, int) else value  # an int from a file can have 10^5 digits
    return (f"{what} is {value}, above minipegx's limit {name}={bound}; if the file is trusted and really "
            f"this large, raise it: {ENV}=\"{name}=...\" or minipegx.limits.override({name}=...)")


# ---------------------------------------------------------------------------------------------- messages
def bounded_str(s: str, limit: int = 200) -> str:
    """A name from a file (a tensor name can be megabytes long), cut for a message."""
    return s if len(s) <= limit else s[:limit - 3] + "..."


def bounded_repr(obj, limit: int = 80) -> str:
    """repr(obj) cut at `limit` characters, computed without ever building more than that.

    repr() of a 60-level self-sharing nested list is 2^60 characters long, and repr() of a huge int
    takes quadratic time: both can come out of an untrusted file."""
    out: list[str] = []
    room = [limit + 1]

    def emit(s):
        out.append(s[:max(room[0], 0)])
        room[0] -= len(s)

    def walk(x, depth):
        if room[0] <= 0:
            return
        if isinstance(x, (list, tuple, set, frozenset, dict)) and depth < 8:
            kind = type(x)
            opening, closing = (("[", "]") if isinstance(x, list)
                                else ("{", "}") if isinstance(x, (set, frozenset, dict)) else ("(", ")"))
            if kind not in (list, tuple, set, frozenset, dict):
                opening = f"{kind.__name__}{opening}"
            emit(opening)
            for i, item in enumerate(x.items() if isinstance(x, dict) else x):
                if room[0] <= 0:
                    return
                if i:
                    emit(", ")
                if isinstance(x, dict):
                    walk(item[0], depth + 1)
                    emit(": ")
                    walk(item[1], depth + 1)
                else:
                    walk(item, depth + 1)
            emit(closing)
        elif isinstance(x, int) and not isinstance(x, bool) and x.bit_length() > 128:
            emit(f"<int of {x.bit_length()} bits>")
        elif isinstance(x, (str, bytes, bytearray)):
            emit(repr(x[:limit + 1]))
        elif x is None or isinstance(x, (bool, int, float)):
            emit(repr(x))
        else:
            emit(f"<{type(x).__name__}>")

    walk(obj, 0)
    text = "".join(out)
    return text if len(text) <= limit else text[:limit - 3] + "..."


# ---------------------------------------------------------------------------------------------- paths
def as_path(path, error, what: str = "path") -> str:
    """A path argument as str, or `error`: not a str/bytes/PathLike, or with a NUL byte (which os.stat
    would reject with a bare ValueError)."""
    try:
        path = os.fsdecode(os.fspath(path))
    except TypeError:
        raise error(f"{what} must be a str or os.PathLike, got {type(path).__name__}") from None
    if "\0" in path:
        raise error(f"{what} {bounded_repr(path)} contains a NUL character, which no file name can hold")
    return path


# ---------------------------------------------------------------------------------------------- JSON
# Escapes first (in valid JSON a backslash only occurs inside strings, as the first of a pair), then
# strings (the closing quote optional, so an unterminated string ends the text in one linear pass).
_JSON_ESCAPE = re.compile(rb"\\.", re.S)
_JSON_STRING = re.compile(rb'"[^"]*"?')


def json_depth(data: bytes) -> int:
    """How deeply the arrays and objects of a JSON text nest, counted without recursion."""
    import numpy as np

    brackets = re.sub(rb"[^\[\]{}]+", b"", _JSON_STRING.sub(b"", _JSON_ESCAPE.sub(b"", data)))
    step = np.zeros(256, np.int64)
    step[list(b"[{")], step[list(b"]}")] = 1, -1
    depth, deepest = 0, 0
    for i in range(0, len(brackets), MiB):
        run = np.cumsum(step[np.frombuffer(brackets[i:i + MiB], np.uint8)]) + depth
        deepest, depth = max(deepest, int(run.max())), int(run[-1])
    return deepest


def parse_json(data: bytes, what: str, error=ConfigError, size_limit: str = "max_json_bytes"):
    """Parse untrusted JSON bytes: size, depth, UTF-8, duplicate keys and NaN checked."""
    lim = current()
    if len(data) > getattr(lim, size_limit):
        raise error(f"{what}: " + over_limit("its size", f"{len(data)} bytes", size_limit))
    depth = json_depth(data)
    if depth > lim.max_json_depth:
        raise error(f"{what} looks truncated or corrupt: re-download or re-save it ("
                    + over_limit("its nesting depth", depth, "max_json_depth") + ")")

    def no_duplicates(pairs):
        seen = {}
        for k, v in pairs:
            if k in seen:
                raise error(f"{what}: the key {bounded_repr(k)} appears twice in one object (a JSON reader "
                            "silently keeps one of them); remove the duplicate")
            seen[k] = v
        return seen

    def no_constant(name):
        raise error(f"{what}: {name} is not a JSON number (write a finite number)")

    try:
        return json.loads(data.decode("utf-8"), object_pairs_hook=no_duplicates, parse_constant=no_constant)
    except MiniPegxError:
        raise
    except UnicodeDecodeError as e:
        raise error(f"{what} is not UTF-8 (bad byte at offset {e.start}); re-download or re-save it") from None
    except (ValueError, RecursionError) as e:  # JSONDecodeError, or an integer of over 4300 digits
        raise error(f"{what} is not valid JSON ({str(e)[:200]}); "
                    "re-download or re-save it") from None


def read_json(path, what: str, error=ConfigError) -> dict:
    """The JSON object in a file, read under the limits; `error` (a MiniPegxError type) for any problem.

    what: the file's role, e.g. "config.json" or "the shard index" (messages name the path and it)."""
    path = as_path(path, error)
    label = path if os.path.basename(path) == what else f"{path} ({what})"
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # before open(): opening a FIFO would wait forever
            raise error(f"{label} is not a regular file")
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            if st.st_size > current().max_json_bytes:
                raise error(f"{label}: " + over_limit("its size", f"{st.st_size} bytes", "max_json_bytes"))
            data = f.read(current().max_json_bytes + 1)
    except OSError as e:
        raise error(f"cannot read {label}: {e.strerror}") from None
    obj = parse_json(data, label, error)
    if not isinstance(obj, dict):
        raise error(f"{label} must hold a JSON object, not {_json_type(obj)}")
    return obj


def _json_type(x) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(x), "a number")


__all__ = ["Limits", "current", "override", "over_limit", "bounded_repr", "bounded_str", "as_path", "read_json",
           "parse_json", "json_depth"]
