"""The tokenizer's files: reading spiece.model and tokenizer_config.json, writing what transformers reads.

A Pegasus tokenizer folder, as transformers 5 writes it and as minipegx writes it:

    spiece.model              the sentencepiece model (what minipegx's Tokenizer reads)
    tokenizer.json            the same tokenizer for the `tokenizers` library (what AutoTokenizer reads)
    tokenizer_config.json     class name, special tokens, offset, model_max_length
    special_tokens_map.json   the special tokens again (transformers 4 wrote it; older tools read it)

tokenizer.json is built here with the `tokenizers` library, piece for piece what transformers' own
conversion of spiece.model gives: a Unigram model over Pegasus' vocabulary (the 105 special ids in
front, sentencepiece's pieces and scores after them), spiece.model's normalizer (its precompiled
character map, read out of the file) followed by "squeeze runs of spaces", a Metaspace pre-tokenizer
and decoder, ``</s>`` appended by a template, and the special tokens as added tokens.
"""

from __future__ import annotations

import json
import math
import os

from ..errors import MissingDependencyError, TokenizerError
from ..limits import bounded_repr, current, over_limit, read_json

OFFSET = 103                                  # transformers' PegasusTokenizer(offset=103)
PAD, EOS, MASK_SENT, MASK, UNK = "<pad>", "</s>", "<mask_1>", "<mask_2>", "<unk>"
SPECIAL_TOKENS = [PAD, EOS, MASK_SENT, MASK] + [f"<unk_{i}>" for i in range(2, OFFSET)]  # ids 0..104
SPACE = "▁"                                   # U+2581, sentencepiece's visible space
NO_LIMIT = int(1e30)                          # transformers' "no model_max_length" sentinel
TOKENIZER_FILES = ("spiece.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")

TRAIN_HINT = "train a Pegasus-layout one with `python -m tools.train_spm corpus.txt DIR/spiece`"


# ====================================================================== reading
def load_spiece(path: str):
    """(SentencePieceProcessor, normalizer) of spiece.model, checked for Pegasus' layout. The normalizer
    applies the model's rules only: whitespace is handled as transformers does, in the Tokenizer."""
    import sentencepiece as spm

    if not os.path.isfile(path):
        raise TokenizerError(f"spiece.model not found at {path!r}: copy it from the checkpoint or {TRAIN_HINT}")
    if os.path.getsize(path) > current().max_spiece_bytes:
        raise TokenizerError(f"{path}: " + over_limit("its size", os.path.getsize(path), "max_spiece_bytes"))
    try:
        sp = spm.SentencePieceProcessor(model_file=path)
        normalizer = spm.SentencePieceNormalizer(
            model_file=path, add_dummy_prefix=False, escape_whitespaces=False, remove_extra_whitespaces=False
        )
    except (RuntimeError, OSError) as e:
        raise TokenizerError(
            f"{path!r} is not a readable sentencepiece model ({e}); the file may be truncated or not a "
            f"spiece.model at all: download it again or {TRAIN_HINT}"
        ) from None
    if not (sp.get_piece_size() > 3 and sp.is_control(0) and sp.is_control(1) and sp.unk_id() == 2):
        first = [sp.id_to_piece(i) for i in range(min(3, sp.get_piece_size()))]
        raise TokenizerError(
            f"{path!r} does not have Pegasus' layout (<pad> 0, </s> 1, <unk> 2; it starts with {first}): "
            f"the tokenizer would give wrong ids; {TRAIN_HINT}"
        )
    if not sp.encode("a", out_type=str)[0].startswith(SPACE):
        raise TokenizerError(f"{path!r} was trained with add_dummy_prefix=false, Pegasus needs true; {TRAIN_HINT}")
    return sp, normalizer


def read_folder(path: str) -> tuple:
    """(spiece.model path, model_max_length, clean_up_tokenization_spaces) of a tokenizer folder, its
    tokenizer_config.json and special_tokens_map.json checked (absent files say nothing)."""
    model_path = os.path.join(path, "spiece.model")
    if not os.path.isfile(model_path):
        only_json = os.path.isfile(os.path.join(path, "tokenizer.json"))
        raise TokenizerError(
            f"{path!r} has no spiece.model"
            + (" (only tokenizer.json, as transformers 5's save_pretrained writes)" if only_json else "")
            + f": copy spiece.model from the original checkpoint (its Hugging Face repository has one) "
            f"or {TRAIN_HINT}"
        )
    files = {name: os.path.join(path, name) for name in ("tokenizer_config.json", "special_tokens_map.json")}
    found = {name: read_json(file, name, TokenizerError) if os.path.isfile(file) else {}
             for name, file in files.items()}
    for name, data in found.items():
        check_special_tokens(data, files[name])
    max_len, cleanup = options(found["tokenizer_config.json"], path)
    return model_path, max_len, cleanup


def options(config: dict, path: str) -> tuple:
    """(model_max_length, clean_up_tokenization_spaces) from tokenizer_config.json. model_max_length: None
    (absent, or transformers' 1e30 "no limit") or a whole number >= 1; the flag a JSON boolean."""
    n, cleanup = config.get("model_max_length"), config.get("clean_up_tokenization_spaces", False)
    if n is not None and (isinstance(n, bool) or not isinstance(n, (int, float)) or n < 1
                          or (isinstance(n, float) and not (math.isfinite(n) and n.is_integer()))):
        raise TokenizerError(f"{path}/tokenizer_config.json: model_max_length={bounded_repr(n)} is not a whole "
                             "number >= 1 (transformers writes 1e30 for no limit)")
    if not isinstance(cleanup, bool):
        raise TokenizerError(f"{path}/tokenizer_config.json: clean_up_tokenization_spaces={bounded_repr(cleanup)} "
                             "must be true or false (the string \"false\" would count as true)")
    return (None if n is None or n >= NO_LIMIT else int(n)), cleanup


def check_special_tokens(config: dict, path: str) -> None:
    """minipegx has Pegasus' special tokens built in; refuse a config that renames them."""
    expected = {"pad_token": PAD, "eos_token": EOS, "mask_token": MASK, "mask_token_sent": MASK_SENT,
                "unk_token": UNK}
    for key, want in expected.items():
        value = config.get(key, want)
        if isinstance(value, dict):            # a serialized AddedToken
            value = value.get("content")
        if value != want:
            raise TokenizerError(f"{path}: {key}={bounded_repr(value)}, but minipegx supports Pegasus' {want!r} only")
    if config.get("offset", OFFSET) != OFFSET:
        raise TokenizerError(f"{path}: offset={bounded_repr(config['offset'])}, but minipegx supports Pegasus' "
                             f"{OFFSET} only")


# ====================================================================== writing
def precompiled_charsmap(model_file: str) -> bytes:
    """spiece.model's normalizer_spec.precompiled_charsmap (protobuf field 3, then field 2), read from the
    wire format directly so writing tokenizer.json needs no protobuf package."""
    with open(model_file, "rb") as f:
        spec = _field(f.read(), 3)
    return _field(spec, 2) if spec else b""


def _field(buf: bytes, number: int) -> bytes:
    """The first length-delimited field `number` of a protobuf message (b"" when absent)."""
    def varint(i):
        value, shift = 0, 0
        while True:
            if i >= len(buf):
                raise TokenizerError("spiece.model is truncated (a protobuf varint runs past its end)")
            b = buf[i]
            value |= (b & 0x7F) << shift
            i, shift = i + 1, shift + 7
            if not b & 0x80:
                return value, i

    i = 0
    while i < len(buf):
        key, i = varint(i)
        wire = key & 7
        if wire == 0:
            _, i = varint(i)
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        elif wire == 2:
            size, i = varint(i)
            if key >> 3 == number:
                return bytes(buf[i:i + size])
            i += size
        else:
            raise TokenizerError(f"spiece.model holds protobuf wire type {wire}, which a sentencepiece model never "
                                 "uses: the file is corrupt")
    return b""


def backend_tokenizer(sp, model_file: str):
    """A `tokenizers.Tokenizer` equal to transformers' conversion of spiece.model (see the module docstring)."""
    try:
        from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
        from tokenizers.models import Unigram
    except ImportError:
        raise MissingDependencyError("writing tokenizer.json needs the `tokenizers` library: "
                                     "pip install tokenizers") from None
    vocab = ([(t, 0.0) for t in SPECIAL_TOKENS[:4]] + [(t, -100.0) for t in SPECIAL_TOKENS[4:]]
             + [(sp.id_to_piece(i), sp.get_score(i)) for i in range(2, sp.get_piece_size())])
    tk = Tokenizer(Unigram(vocab, unk_id=sp.unk_id() + OFFSET, byte_fallback=False))
    squeeze = normalizers.Replace(Regex(" {2,}"), " ")
    charsmap = precompiled_charsmap(model_file)
    tk.normalizer = normalizers.Sequence([normalizers.Precompiled(charsmap), squeeze] if charsmap else [squeeze])
    tk.pre_tokenizer = pre_tokenizers.Metaspace(replacement=SPACE, prepend_scheme="always", split=True)
    tk.decoder = decoders.Metaspace(replacement=SPACE, prepend_scheme="always", split=True)
    tk.post_processor = processors.TemplateProcessing(single=f"$A {EOS}", pair=f"$A $B {EOS}",
                                                      special_tokens=[(EOS, 1)])
    tk.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS + [UNK]])
    return tk


def tokenizer_config(model_max_length, clean_up_tokenization_spaces: bool) -> dict:
    """tokenizer_config.json: what transformers 5 reads, in the keys minipegx's loader checks."""
    return {"tokenizer_class": "PegasusTokenizer", "pad_token": PAD, "eos_token": EOS, "unk_token": UNK,
            "mask_token": MASK, "mask_token_sent": MASK_SENT, "offset": OFFSET,
            "additional_special_tokens": [MASK_SENT] + SPECIAL_TOKENS[4:],
            "model_max_length": NO_LIMIT if model_max_length is None else int(model_max_length),
            "clean_up_tokenization_spaces": bool(clean_up_tokenization_spaces)}


def special_tokens_map() -> dict:
    return {"pad_token": PAD, "eos_token": EOS, "unk_token": UNK, "mask_token": MASK,
            "additional_special_tokens": [MASK_SENT] + SPECIAL_TOKENS[4:]}


def tokenizer_file_contents(sp, spiece_path: str, model_max_length, clean_up_tokenization_spaces: bool) -> dict:
    """{file name: bytes} of the four files of a tokenizer folder, from its spiece.model (loaded as `sp`)."""
    with open(spiece_path, "rb") as f:
        spiece = f.read()

    def as_json(obj):
        return (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8")

    return {
        "spiece.model": spiece,
        "tokenizer.json": (backend_tokenizer(sp, spiece_path).to_str(pretty=True) + "\n").encode("utf-8"),
        "tokenizer_config.json": as_json(tokenizer_config(model_max_length, clean_up_tokenization_spaces)),
        "special_tokens_map.json": as_json(special_tokens_map()),
    }


__all__ = ["OFFSET", "SPECIAL_TOKENS", "SPACE", "NO_LIMIT", "TOKENIZER_FILES", "load_spiece", "read_folder",
           "backend_tokenizer", "tokenizer_file_contents", "precompiled_charsmap"]
