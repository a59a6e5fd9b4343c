"""Loading an untrusted checkpoint: the attacks of issue #14 as named regression cases (docs/security.md).

Each class has a rule: no hang (bounded_repr, the pickle scan), bounded memory (limits checked before
any allocation), no silent substitution (two names for one parameter must agree), and only minipegx's
own errors escape. Cases that used to hang or exhaust memory run in a child process with a time and an
address-space limit (loading_worker.py), so a regression fails instead of stalling the suite.
"""

import json
import os
import pickle
import struct
import zipfile

import numpy as np
import pytest

import minipegx
from loading_worker import load_in_child
from minipegx import limits
from minipegx.checkpoint import load_params, read_state_dict
from minipegx.config import PegasusXConfig
from minipegx.errors import CheckpointError, ConfigError, InputError, TokenizerError, UnsafeCheckpointError
from untrusted_files import (copy_checkpoint, float_storage, join_safetensors, nested_json, rewrite_json,
                             self_sharing_list, self_sharing_tuple, split_safetensors, tiny_model, torch_pickle,
                             torch_zip, write_checkpoints, Tensor)

pytest.importorskip("torch")
pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return write_checkpoints(tmp_path_factory.mktemp("checkpoints"), tiny_model())


@pytest.fixture
def ckpt(checkpoints, tmp_path):
    """A fresh copy of one format's checkpoint directory, to damage: ckpt("safetensors")."""
    return lambda fmt: copy_checkpoint(checkpoints[fmt], tmp_path / fmt)


def refused_in_child(kind, path, error, match):
    """Load in a child under the limits: it must end, within memory, with `error` whose message matches."""
    (result,) = load_in_child([(kind, path)], timeout=60)
    assert not result["ok"] and result["type"] == error.__name__, result
    assert match in result["message"], result["message"]


# ---------------------------------------------------------------------------------------------- 1. hangs
def test_a_persistent_id_that_is_a_60_level_self_sharing_list_is_refused_at_once(tmp_path):
    """Its repr is 2^60 characters: the pickle scan refuses it by depth, and no message formats it whole."""
    data = torch_pickle({"w": Tensor(self_sharing_list(60))})
    torch_zip(tmp_path / "zip.bin", data)
    (tmp_path / "legacy.bin").write_bytes(b"".join(pickle.dumps(x, protocol=2) for x in (
        0x1950A86A20F9469CFC6C, 1001, {"little_endian": True})) + data + pickle.dumps([], protocol=2))
    refused_in_child("state_dict", tmp_path / "zip.bin", CheckpointError, "max_pickle_depth")
    refused_in_child("state_dict", tmp_path / "legacy.bin", CheckpointError, "max_pickle_depth")


def pickled_body(obj, protocol) -> bytes:
    """The opcodes that push obj, without PROTO and STOP (building {key: 1} here would hash the key)."""
    data = pickle.dumps(obj, protocol=protocol)
    return data[2:-1]


@pytest.mark.parametrize("levels, rule", [(60, "max_pickle_depth"), (30, "a dict key is a tuple, not a string")])
def test_a_dict_key_whose_hash_takes_2_to_the_levels_steps_is_refused_before_hashing(tmp_path, levels, rule):
    """torch.load(weights_only=True) hangs on these bytes; 30 levels are within the depth limit, so the
    string-keys rule refuses them."""
    # {key: 1}: EMPTY_DICT, the key, BININT1 1, SETITEM
    data = b"\x80\x02}" + pickled_body(self_sharing_tuple(levels), 2) + b"K\x01s."
    torch_zip(tmp_path / "m.bin", data)
    refused_in_child("state_dict", tmp_path / "m.bin", CheckpointError, rule)


def test_a_frozenset_of_such_keys_is_refused(tmp_path):
    # frozenset([key]): MARK, the key, FROZENSET
    data = b"\x80\x04(" + pickled_body(self_sharing_tuple(30), 4) + b"\x91."
    torch_zip(tmp_path / "m.bin", data)
    refused_in_child("state_dict", tmp_path / "m.bin", CheckpointError, "FROZENSET")


def test_an_untrusted_object_in_a_message_is_cut_without_being_expanded():
    text = limits.bounded_repr(self_sharing_list(60), 80)
    assert len(text) == 80 and text.startswith("[[[[") and text.endswith("...")
    assert limits.bounded_repr(10 ** 5000) == "<int of 16610 bits>"
    assert limits.bounded_repr({"a": (1, "b")}) == "{'a': (1, 'b')}"


def test_a_memo_index_of_2_to_the_32_is_refused_before_cpython_allocates_the_memo(tmp_path):
    torch_zip(tmp_path / "m.bin", b"\x80\x02}r\xff\xff\xff\xff.")  # EMPTY_DICT, LONG_BINPUT 2^32-1, STOP
    refused_in_child("state_dict", tmp_path / "m.bin", CheckpointError, "max_pickle_memo")


def test_a_fifo_in_place_of_a_file_is_refused_not_waited_on(ckpt):
    d = ckpt("safetensors")
    for name in ("config.json", "model.safetensors"):
        os.remove(os.path.join(d, name))
        os.mkfifo(os.path.join(d, name))
    refused_in_child("config", d, ConfigError, "config.json is not a regular file")
    refused_in_child("state_dict", os.path.join(d, "model.safetensors"), CheckpointError, "not a regular file")


# ---------------------------------------------------------------------------------------------- 2. memory
def test_a_zip_bomb_member_is_never_decompressed(tmp_path):
    """512 MiB of zeros deflated into a 0.5 MB member for a tensor that claims them: refused by ratio."""
    numel = 1 << 27
    with zipfile.ZipFile(tmp_path / "m.bin", "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("archive/data.pkl", torch_pickle({"w": Tensor(float_storage("0", numel), (numel,))}))
        with z.open("archive/data/0", "w", force_zip64=True) as f:
            chunk = bytes(1 << 20)
            for _ in range(numel * 4 >> 20):
                f.write(chunk)
    assert os.path.getsize(tmp_path / "m.bin") < 1 << 20
    refused_in_child("state_dict", tmp_path / "m.bin", CheckpointError, "max_decompression_ratio")


def test_a_member_larger_than_its_tensor_is_refused_before_reading(tmp_path):
    with zipfile.ZipFile(tmp_path / "m.bin", "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("archive/data.pkl", torch_pickle({"w": Tensor(float_storage("0", 4))}))
        z.writestr("archive/data/0", bytes(1 << 24))
    with pytest.raises(CheckpointError, match="holds 16777216 bytes, its tensor needs 16"):
        read_state_dict(tmp_path / "m.bin")


@pytest.mark.parametrize("field, value, bound", [
    ("encoder_layers", 10_000_000, "max_layers"), ("decoder_layers", 257, "max_layers"),
    ("block_size", 2 ** 30, "max_block_size"), ("num_global_tokens", 5000, "max_global_tokens"),
    ("vocab_size", 2 ** 40, "max_vocab_size"), ("max_position_embeddings", 2 ** 21, "max_position_embeddings"),
    ("d_model", 2 ** 17, "max_d_model"), ("encoder_ffn_dim", 2 ** 19, "max_ffn_dim"),
    ("encoder_attention_heads", 2048, "max_heads"),
])
def test_config_sizes_above_their_bound_name_the_field_and_the_bound(ckpt, field, value, bound):
    d = ckpt("safetensors")
    rewrite_json(os.path.join(d, "config.json"), lambda c: {**c, field: value})
    with pytest.raises(ConfigError, match=f"{field}.*{bound}="):
        minipegx.from_pretrained(d)


def test_a_bound_can_be_raised_for_a_trusted_huge_model(monkeypatch):
    config = dict(model_type="pegasus_x", encoder_layers=300)
    with pytest.raises(ConfigError, match="max_layers"):
        PegasusXConfig.from_dict(config)
    with limits.override(max_layers=512):
        assert PegasusXConfig.from_dict(config).encoder_layers == 300
    monkeypatch.setenv("MINIPEGX_LIMITS", "max_layers=512, max_block_size=8192")
    assert PegasusXConfig.from_dict(config).encoder_layers == 300
    assert limits.current().max_block_size == 8192


@pytest.mark.parametrize("setting", ["max_layer=5", "max_layers=-1", "max_layers"])
def test_a_misspelled_limit_is_an_error(monkeypatch, setting):
    monkeypatch.setenv("MINIPEGX_LIMITS", setting)
    with pytest.raises(ConfigError, match="MINIPEGX_LIMITS"):
        limits.current()


@pytest.mark.parametrize("shape, bound", [([2 ** 32, 2 ** 32], "max_tensor_elements"), ([1] * 65, "max_tensor_rank"),
                                          ([2] * 9, "max_tensor_rank")])
def test_a_header_shape_is_checked_before_numpy_sees_it(ckpt, shape, bound):
    f = os.path.join(ckpt("safetensors"), "model.safetensors")
    header, body = split_safetensors(open(f, "rb").read())
    header["model.shared.weight"]["shape"] = shape
    open(f, "wb").write(join_safetensors(header, body))
    with pytest.raises(CheckpointError, match=bound):
        read_state_dict(f)


def test_a_header_dimension_of_4000_digits_is_refused_and_the_message_stays_short(ckpt):
    f = os.path.join(ckpt("safetensors"), "model.safetensors")
    header, body = split_safetensors(open(f, "rb").read())
    header["model.shared.weight"]["shape"] = [10 ** 4000, 10 ** 4000]
    open(f, "wb").write(join_safetensors(header, body))
    with pytest.raises(CheckpointError, match="max_tensor_elements") as e:
        read_state_dict(f)
    assert len(str(e.value)) < 1000


def test_an_oversized_spiece_model_is_refused_before_sentencepiece_reads_it(ckpt):
    with limits.override(max_spiece_bytes=1000), pytest.raises(TokenizerError, match="max_spiece_bytes"):
        minipegx.Tokenizer.from_pretrained(ckpt("safetensors"))


def test_a_pickled_tensor_with_more_elements_than_its_storage_is_refused(tmp_path):
    """Stride 0 would make a 2^30-element view of 4 floats, which the first copy would try to allocate."""
    data = torch_pickle({"w": Tensor(float_storage(), (2 ** 15, 2 ** 15), (0, 0))})
    torch_zip(tmp_path / "m.bin", data, {"0": bytes(16)})
    with pytest.raises(CheckpointError, match="past the end of its storage"):
        read_state_dict(tmp_path / "m.bin")


# ---------------------------------------------------------------------------------------------- 3. substitution
@pytest.mark.parametrize("fmt", ["safetensors", "bin_zip"])
def test_two_names_for_one_parameter_with_different_values_name_both(ckpt, fmt):
    """In a .bin the later name used to win, whatever its values; in safetensors, the sorted-first one."""
    import torch

    d = ckpt(fmt)
    flat = {k: np.array(v) for k, v in read_state_dict(d).items()}
    flat["encoder.layer_norm.weight"] = flat["model.encoder.layer_norm.weight"] + 1
    if fmt == "safetensors":
        from safetensors.numpy import save_file
        save_file(flat, os.path.join(d, "model.safetensors"))
    else:
        torch.save({k: torch.from_numpy(v) for k, v in flat.items()}, os.path.join(d, "pytorch_model.bin"))
    with pytest.raises(CheckpointError, match=r"stores (model\.)?encoder.layer_norm.weight and "
                                              r"(model\.)?encoder.layer_norm.weight, two names for the parameter"):
        load_params(d)


def test_two_names_for_one_parameter_with_identical_values_load(ckpt):
    flat = dict(read_state_dict(ckpt("safetensors")))
    d = ckpt("sharded")
    from safetensors.numpy import save_file
    os.remove(os.path.join(d, "model.safetensors.index.json"))
    save_file({**flat, "encoder.layer_norm.weight": flat["model.encoder.layer_norm.weight"].copy()},
              os.path.join(d, "model.safetensors"))
    np.testing.assert_array_equal(load_params(d)["model"]["encoder"]["layer_norm"]["weight"],
                                  flat["model.encoder.layer_norm.weight"])


def test_a_name_stored_twice_in_a_pickle_is_refused(tmp_path):
    # {"w": 1, "w": 2} as SETITEMS: the later value would win silently
    data = b"\x80\x02}q\x00(X\x01\x00\x00\x00wK\x01X\x01\x00\x00\x00wK\x02u."
    torch_zip(tmp_path / "m.bin", data)
    with pytest.raises(CheckpointError, match="'w' is stored twice"):
        read_state_dict(tmp_path / "m.bin")


def test_a_name_stored_twice_in_a_safetensors_header_is_refused(ckpt):
    f = os.path.join(ckpt("safetensors"), "model.safetensors")
    header, body = split_safetensors(open(f, "rb").read())
    raw = json.dumps(header).encode()
    entry = json.dumps({"model.shared.weight": header["model.shared.weight"]}).encode()[1:-1]
    open(f, "wb").write(join_safetensors(None, body, raw[:-1] + b", " + entry + b"}"))
    with pytest.raises(CheckpointError, match="'model.shared.weight' appears twice"):
        read_state_dict(f)


# ---------------------------------------------------------------------------------------------- 4. raw exceptions
JSON_FILES = [("safetensors", "config.json", ConfigError), ("safetensors", "generation_config.json", ConfigError),
              ("sharded", "model.safetensors.index.json", CheckpointError),
              ("safetensors", "tokenizer_config.json", TokenizerError),
              ("safetensors", "special_tokens_map.json", TokenizerError),
              ("quantized", "quantization_config.json", CheckpointError)]


@pytest.mark.parametrize("fmt, name, error", JSON_FILES)
def test_deeply_nested_json_in_every_json_file_is_refused_by_depth(ckpt, fmt, name, error):
    d = ckpt(fmt)
    open(os.path.join(d, name), "w").write(nested_json(100_000))
    refused_in_child("model", d, error, "max_json_depth")


def test_deeply_nested_json_in_a_safetensors_header_is_refused_by_depth(ckpt):
    f = os.path.join(ckpt("safetensors"), "model.safetensors")
    _, body = split_safetensors(open(f, "rb").read())
    open(f, "wb").write(join_safetensors(None, body, nested_json(100_000).encode()))
    with pytest.raises(CheckpointError, match="max_json_depth"):
        read_state_dict(f)


@pytest.mark.parametrize("fmt, name, error", JSON_FILES)
def test_a_json_file_that_is_a_list_is_refused(ckpt, fmt, name, error):
    d = ckpt(fmt)
    open(os.path.join(d, name), "w").write("[1, 2]")
    with pytest.raises(error, match="must hold a JSON object, not an array"):
        minipegx.from_pretrained(d)
        minipegx.Tokenizer.from_pretrained(d)


@pytest.mark.parametrize("change", [
    lambda e: {**e, "shape": "abc"}, lambda e: {**e, "shape": [True, 16]}, lambda e: {**e, "shape": [1.5, 16]},
    lambda e: {**e, "data_offsets": [True, 3]}, lambda e: {**e, "data_offsets": "0-4"}, lambda e: {**e, "dtype": 5},
    lambda e: {**e, "dtype": ["F32"]}, lambda e: [e], lambda e: {"dtype": "F32"},
], ids=["shape-str", "shape-bool", "shape-float", "offsets-bool", "offsets-str", "dtype-int", "dtype-list",
        "entry-list", "entry-incomplete"])
def test_wrong_json_types_in_a_safetensors_header_are_checkpoint_errors(ckpt, change):
    f = os.path.join(ckpt("safetensors"), "model.safetensors")
    header, body = split_safetensors(open(f, "rb").read())
    header["model.shared.weight"] = change(header["model.shared.weight"])
    open(f, "wb").write(join_safetensors(header, body))
    with pytest.raises(CheckpointError, match="model.shared.weight"):
        read_state_dict(f)


@pytest.mark.parametrize("weight_map, words", [
    ([], "weight_map must be an object"), ({"a": 5}, "weight_map must be an object"),
    ({"a": "model.safetensors.index.json"}, "a shard must be a .safetensors or .bin file name"),
    ({"a": "../model.safetensors"}, "in the index's own folder"), ({"a": "/etc/passwd"}, "own folder"),
])
def test_a_shard_index_with_wrong_types_or_naming_itself_is_refused(ckpt, weight_map, words):
    d = ckpt("sharded")
    rewrite_json(os.path.join(d, "model.safetensors.index.json"), lambda i: {**i, "weight_map": weight_map})
    with pytest.raises(CheckpointError, match=words):
        read_state_dict(d)


def damage_zip_member(path, member_suffix, change_header):
    """Rewrite fields of one member's local and central headers: change_header(bytearray, offset, central)."""
    data = bytearray(open(path, "rb").read())
    with zipfile.ZipFile(path) as z:
        info = next(i for i in z.infolist() if i.filename.endswith(member_suffix))
    c = data.find(b"PK\x01\x02")
    while c >= 0:
        (name_len,) = struct.unpack_from("<H", data, c + 28)
        if data[c + 46:c + 46 + name_len].decode().endswith(member_suffix):
            change_header(data, info.header_offset, c)
        c = data.find(b"PK\x01\x02", c + 4)
    open(path, "wb").write(bytes(data))


@pytest.mark.parametrize("damage, words", [
    ("crc", "CRC"), ("encrypted", "encrypted"), ("method", "compression method 99"),
])
@pytest.mark.parametrize("member", ["data.pkl", "data/0"])
def test_damaged_zip_members_are_checkpoint_errors(ckpt, damage, words, member):
    f = os.path.join(ckpt("bin_zip"), "pytorch_model.bin")

    def change(data, local, central):
        if damage == "crc":  # flip the stored CRC-32 in both headers
            for at in (local + 14, central + 16):
                data[at] ^= 0xFF
        elif damage == "encrypted":
            data[local + 6] |= 1
            data[central + 8] |= 1
        else:
            struct.pack_into("<H", data, local + 8, 99)
            struct.pack_into("<H", data, central + 10, 99)

    damage_zip_member(f, member, change)
    with pytest.raises(CheckpointError, match=words if damage != "crc" or member == "data/0" else "Bad CRC|CRC"):
        read_state_dict(f)


def test_unhashable_keys_in_a_legacy_file_are_refused(ckpt):
    f = os.path.join(ckpt("bin_legacy"), "pytorch_model.bin")
    head = b"".join(pickle.dumps(x, protocol=2) for x in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}))
    # a dict whose key is a list: EMPTY_DICT, EMPTY_LIST, BININT1 1, SETITEM
    open(f, "wb").write(head + b"\x80\x02}]K\x01s." + pickle.dumps([], protocol=2))
    with pytest.raises(CheckpointError, match="key is a list, not a string"):
        read_state_dict(f)


@pytest.mark.parametrize("value", ["1e999", "-1e999", "-5", "0", "3.5", "NaN", "\"512\"", "true"])
def test_model_max_length_must_be_a_whole_number_at_least_1(ckpt, value):
    d = ckpt("safetensors")
    path = os.path.join(d, "tokenizer_config.json")
    text = json.dumps({**json.load(open(path)), "model_max_length": 1})
    open(path, "w").write(text.replace('"model_max_length": 1', f'"model_max_length": {value}'))
    with pytest.raises(TokenizerError, match="model_max_length|NaN is not a JSON number"):
        minipegx.Tokenizer.from_pretrained(d)


def test_model_max_length_1e30_means_no_limit(ckpt):
    d = ckpt("safetensors")
    rewrite_json(os.path.join(d, "tokenizer_config.json"), lambda c: {**c, "model_max_length": int(1e30)})
    assert minipegx.Tokenizer.from_pretrained(d).model_max_length is None


def test_a_quantized_directory_with_a_non_float_embedding_is_refused(ckpt):
    from safetensors.numpy import load_file, save_file

    d = ckpt("quantized")
    f = os.path.join(d, "model.safetensors")
    flat = load_file(f)
    flat["model.shared.weight"] = flat["model.shared.weight"].astype(np.int32)
    save_file(flat, f, metadata={"format": "pt", "quantization": "int8"})
    with pytest.raises(CheckpointError, match=r"not floating point, e.g. model.shared.weight \(int32\)"):
        minipegx.from_pretrained(d)


@pytest.mark.parametrize("field", ["tie_word_embeddings", "scale_embedding", "stagger_local_blocks", "use_cache"])
def test_config_booleans_must_be_json_booleans_not_strings(ckpt, field):
    d = ckpt("safetensors")
    rewrite_json(os.path.join(d, "config.json"), lambda c: {**c, field: "false"})
    with pytest.raises(ConfigError, match=f"{field} must be true or false.*transformers would treat"):
        minipegx.from_pretrained(d)


@pytest.mark.parametrize("field, value", [("dropout", "0.1"), ("init_std", None), ("activation_function", 5),
                                          ("d_model", 16.0), ("eos_token_id", [[1]])])
def test_every_config_field_is_type_checked(ckpt, field, value):
    d = ckpt("safetensors")
    rewrite_json(os.path.join(d, "config.json"), lambda c: {**c, field: value})
    with pytest.raises(ConfigError, match=field):
        minipegx.from_pretrained(d)


def test_a_global_outside_the_allow_list_is_still_refused_by_the_scan(tmp_path):
    import collections
    torch_zip(tmp_path / "m.bin", pickle.dumps(collections.deque([1]), protocol=2))
    with pytest.raises(UnsafeCheckpointError, match="collections.deque"):
        read_state_dict(tmp_path / "m.bin")


# ---------------------------------------------------------------------------------------------- arguments
def loading_calls():
    from minipegx.checkpoint import save_params
    demo = minipegx.demo_model_path()
    return {
        "from_pretrained(123)": (lambda: minipegx.from_pretrained(123), InputError, "str or os.PathLike"),
        "from_pretrained(NUL)": (lambda: minipegx.from_pretrained("a\0b"), CheckpointError, "NUL character"),
        "read_state_dict(NUL)": (lambda: read_state_dict("a\0b"), CheckpointError, "NUL character"),
        "from_json_file(NUL bytes)": (lambda: PegasusXConfig.from_json_file(b"/tmp\0"), ConfigError, "NUL"),
        "Tokenizer(None)": (lambda: minipegx.Tokenizer(None), TokenizerError, "spiece_model_path must be"),
        "Tokenizer.from_pretrained(None)": (lambda: minipegx.Tokenizer.from_pretrained(None), TokenizerError,
                                            "path must be"),
        "load_params(config=dict)": (lambda: load_params(demo, {"d_model": 16}), ConfigError, "PegasusXConfig"),
        "save_params(metadata={'a': 1})": (lambda: save_params({"a": np.zeros(2)}, "/nonexistent", {"a": 1}),
                                           CheckpointError, "dict of str to str"),
        "save_params(strings)": (lambda: save_params({"a": "text"}, "/nonexistent"), CheckpointError, "not numbers"),
    }


@pytest.mark.parametrize("call", list(loading_calls()))
def test_loading_functions_check_their_arguments_first(call):
    fn, error, words = loading_calls()[call]
    with pytest.raises(error, match=words):
        fn()


def test_a_zip_with_two_entries_of_one_name_is_refused(tmp_path):
    """zipfile reads the last of two same-named entries: a second data/0 would swap a weight silently."""
    good = torch_pickle({"w": Tensor(float_storage())})
    import warnings
    with warnings.catch_warnings(), zipfile.ZipFile(tmp_path / "m.bin", "w") as z:
        warnings.simplefilter("ignore")  # zipfile warns "Duplicate name"
        z.writestr("archive/data.pkl", good)
        z.writestr("archive/data/0", np.zeros(4, np.float32).tobytes())
        z.writestr("archive/data/0", np.ones(4, np.float32).tobytes())
    with pytest.raises(CheckpointError, match="two zip entries named 'archive/data/0'"):
        read_state_dict(tmp_path / "m.bin")
