"""PegasusX.save_pretrained and Tokenizer.save_pretrained write a folder that transformers and minipegx load.

The specification: what minipegx saves, transformers loads to the same logits (within LOGITS: the two
sum in different orders) and AutoTokenizer to the same ids; minipegx loads it back bit for bit; a
quantized model saves only in a form it names; the folder a model was loaded from is not replaced
unless asked. The models are the bundled short demo model (a real tokenizer) with one weight changed in
minipegx, so the test sees minipegx's weights written, not a file copied, and the tiny random models
of the parity tests (untied embeddings).
"""

from __future__ import annotations

import json
import os
import shutil
import warnings

import numpy as np
import pytest
from reference import pair, t, torch, transformers

import minipegx
from minipegx.checkpoint import flatten_params, save_quantized
from minipegx.errors import CheckpointError, MiniPegxWarning
from minipegx.tolerances import LOGITS

TEXTS = ["According to the market ledger, Wendel returned 87 blankets to Ironmere.",
         "  two  spaces,\ttabs\nand <mask_1> a special token  "]
HF_FILES = {"config.json", "generation_config.json", "model.safetensors", "spiece.model", "tokenizer.json",
            "tokenizer_config.json", "special_tokens_map.json"}


@pytest.fixture(scope="module")
def changed():
    """The short demo model with one weight changed in minipegx (a model a user edited or trained)."""
    model = minipegx.from_pretrained(minipegx.demo_model_path("short"))
    fc1 = model.params["model"]["encoder"]["layers"][0]["fc1"]
    fc1["weight"] = fc1["weight"] * np.float32(1.5)
    return model


@pytest.fixture(scope="module")
def saved(changed, tmp_path_factory):
    return changed.save_pretrained(tmp_path_factory.mktemp("saved") / "model")


def minipegx_logits(model, tok, texts):
    batch = tok(texts, padding=True, return_tensors="np")
    dec = np.array([[0, 400, 500]] * len(texts))
    return batch, dec, model(**batch, decoder_input_ids=dec).logits


def transformers_logits(path, batch, dec):
    ref = transformers.AutoModelForSeq2SeqLM.from_pretrained(path).eval()
    with torch.no_grad():
        return ref(input_ids=t(batch["input_ids"]), attention_mask=t(batch["attention_mask"]),
                   decoder_input_ids=t(dec)).logits.numpy()


def test_the_folder_holds_what_transformers_writes(saved):
    assert HF_FILES <= set(os.listdir(saved))
    config = json.loads(open(os.path.join(saved, "config.json")).read())
    assert config["model_type"] == "pegasus_x" and config["architectures"] == ["PegasusXForConditionalGeneration"]
    assert config["dtype"] == "float32"


def test_transformers_loads_the_saved_model_with_minipegx_logits(changed, saved):
    tok = minipegx.Tokenizer.from_pretrained(saved)
    batch, dec, mine = minipegx_logits(changed, tok, TEXTS)
    ref = transformers_logits(saved, batch, dec)
    assert LOGITS.holds(mine, ref), LOGITS.error(mine, ref)
    original = transformers_logits(minipegx.demo_model_path("short"), batch, dec)
    assert not LOGITS.holds(original, ref)          # the changed weight was saved, not the bundled file


def test_minipegx_loads_the_saved_model_bit_for_bit(changed, saved):
    a, b = flatten_params(changed.params), flatten_params(minipegx.from_pretrained(saved).params)
    assert a.keys() == b.keys()
    assert all(a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]) for k in a)
    assert minipegx.from_pretrained(saved).generation_config == changed.generation_config


@pytest.mark.parametrize("loader", ["AutoTokenizer", "PegasusTokenizerFast"])
def test_transformers_tokenizers_load_the_saved_folder_with_minipegx_ids(saved, loader):
    hf = getattr(transformers, loader).from_pretrained(saved)
    tok = minipegx.Tokenizer.from_pretrained(saved)
    assert hf(TEXTS)["input_ids"] == tok(TEXTS)["input_ids"]
    assert hf.decode(tok(TEXTS[1])["input_ids"]) == tok.decode(tok(TEXTS[1])["input_ids"])


def test_untied_embeddings_save_under_their_own_names_and_keep_logits(tmp_path):
    ref, model = pair(tmp_path, tie_word_embeddings=False)
    with pytest.warns(MiniPegxWarning, match="holds no tokenizer"):   # a tiny random model has none
        path = model.save_pretrained(tmp_path / "out")
    rng = np.random.default_rng(0)
    ids = rng.integers(5, 163, size=(2, 13))
    mask = np.ones_like(ids)
    dec = np.array([[0, 7, 9]] * 2)
    mine = model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits
    theirs = transformers_logits(path, {"input_ids": ids, "attention_mask": mask}, dec)
    assert LOGITS.holds(mine, theirs), LOGITS.error(mine, theirs)
    assert "lm_head" in minipegx.from_pretrained(path).params


def test_tokenizer_save_pretrained_writes_its_four_files(tmp_path):
    tok = minipegx.Tokenizer.from_pretrained(minipegx.demo_model_path("short"))
    written = tok.save_pretrained(tmp_path)
    assert {os.path.basename(p) for p in written} == HF_FILES - {"config.json", "generation_config.json",
                                                                 "model.safetensors"}
    again = minipegx.Tokenizer.from_pretrained(tmp_path)
    assert again.model_max_length == tok.model_max_length == 16384
    assert again(TEXTS)["input_ids"] == tok(TEXTS)["input_ids"]


# ---- quantized models -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def quantized():
    return minipegx.from_pretrained(minipegx.demo_model_path("short"), quantize="int8")


def test_a_quantized_model_must_name_the_form_it_saves(quantized, tmp_path):
    with pytest.raises(CheckpointError, match="int8-quantized.*quantized='dequantize'.*quantized='packed'"):
        quantized.save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="choose 'dequantize' or 'packed'"):
        quantized.save_pretrained(tmp_path, quantized="float")


def test_dequantized_save_gives_transformers_the_quantized_models_logits(quantized, tmp_path):
    path = quantized.save_pretrained(tmp_path / "deq", quantized="dequantize")
    assert "quantization_config.json" not in os.listdir(path)
    tok = minipegx.Tokenizer.from_pretrained(path)
    batch, dec, mine = minipegx_logits(quantized, tok, TEXTS)
    theirs = transformers_logits(path, batch, dec)
    assert LOGITS.holds(mine, theirs), LOGITS.error(mine, theirs)


def test_packed_save_loads_back_quantized_with_its_tokenizer(quantized, tmp_path):
    path = save_quantized(quantized, tmp_path / "packed")
    assert HF_FILES | {"quantization_config.json"} <= set(os.listdir(path))
    again = minipegx.from_pretrained(path)
    assert type(again.params["model"]["decoder"]["layers"][0]["fc1"]["weight"]).__name__ == "Int8Weight"
    # Saved again as float into the same folder: the stale quantization_config.json goes, or the float
    # weights would be read as packed ones.
    again.save_pretrained(path, quantized="dequantize", overwrite=True)
    assert "quantization_config.json" not in os.listdir(path)
    assert minipegx.from_pretrained(path).params["model"]["decoder"]["layers"][0]["fc1"]["weight"].dtype == np.float32


def test_packed_needs_a_quantized_model(changed, tmp_path):
    with pytest.raises(CheckpointError, match="holds no quantized weights"):
        changed.save_pretrained(tmp_path, quantized="packed")


# ---- where it writes ----------------------------------------------------------------------------------------


def test_saving_over_the_folder_the_model_came_from_needs_overwrite(tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(minipegx.demo_model_path("short"), folder)
    model = minipegx.from_pretrained(folder)
    with pytest.raises(CheckpointError, match="the folder the model was loaded from.*overwrite=True"):
        model.save_pretrained(folder)
    tok = minipegx.Tokenizer.from_pretrained(folder)
    with pytest.raises(CheckpointError, match="the folder the tokenizer was loaded from"):
        tok.save_pretrained(folder)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.save_pretrained(folder, overwrite=True)
    again = minipegx.from_pretrained(folder)
    a, b = flatten_params(model.params), flatten_params(again.params)
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_a_model_whose_folder_was_removed_still_saves_with_a_tokenizer(tmp_path):
    """A model loaded from a folder that is gone since (a rotated training checkpoint, a temporary download)
    has nothing left to protect: save_pretrained writes, with the tokenizer it is given."""
    folder = tmp_path / "gone"
    shutil.copytree(minipegx.demo_model_path("short"), folder)
    model = minipegx.from_pretrained(folder)
    tok = minipegx.Tokenizer.from_pretrained(minipegx.demo_model_path("short"))
    shutil.rmtree(folder)
    (tmp_path / "new").mkdir()                                  # an existing folder, as a training run's OUT
    saved = model.save_pretrained(tmp_path / "new", tokenizer=tok)
    assert HF_FILES <= set(os.listdir(saved))


def test_a_file_in_the_way_is_a_clear_error(changed, tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(CheckpointError, match="is a file"):
        changed.save_pretrained(tmp_path / "f")


def test_tokenizer_argument_must_be_a_minipegx_tokenizer(changed, tmp_path):
    with pytest.raises(CheckpointError, match="minipegx Tokenizer"):
        changed.save_pretrained(tmp_path, tokenizer="spiece.model")


def test_the_normalizer_map_read_from_spiece_model_is_what_protobuf_reads():
    """tokenizer.json's Precompiled normalizer gets spiece.model's character map from a small wire-format
    reader (no protobuf dependency); protobuf's own parser is the reference."""
    from sentencepiece import sentencepiece_model_pb2

    from minipegx.checkpoint.tokenizer_files import precompiled_charsmap

    path = os.path.join(minipegx.demo_model_path("short"), "spiece.model")
    proto = sentencepiece_model_pb2.ModelProto()
    with open(path, "rb") as f:
        proto.ParseFromString(f.read())
    assert precompiled_charsmap(path) == proto.normalizer_spec.precompiled_charsmap != b""
