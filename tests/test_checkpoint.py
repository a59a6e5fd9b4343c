"""minipegx.checkpoint against real transformers saves of a tiny random PEGASUS-X.

Every format the Hub uses is written by torch/transformers themselves, then read back without torch;
loading is a pure copy, so every comparison is exact (tolerance 0).
"""

import collections
import copy
import io
import json
import mmap
import os
import pickle
import zipfile

import ml_dtypes
import numpy as np
import pytest

from minipegx.checkpoint import (SafeUnpickler, expected_shapes, flatten_params, load_params, read_state_dict,
                                 save_params)
from minipegx.config import PegasusXConfig
from minipegx.errors import BackendError, CheckpointError, CheckpointNotFoundError, UnsafeCheckpointError

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

TINY = dict(vocab_size=103 + 50, d_model=16, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
            decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, num_global_tokens=2, block_size=4,
            max_position_embeddings=64)
TIED_ALIASES = ("model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight", "lm_head.weight")


def tiny_model(seed=0, **overrides):
    torch.manual_seed(seed)
    model = transformers.PegasusXForConditionalGeneration(transformers.PegasusXConfig(**TINY, **overrides))
    return model.eval()


def our_config(model) -> PegasusXConfig:
    return PegasusXConfig.from_dict(model.config.to_dict())


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def config(model):
    return our_config(model)


def reference(model, names) -> dict:
    """What each canonical tensor must equal, as float32 (bf16 and fp16 widen exactly)."""
    sd = model.state_dict()
    return {n: sd[n].float().numpy() for n in names}


def assert_loads_exactly(path, model, stored_dtype=np.float32):
    """load_params(path) holds exactly the canonical tensors of model.state_dict(), in the stored dtype."""
    config = our_config(model)
    flat = flatten_params(load_params(path, config))
    assert set(flat) == set(expected_shapes(config))
    for name, want in reference(model, flat).items():
        assert flat[name].dtype == stored_dtype, name
        np.testing.assert_array_equal(flat[name].astype(np.float32), want, err_msg=name)  # pure copy: exact


def is_memory_mapped(x) -> bool:
    """True when x is a view whose base chain ends in an mmap (not a private copy in RAM)."""
    while x is not None:
        if isinstance(x, mmap.mmap):
            return True
        x = x.obj if isinstance(x, memoryview) else getattr(x, "base", None)
    return False


def write_bin_shards(state_dict, folder, n_shards=2):
    """A sharded pytorch_model.bin checkpoint as older transformers wrote it (it no longer writes .bin)."""
    names = list(state_dict)
    weight_map = {}
    for i in range(n_shards):
        shard = f"pytorch_model-{i + 1:05d}-of-{n_shards:05d}.bin"
        part = {n: state_dict[n] for n in names[i::n_shards]}
        torch.save(part, os.path.join(folder, shard))
        weight_map.update(dict.fromkeys(part, shard))
    with open(os.path.join(folder, "pytorch_model.bin.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": weight_map}, f)


# ---------------------------------------------------------------------------------- the tensor list
def test_expected_shapes_match_transformers_state_dict(model, config):
    sd = model.state_dict()  # holds the tied embedding under all four names, no positions, no logits bias
    want = {n: tuple(t.shape) for n, t in sd.items() if n not in TIED_ALIASES}
    assert expected_shapes(config) == want


def test_expected_shapes_untied_adds_lm_head():
    model = tiny_model(tie_word_embeddings=False)
    sd = model.state_dict()
    want = {n: tuple(t.shape) for n, t in sd.items() if n not in TIED_ALIASES[:2]}
    assert expected_shapes(our_config(model)) == want


# ---------------------------------------------------------------------------------- every format
def test_loads_safetensors(model, tmp_path):
    model.save_pretrained(tmp_path)
    assert_loads_exactly(tmp_path, model)


def test_loads_sharded_safetensors(model, tmp_path):
    model.save_pretrained(tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").exists() and len(list(tmp_path.glob("model-*"))) > 1
    assert_loads_exactly(tmp_path, model)


def test_loads_pytorch_model_bin(model, tmp_path):
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")  # all four tied names, one storage
    assert_loads_exactly(tmp_path, model)


def test_loads_old_tied_layout_with_four_separate_copies(model, tmp_path):
    sd = {n: t.clone() for n, t in model.state_dict().items()}  # equal values, no shared memory
    assert all(n in sd for n in TIED_ALIASES)
    torch.save(sd, tmp_path / "pytorch_model.bin")
    assert_loads_exactly(tmp_path, model)


def test_loads_sharded_pytorch_model_bin(model, tmp_path):
    write_bin_shards(model.state_dict(), tmp_path)
    assert_loads_exactly(tmp_path, model)


def test_loads_legacy_non_zip_torch_save(model, tmp_path):
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin", _use_new_zipfile_serialization=False)
    assert_loads_exactly(tmp_path, model)


def test_loads_bare_pegasus_x_model_without_prefix(model, tmp_path):
    model.model.save_pretrained(tmp_path)  # PegasusXModel: shared.weight, encoder..., decoder...
    assert "shared.weight" in read_state_dict(tmp_path)
    assert_loads_exactly(tmp_path, model)


@pytest.mark.parametrize("torch_dtype, np_dtype", [(torch.float16, np.float16),
                                                   (torch.bfloat16, ml_dtypes.bfloat16)])
@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_loads_half_precision_keeping_stored_dtype(model, tmp_path, torch_dtype, np_dtype, fmt):
    low = copy.deepcopy(model).to(torch_dtype)
    if fmt == "safetensors":
        low.save_pretrained(tmp_path)
    else:
        torch.save(low.state_dict(), tmp_path / "pytorch_model.bin")
    assert_loads_exactly(tmp_path, low, stored_dtype=np.dtype(np_dtype))


def test_loads_untied_embeddings_keeping_each_matrix(tmp_path):
    model = tiny_model(tie_word_embeddings=False)
    model.save_pretrained(tmp_path)
    flat = flatten_params(load_params(tmp_path, our_config(model)))
    # transformers 5 unties the encoder and decoder embeddings too; each differs from shared, so each is kept
    assert {"lm_head.weight", *TIED_ALIASES[:2]} <= set(flat)
    for name, want in reference(model, flat).items():
        np.testing.assert_array_equal(flat[name], want, err_msg=name)


def test_read_single_weights_file_path(model, tmp_path):
    model.save_pretrained(tmp_path)
    sd = read_state_dict(tmp_path / "model.safetensors")
    assert set(sd) == set(model.state_dict()) - set(TIED_ALIASES)


def test_params_tree_uses_hugging_face_names_and_layer_lists(model, config, tmp_path):
    model.save_pretrained(tmp_path)
    params = load_params(tmp_path, config)
    q = params["model"]["encoder"]["layers"][1]["self_attn"]["q_proj"]["weight"]
    assert isinstance(params["model"]["decoder"]["layers"], list) and len(params["model"]["decoder"]["layers"]) == 2
    np.testing.assert_array_equal(q, model.state_dict()["model.encoder.layers.1.self_attn.q_proj.weight"].numpy())
    assert set(params) == {"model"}  # tied: no lm_head


def test_config_read_from_directory_when_not_given(model, tmp_path):
    model.save_pretrained(tmp_path)
    assert set(flatten_params(load_params(tmp_path))) == set(expected_shapes(our_config(model)))


# ---------------------------------------------------------------------------------- memory and dtype
def test_safetensors_tensors_are_memory_mapped_views(model, tmp_path):
    model.save_pretrained(tmp_path)
    sd = read_state_dict(tmp_path)
    assert all(is_memory_mapped(x) and not x.flags.writeable for x in sd.values())


def test_pytorch_bin_tensors_are_memory_mapped_and_tied_names_share_memory(model, tmp_path):
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    sd = read_state_dict(tmp_path)
    assert all(is_memory_mapped(x) for x in sd.values())
    assert np.shares_memory(sd["model.shared.weight"], sd["lm_head.weight"])


def test_dtype_casts_fp16_checkpoint_to_float32(model, config, tmp_path):
    low = copy.deepcopy(model).half()
    low.save_pretrained(tmp_path)
    flat = flatten_params(load_params(tmp_path, config, dtype=np.float32))
    for name, want in reference(low, flat).items():
        assert flat[name].dtype == np.float32 and not is_memory_mapped(flat[name])
        np.testing.assert_array_equal(flat[name], want, err_msg=name)  # fp16 -> fp32 is exact


def test_dtype_bfloat16_by_name(model, config, tmp_path):
    model.save_pretrained(tmp_path)
    flat = flatten_params(load_params(tmp_path, config, dtype="bfloat16"))
    assert all(x.dtype == ml_dtypes.bfloat16 for x in flat.values())


def test_dtype_not_a_float_is_refused(model, config, tmp_path):
    model.save_pretrained(tmp_path)
    with pytest.raises(BackendError, match="int32"):
        load_params(tmp_path, config, dtype=np.int32)


# ---------------------------------------------------------------------------------- saving
def test_save_params_round_trips_through_transformers(model, config, tmp_path):
    model.save_pretrained(tmp_path / "in")
    params = load_params(tmp_path / "in", config)
    written = save_params(params, tmp_path / "out")
    assert written == str(tmp_path / "out" / "model.safetensors")
    model.config.save_pretrained(tmp_path / "out")
    back = transformers.PegasusXForConditionalGeneration.from_pretrained(tmp_path / "out")
    for name, want in model.state_dict().items():
        torch.testing.assert_close(back.state_dict()[name], want, rtol=0, atol=0, msg=name)


def test_save_params_accepts_flat_dict_and_bfloat16(config, model, tmp_path):
    model.save_pretrained(tmp_path / "in")
    flat = flatten_params(load_params(tmp_path / "in", config, dtype="bfloat16"))
    save_params(flat, tmp_path / "w.safetensors")
    again = read_state_dict(tmp_path / "w.safetensors")
    assert set(again) == set(flat)
    for name, x in flat.items():
        assert again[name].dtype == ml_dtypes.bfloat16
        np.testing.assert_array_equal(again[name], x, err_msg=name)


# ---------------------------------------------------------------------------------- not found
def test_missing_directory_names_the_path(config, tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="no-such-dir"):
        load_params(tmp_path / "no-such-dir", config)


def test_directory_without_weights_lists_the_files_looked_for(config, tmp_path):
    with pytest.raises(CheckpointNotFoundError) as e:
        read_state_dict(tmp_path)
    for name in ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"):
        assert name in str(e.value)


def test_sharded_index_naming_a_missing_shard(model, tmp_path):
    model.save_pretrained(tmp_path, max_shard_size="20KB")
    shard = sorted(tmp_path.glob("model-*.safetensors"))[-1]
    shard.unlink()
    with pytest.raises(CheckpointNotFoundError, match=shard.name) as e:
        read_state_dict(tmp_path)
    assert "model.safetensors.index.json" in str(e.value)


# ---------------------------------------------------------------------------------- corrupt files
def corrupt_safetensors(data: bytes, how: str) -> bytes:
    n = int.from_bytes(data[:8], "little")
    if how == "header_length":
        return (len(data) * 2).to_bytes(8, "little") + data[8:]
    if how == "json":
        return data[:8] + b"{" * n + data[8 + n:]
    if how == "data_beyond_end":
        return data[: 8 + n + (len(data) - 8 - n) // 2]
    if how == "shorter_than_8_bytes":
        return data[:5]
    raise AssertionError(how)


@pytest.mark.parametrize("how", ["header_length", "json", "data_beyond_end", "shorter_than_8_bytes"])
def test_corrupt_safetensors_says_truncated_or_corrupt(model, tmp_path, how):
    model.save_pretrained(tmp_path)
    f = tmp_path / "model.safetensors"
    f.write_bytes(corrupt_safetensors(f.read_bytes(), how))
    with pytest.raises(CheckpointError, match="truncated or corrupt.*re-download") as e:
        read_state_dict(tmp_path)
    assert "model.safetensors" in str(e.value)


def test_bin_that_is_neither_zip_nor_pickle(tmp_path):
    (tmp_path / "pytorch_model.bin").write_bytes(b"<html>404 Not Found</html>")
    with pytest.raises(CheckpointError, match="pytorch_model.bin"):
        read_state_dict(tmp_path)


def test_truncated_torch_zip(model, tmp_path):
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    f = tmp_path / "pytorch_model.bin"
    f.write_bytes(f.read_bytes()[:3000])
    with pytest.raises(CheckpointError, match="re-download"):
        read_state_dict(tmp_path)


# ---------------------------------------------------------------------------------- validation
def test_missing_unexpected_and_misshaped_tensors_reported_together(model, config, tmp_path):
    flat = {n: t.numpy() for n, t in model.state_dict().items()}
    del flat["model.encoder.layers.0.fc1.bias"]
    flat["model.encoder.layers.0.fc1.extra"] = np.zeros(3, np.float32)
    flat["model.decoder.layers.1.fc2.weight"] = np.zeros((16, 31), np.float32)
    save_params(flat, tmp_path)
    with pytest.raises(CheckpointError) as e:
        load_params(tmp_path, config)
    msg = str(e.value)
    assert "missing model.encoder.layers.0.fc1.bias: expected shape [32]" in msg
    assert "unexpected model.encoder.layers.0.fc1.extra" in msg
    assert "model.decoder.layers.1.fc2.weight: expected shape [16, 32], found [16, 31]" in msg
    assert "hint" in msg


def test_config_with_other_layer_count_lists_ten_problems_and_a_hint(model, config, tmp_path):
    model.save_pretrained(tmp_path)
    with pytest.raises(CheckpointError) as e:
        load_params(tmp_path, config.replace(encoder_layers=4))
    msg = str(e.value)
    assert "and 18 more" in msg  # 2 missing layers x 14 tensors = 28 problems, 10 shown
    assert "the checkpoint has 2 encoder layers, config.encoder_layers is 4" in msg


def test_nan_in_a_weight_names_the_tensor(model, config, tmp_path):
    flat = {n: t.numpy().copy() for n, t in model.state_dict().items() if n not in TIED_ALIASES}
    flat["model.decoder.layers.0.fc1.weight"][3, 5] = np.nan
    flat["model.encoder.layer_norm.bias"][0] = np.inf
    save_params(flat, tmp_path)
    with pytest.raises(CheckpointError, match="NaN or inf") as e:
        load_params(tmp_path, config)
    assert "model.decoder.layers.0.fc1.weight (1 of 512 values)" in str(e.value)
    assert "model.encoder.layer_norm.bias" in str(e.value)


def test_tied_names_that_differ_are_refused(model, config, tmp_path):
    flat = {n: t.numpy().copy() for n, t in model.state_dict().items()}
    flat["lm_head.weight"][7] += 1
    save_params(flat, tmp_path)
    with pytest.raises(CheckpointError, match="lm_head.weight differs.*tie_word_embeddings"):
        load_params(tmp_path, config)


@pytest.mark.parametrize("kept", ["model.shared.weight", "lm_head.weight", "model.decoder.embed_tokens.weight"])
def test_tied_embedding_under_any_single_name(model, config, tmp_path, kept):
    flat = {n: t.numpy() for n, t in model.state_dict().items() if n not in (*TIED_ALIASES, "model.shared.weight")}
    flat[kept] = model.state_dict()[kept].numpy()
    save_params(flat, tmp_path)
    params = load_params(tmp_path, config)
    np.testing.assert_array_equal(params["model"]["shared"]["weight"],
                                  model.state_dict()["model.shared.weight"].numpy())


# ---------------------------------------------------------------------------------- unsafe pickles
class RunsShell:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


class RunsEval:
    def __init__(self, code):
        self.code = code

    def __reduce__(self):
        return eval, (self.code,)


class Reduces:
    """Pickles as whatever (callable, args) it is given."""

    def __init__(self, reduced):
        self.reduced = reduced

    def __reduce__(self):
        return self.reduced


def torch_zip_with(data_pkl: bytes, path):
    """A zip laid out like torch.save's, whose data.pkl is the given pickle."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", data_pkl)
        z.writestr("archive/version", "3\n")


@pytest.mark.parametrize("payload", ["shell", "eval"])
@pytest.mark.parametrize("container", ["torch_zip", "raw_pickle"])
def test_malicious_pickle_is_refused_without_side_effect(tmp_path, payload, container):
    marker = tmp_path / "pwned"
    evil = (RunsShell(f"touch {marker}") if payload == "shell"
            else RunsEval(f"open({str(marker)!r}, 'w').close()"))
    data = pickle.dumps({"model.shared.weight": evil}, protocol=2)
    f = tmp_path / "pytorch_model.bin"
    if container == "torch_zip":
        torch_zip_with(data, f)
    else:
        f.write_bytes(data)
    with pytest.raises(UnsafeCheckpointError, match="system|eval") as e:
        read_state_dict(f)
    assert not marker.exists()
    assert "refuses" in str(e.value)


@pytest.mark.parametrize("module, name", [
    ("builtins", "eval"), ("builtins", "exec"), ("builtins", "getattr"), ("os", "system"), ("posix", "system"),
    ("subprocess", "Popen"), ("torch.nn", "Module"), ("torch", "load"), ("torch._utils", "_rebuild_tensor"),
    ("torch.storage", "_load_from_bytes"), ("numpy.core.multiarray", "_reconstruct"), ("collections", "deque"),
])
def test_find_class_refuses_everything_outside_the_allow_list(module, name):
    unpickler = SafeUnpickler(io.BytesIO(b""), "x.bin", {})
    with pytest.raises(UnsafeCheckpointError, match=f"{module}.{name}".replace(".", r"\.")):
        unpickler.find_class(module, name)


@pytest.mark.parametrize("module, name", [
    ("collections", "OrderedDict"), ("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_parameter"),
    ("torch", "FloatStorage"), ("torch", "HalfStorage"), ("torch", "BFloat16Storage"),
])
def test_find_class_allows_what_torch_save_writes(module, name):
    assert SafeUnpickler(io.BytesIO(b""), "x.bin", {}).find_class(module, name) is not None


def test_pickle_modifying_an_allowed_global_is_refused(tmp_path):
    # GLOBAL torch._utils._rebuild_tensor_v2, then BUILD with state {"__code__": 1}
    torch_zip_with(b"ctorch._utils\n_rebuild_tensor_v2\n}X\x08\x00\x00\x00__code__K\x01sb.", tmp_path / "m.bin")
    with pytest.raises(CheckpointError, match="not a readable torch pickle"):
        read_state_dict(tmp_path / "m.bin")


def test_tensor_reaching_past_its_storage_is_refused(tmp_path):
    """A pickle claiming a [100] tensor on a 4-element storage must not read memory beyond it."""
    class Storage:  # stands for a 4-element float storage with key "0"
        pass

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", torch.FloatStorage, "0", "cpu", 4) if isinstance(obj, Storage) else None

    buf = io.BytesIO()
    rebuild = (torch._utils._rebuild_tensor_v2, (Storage(), 0, (100,), (1,), False, collections.OrderedDict()))
    Pickler(buf, protocol=2).dump({"w": Reduces(rebuild)})
    with zipfile.ZipFile(tmp_path / "m.bin", "w") as z:
        z.writestr("archive/data.pkl", buf.getvalue())
        z.writestr("archive/data/0", np.zeros(4, np.float32).tobytes())
    with pytest.raises(CheckpointError, match="past the end of its storage"):
        read_state_dict(tmp_path / "m.bin")
