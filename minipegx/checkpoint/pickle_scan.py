"""Read a pickle's opcodes, without running any, before the real unpickler sees it.

``pickle.Unpickler`` with a strict ``find_class`` already runs no code from the file, but it still
trusts the file's shape: a LONG_BINPUT index of 2^32 makes CPython allocate a 32 GB memo, a dict key
that is 60 levels of self-sharing tuples takes 2^60 steps to hash, a set does the same, and a key
stored twice keeps the later value without a word. ``scan_pickle`` walks the opcodes with
``pickletools.genops`` (a parser, not an interpreter) over a symbolic stack and refuses, before
anything is built:

- more opcodes, more memo slots, or deeper container nesting than the limits allow;
- any opcode torch.save never writes (sets, INST/OBJ/NEWOBJ, extension codes, out-of-band buffers);
- a global outside the allow-list (the same list find_class enforces);
- dict keys that are not strings, or a key stored twice in one dict;
- a container changed after it was put inside another one (cyclic or self-referencing structures).

What passes is a tree of containers, strings, numbers, storages and tensors that the C unpickler
builds in time and memory proportional to the pickle.
"""

from __future__ import annotations

import pickletools

from ..errors import CheckpointError, UnsafeCheckpointError
from ..limits import bounded_repr, current, over_limit

STORAGE_TYPES = ("FloatStorage", "HalfStorage", "BFloat16Storage", "DoubleStorage", "LongStorage", "IntStorage")
ALLOWED_GLOBALS = {("collections", "OrderedDict"), ("torch._utils", "_rebuild_tensor_v2"),
                   ("torch._utils", "_rebuild_parameter"), *(("torch", s) for s in STORAGE_TYPES)}

_SCALARS = {"NONE", "NEWTRUE", "NEWFALSE", "INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4",
            "FLOAT", "BINFLOAT", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8"}
_STRINGS = {"STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8"}
_CODE = {"INST", "OBJ", "NEWOBJ", "NEWOBJ_EX", "EXT1", "EXT2", "EXT4"}  # build arbitrary objects


def refuse_global(source: str, module, name) -> UnsafeCheckpointError:
    return UnsafeCheckpointError(
        f"{source} asks for the Python global {str(module)[:80]}.{str(name)[:80]}, which a "
        "state dict of tensors never needs; minipegx refuses to load it rather than run code from the file. If "
        "you trust the file, convert it to safetensors (transformers: model.save_pretrained(dir)) and load that")


class _Node:
    """What the symbolic stack holds: a kind, a nesting depth, and for strings and globals their value."""

    __slots__ = ("kind", "depth", "sealed", "value", "keys")

    def __init__(self, kind, depth=0, value=None):
        self.kind, self.depth, self.sealed, self.value, self.keys = kind, depth, False, value, None


_MARK = _Node("mark")


class _Reader:
    """The read/readline/tell genops needs, over a window of a buffer (an mmap: no copy of the file)."""

    def __init__(self, buf, start: int, end: int):
        self.buf, self.pos, self.end = buf, start, end

    def read(self, n: int = -1) -> bytes:
        stop = self.end if n < 0 else min(self.end, self.pos + n)
        data = bytes(self.buf[self.pos:stop])
        self.pos = stop
        return data

    def readline(self) -> bytes:
        i = self.buf.find(b"\n", self.pos, self.end)
        return self.read((i + 1 - self.pos) if i >= 0 else -1)

    def tell(self) -> int:
        return self.pos


def scan_pickle(buf, start: int, end: int, source: str) -> int:
    """Check the pickle at buf[start:end] (it may end earlier, at STOP); return the offset after STOP."""
    lim = current()
    if end - start > lim.max_pickle_bytes:
        end = start + lim.max_pickle_bytes + 1  # a longer pickle fails with "exhausted" below, or is refused
    reader = _Reader(buf, start, end)
    stack: list = []
    memo: dict = {}

    def bad(detail):
        return CheckpointError(f"{source} is not a readable torch pickle ({detail}); it looks corrupt, or it was "
                               "not written by torch.save: re-download it, or re-save it as safetensors")

    def pop(n=1):
        if len(stack) < n:
            raise bad("an opcode takes more values than the stack holds")
        items = stack[len(stack) - n:]
        del stack[len(stack) - n:]
        if any(i is _MARK for i in items):
            raise bad("a mark where a value belongs")
        return items

    def pop_mark():
        for i in range(len(stack) - 1, -1, -1):
            if stack[i] is _MARK:
                items = stack[i + 1:]
                del stack[i:]
                return items
        raise bad("no mark on the stack")

    def container(kind, children):
        node = _Node(kind, value=len(children))
        nest(node, children)
        return node

    def nest(node, children):
        for c in children:
            c.sealed = True
            node.depth = max(node.depth, 1 + c.depth)
        node.depth = max(node.depth, 1)
        if node.depth > lim.max_pickle_depth:
            raise bad(over_limit("the container nesting depth", node.depth, "max_pickle_depth"))

    def mutable(node, kind):
        if node.kind != kind:
            raise bad(f"an item is added to a {node.kind}, not a {kind}")
        if node.sealed:
            raise bad("a container is changed after it was put inside another one (a cyclic structure), "
                      "which a state dict never holds")
        return node

    def set_items(target, pairs):
        d = mutable(target, "dict")
        if d.keys is None:
            d.keys = set()
        for k, _ in pairs:
            if k.kind != "str":
                raise bad(f"a dict key is a {k.kind}, not a string; a state dict's keys are tensor names")
            if k.value in d.keys:
                raise bad(f"the key {bounded_repr(k.value)} is stored twice in one dict (the later value would "
                          "silently win)")
            d.keys.add(k.value)
        nest(d, [x for pair in pairs for x in pair])

    def pairs(items):
        if len(items) % 2:
            raise bad("a dict with a key but no value")
        return list(zip(items[0::2], items[1::2]))

    def push_global(module, name):
        if (module, name) not in ALLOWED_GLOBALS:
            raise refuse_global(source, module, name)
        stack.append(_Node("global", value=(module, name)))

    count = 0
    try:
        for op, arg, _pos in pickletools.genops(reader):
            count += 1
            if count > lim.max_pickle_opcodes:
                raise bad(over_limit("the opcode count", f"over {lim.max_pickle_opcodes}", "max_pickle_opcodes"))
            name = op.name
            if name in ("PROTO", "FRAME", "STOP"):
                continue
            if name == "MARK":
                stack.append(_MARK)
            elif name in _SCALARS:
                stack.append(_Node("int" if "INT" in name or "LONG" in name else "scalar"))
            elif name in _STRINGS:
                stack.append(_Node("str", value=arg if isinstance(arg, str) else bytes(arg).decode("latin-1")))
            elif name in ("EMPTY_LIST", "EMPTY_DICT", "EMPTY_TUPLE"):
                stack.append(_Node(name[6:].lower(), depth=1, value=0))
            elif name in ("LIST", "TUPLE"):
                stack.append(container(name.lower(), pop_mark()))
            elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
                stack.append(container("tuple", pop(int(name[-1]))))
            elif name == "DICT":
                node = _Node("dict")
                set_items(node, pairs(pop_mark()))
                stack.append(node)
            elif name in ("APPEND", "APPENDS"):
                items = pop() if name == "APPEND" else pop_mark()
                nest(mutable(_top(stack, bad), "list"), items)
            elif name in ("SETITEM", "SETITEMS"):
                items = pop(2) if name == "SETITEM" else pop_mark()
                set_items(_top(stack, bad), pairs(items))
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                if arg not in memo:
                    raise bad(f"memo slot {bounded_repr(arg)} is read before it is written")
                stack.append(memo[arg])
            elif name in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"):
                index = len(memo) if name == "MEMOIZE" else arg
                if not isinstance(index, int) or not 0 <= index < lim.max_pickle_memo:
                    raise bad(over_limit("a memo index", bounded_repr(index), "max_pickle_memo"))
                memo[index] = _top(stack, bad)
            elif name == "GLOBAL":
                module, _, attr = arg.partition(" ")
                push_global(module, attr)
            elif name == "STACK_GLOBAL":
                module, attr = pop(2)
                if module.kind != "str" or attr.kind != "str":
                    raise bad("STACK_GLOBAL with a module or name that is not a string")
                push_global(module.value, attr.value)
            elif name == "REDUCE":
                fn, args = pop(2)
                if fn.kind != "global" or args.kind != "tuple" or fn.value[0] == "torch":
                    raise bad("a call of something that is not an allowed function")
                if fn.value == ("collections", "OrderedDict") and args.value:
                    raise bad("OrderedDict called with arguments (torch.save writes OrderedDict())")
                stack.append(_Node("dict", depth=1) if fn.value[0] == "collections" else container("tensor", [args]))
            elif name == "BUILD":
                (state,) = pop()
                target = _top(stack, bad)
                if state.kind != "dict":
                    raise bad("BUILD with a state that is not a dict")
                nest(mutable(target, "dict"), [state])
            elif name == "BINPERSID":
                (pid,) = pop()
                stack.append(container("storage", [pid]))
            elif name == "POP":
                stack.pop() if stack else None
            elif name == "POP_MARK":
                pop_mark()
            elif name == "DUP":
                stack.append(_top(stack, bad))
            elif name in _CODE:
                raise UnsafeCheckpointError(f"{source} uses the pickle opcode {name}, which builds arbitrary Python "
                                            "objects; minipegx refuses to load it rather than run code from the file")
            else:
                raise bad(f"the opcode {name}, which torch.save never writes")
    except (CheckpointError, UnsafeCheckpointError):
        raise
    except (ValueError, UnicodeDecodeError, OverflowError) as e:  # what genops raises on a corrupt stream
        raise bad(str(e)[:200]) from None
    if len(stack) != 1:
        raise bad(f"the pickle ends with {len(stack)} values on its stack, not one")
    if reader.pos - start > lim.max_pickle_bytes:
        raise bad(over_limit("the pickle's size", f"{reader.pos - start} bytes", "max_pickle_bytes"))
    return reader.pos


def _top(stack, bad):
    if not stack or stack[-1] is _MARK:
        raise bad("an opcode needs a value and the stack has none")
    return stack[-1]


__all__ = ["scan_pickle", "refuse_global", "ALLOWED_GLOBALS", "STORAGE_TYPES"]
