"""Fuzzing the loaders: hypothesis mutations of real checkpoint files, every case loaded in a child process.

The property (docs/security.md): whatever the bytes, loading ends within the time limit, inside the
address-space limit (loading_worker.MEMORY_LIMIT), and either succeeds or raises a MiniPegxError.
Mutated: safetensors headers (structure and bytes), the bytes of every weights format (safetensors,
shards, torch zip, legacy .bin), the pickles inside torch files, config.json field by field, and every
other JSON file. Cases run in batches (one child per hypothesis example) so the suite stays short;
derandomize=True makes every run try the same cases.
"""

import io
import json
import os
import pickletools
import shutil
import tempfile
import zipfile

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from loading_worker import escaped, load_in_child
from untrusted_files import join_safetensors, split_safetensors, tiny_model, write_checkpoints

pytest.importorskip("torch")
pytest.importorskip("transformers")

BATCH = 24  # cases per child process
# No shrinking: each try is a child process, and a failure already names its raw exception and case.
FUZZ = settings(max_examples=5, derandomize=True, database=None, deadline=None, phases=[Phase.generate],
                suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return write_checkpoints(tmp_path_factory.mktemp("fuzz_base"), tiny_model(seed=1))


# ---------------------------------------------------------------------------------------------- strategies
EDGE_VALUES = [0, -1, 1, 2, 3, 2 ** 31, 2 ** 32, 2 ** 63, 2 ** 64, 10 ** 7, 10 ** 30, -(2 ** 63), 0.5, 1e308, -0.0,
               "false", "true", "", "F32", "BF16", None, True, False, [], {}, [2 ** 32, 2 ** 32], [0, 2 ** 62],
               [-1, 4], [1] * 70, ["a"], {"dtype": "F32"}]
json_scalars = st.none() | st.booleans() | st.integers(-(2 ** 70), 2 ** 70) | st.text(max_size=12) | \
    st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from(EDGE_VALUES)
json_values = st.recursive(json_scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c,
                                                                                             max_size=4),
                           max_leaves=12)
byte_edits = st.lists(st.tuples(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]),
                                st.floats(0, 1, exclude_max=True), st.binary(min_size=1, max_size=8)),
                      min_size=1, max_size=4)
json_edits = st.lists(st.tuples(st.sampled_from(["replace", "replace", "delete", "wrap", "nest"]),
                                st.integers(0, 10 ** 6), json_values, st.integers(1, 200)), min_size=1, max_size=3)


def edit_bytes(data: bytes, edits, start=0, end=None) -> bytes:
    """Apply byte edits at relative positions inside data[start:end]."""
    data = bytearray(data)
    for op, where, payload in edits:
        stop = len(data) if end is None else min(end, len(data))
        if stop <= start:
            break
        i = start + int(where * (stop - start))
        if op == "flip":
            data[i] ^= payload[0] or 0xFF
        elif op == "set":
            data[i:i + len(payload)] = payload
        elif op == "insert":
            data[i:i] = payload
        elif op == "delete":
            del data[i:i + len(payload)]
        else:
            del data[i:]
    return bytes(data)


def json_paths(obj, prefix=()):
    """Every (path) to a value inside obj, the document itself first, at most 4 levels down."""
    yield prefix
    if len(prefix) < 4:
        items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
        for k, v in items:
            yield from json_paths(v, prefix + (k,))


def edit_json(obj, edits):
    for op, pick, value, depth in edits:
        paths = list(json_paths(obj))
        path = paths[pick % len(paths)]
        if not path:
            obj = value if op == "replace" else [obj] if op == "wrap" else obj
            if op == "nest":
                for _ in range(depth):
                    obj = [obj]
            continue
        parent = obj
        for k in path[:-1]:
            parent = parent[k]
        old = parent[path[-1]]
        if op == "delete":
            del parent[path[-1]]
        else:
            new = value if op == "replace" else [old]
            for _ in range(depth if op == "nest" else 0):
                new = [new]
            parent[path[-1]] = new
    return obj


# ---------------------------------------------------------------------------------------------- running
def run_batch(checkpoints, fmt, mutate, mutations, kind="model"):
    """Copy the base checkpoint once per mutation, apply it, load all in one child: only MiniPegxErrors."""
    with tempfile.TemporaryDirectory() as tmp:
        cases = []
        for i, m in enumerate(mutations):
            d = os.path.join(tmp, str(i))
            shutil.copytree(checkpoints[fmt], d)
            mutate(d, m)
            cases.append((kind, d))
        results = load_in_child(cases, timeout=240)
        bad = escaped(results, cases)
        assert not bad, f"{len(bad)} raw exception(s):\n" + "\n".join(bad[:5])


def rewrite(path, change) -> None:
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(change(data))


# ---------------------------------------------------------------------------------------------- the suite
@FUZZ
@given(st.lists(st.tuples(st.sampled_from(["model.shared.weight", "model.encoder.layer_norm.bias", "__metadata__"]),
                          json_edits, st.booleans()), min_size=BATCH, max_size=BATCH))
def test_fuzzed_safetensors_headers(checkpoints, mutations):
    def mutate(d, m):
        name, edits, whole = m
        header, body = split_safetensors(open(os.path.join(d, "model.safetensors"), "rb").read())
        if whole:
            header = edit_json(header, edits)
        else:
            header[name] = edit_json(header.get(name, {}), edits)
        rewrite(os.path.join(d, "model.safetensors"), lambda _: join_safetensors(header, body))

    run_batch(checkpoints, "safetensors", mutate, mutations)


WEIGHT_FILES = {"safetensors": "model.safetensors", "sharded": None, "bin_zip": "pytorch_model.bin",
                "bin_legacy": "pytorch_model.bin"}


@pytest.mark.parametrize("fmt", list(WEIGHT_FILES))
@FUZZ
@given(st.lists(st.tuples(byte_edits, st.floats(0, 1)), min_size=BATCH, max_size=BATCH))
def test_fuzzed_weight_file_bytes(checkpoints, fmt, mutations):
    """Byte edits, mostly near the start (headers, pickles) where a file says what it holds."""
    def mutate(d, m):
        edits, reach = m
        files = [f for f in os.listdir(d) if f.endswith((".safetensors", ".bin"))] if fmt == "sharded" else []
        name = sorted(files)[min(int(reach * len(files)), len(files) - 1)] if files else WEIGHT_FILES[fmt]
        size = os.path.getsize(os.path.join(d, name))
        rewrite(os.path.join(d, name), lambda data: edit_bytes(data, edits, 0, max(64, int(size * reach ** 3))))

    run_batch(checkpoints, fmt, mutate, mutations)


@pytest.mark.parametrize("fmt", ["bin_zip", "bin_legacy"])
@FUZZ
@given(st.lists(byte_edits, min_size=BATCH, max_size=BATCH))
def test_fuzzed_torch_pickles(checkpoints, fmt, mutations):
    """Byte edits inside the pickle itself (data.pkl of the zip, the pickles at the head of a legacy file)."""
    def mutate(d, edits):
        path = os.path.join(d, "pytorch_model.bin")
        if fmt == "bin_legacy":
            rewrite(path, lambda data: edit_bytes(data, edits, 0, legacy_pickles_end(data)))
            return
        with zipfile.ZipFile(path) as z:
            members = [(i.filename, z.read(i)) for i in z.infolist()]
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
            for name, data in members:
                z.writestr(name, edit_bytes(data, edits) if name.endswith("data.pkl") else data)

    run_batch(checkpoints, fmt, mutate, mutations)


def legacy_pickles_end(data: bytes) -> int:
    """Where the five pickles at the head of a legacy torch file end (the storages' bytes follow)."""
    f = io.BytesIO(data)
    for _ in range(5):
        for _op in pickletools.genops(f):
            pass
    return f.tell()


@FUZZ
@given(st.lists(json_edits, min_size=BATCH, max_size=BATCH))
def test_fuzzed_config_json(checkpoints, mutations):
    def mutate(d, edits):
        rewrite(os.path.join(d, "config.json"), lambda data: json.dumps(edit_json(json.loads(data), edits)).encode())

    run_batch(checkpoints, "safetensors", mutate, mutations)


JSON_FILES = [("safetensors", "generation_config.json"), ("safetensors", "tokenizer_config.json"),
              ("safetensors", "special_tokens_map.json"), ("sharded", "model.safetensors.index.json"),
              ("quantized", "quantization_config.json"), ("safetensors", "config.json")]


@pytest.mark.parametrize("fmt, name", JSON_FILES)
@FUZZ
@given(st.lists(st.tuples(json_edits, byte_edits, st.booleans()), min_size=BATCH, max_size=BATCH))
def test_fuzzed_json_files(checkpoints, fmt, name, mutations):
    """Structure (values, deletions, deep nesting) or raw text (broken JSON, bad UTF-8) of every JSON file."""
    def mutate(d, m):
        edits, raw, as_text = m
        path = os.path.join(d, name)
        if as_text:
            rewrite(path, lambda data: edit_bytes(data, raw))
        else:
            rewrite(path, lambda data: json.dumps(edit_json(json.loads(data), edits)).encode())

    run_batch(checkpoints, fmt, mutate, mutations)
