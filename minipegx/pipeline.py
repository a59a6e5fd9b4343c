"""Text in, summary out: tokenizer + generate + decode, in the spirit of transformers'
summarization pipeline.

    minipegx.summarize("a long document ...")                  # the bundled demo model
    minipegx.summarize(texts, model="pegasus-x-base", num_beams=8, max_new_tokens=128)
"""

from __future__ import annotations

import os

from .backend import to_numpy
from .errors import InputError
from .generation import check_options
from .inputs import as_int, short
from .model import PegasusX, from_pretrained
from .tokenizer import Tokenizer

TEXT_TYPES = (str, bytes, bytearray)


def check_load_arguments(model, tokenizer, backend, dtype, quantize):
    """load()'s arguments, by type, before anything is read (the values are checked where they are used:
    from_pretrained, get_backend, resolve_dtype, quantize.check_mode)."""
    if not (model is None or isinstance(model, (str, os.PathLike, PegasusX))):
        raise InputError(f"model must be a checkpoint directory, a loaded PegasusX or None (the bundled demo "
                         f"model), got {short(model)}")
    if not (tokenizer is None or isinstance(tokenizer, (str, os.PathLike, Tokenizer))):
        raise InputError(f"tokenizer must be a directory, a path to spiece.model, a Tokenizer or None (the "
                         f"model's own), got {short(tokenizer)}")
    for name, value in (("backend", backend), ("dtype", dtype)):
        if not isinstance(value, str):
            raise InputError(f"{name} must be a string such as {'numpy' if name == 'backend' else 'float32'!r}, "
                             f"got {short(value)}")
    if not (quantize is None or isinstance(quantize, str)):
        raise InputError(f"quantize must be None, 'int8' or 'nf4', got {short(quantize)}")


def load(model=None, tokenizer=None, backend="numpy", dtype="float32", quantize=None):
    """(model, tokenizer) from a directory, None (the bundled demo model) or ready objects."""
    check_load_arguments(model, tokenizer, backend, dtype, quantize)
    if not isinstance(model, PegasusX):
        model = from_pretrained(model, backend=backend, dtype=dtype, quantize=quantize)
    if tokenizer is None:
        tokenizer = Tokenizer.from_pretrained(model.path)
    elif not isinstance(tokenizer, Tokenizer):
        tokenizer = Tokenizer.from_pretrained(tokenizer)
    return model, tokenizer


def as_texts(texts):
    """(list of texts, whether one text was given): a str (or UTF-8 bytes) or a non-empty list of them."""
    if isinstance(texts, TEXT_TYPES):
        return [texts], True
    if texts is None or not hasattr(texts, "__iter__") or isinstance(texts, dict):
        raise InputError(f"summarize() takes a text (str) or a list of texts, got {short(texts)}")
    texts = list(texts)
    if not texts:
        raise InputError("summarize() got no texts; pass a string or a non-empty list of strings")
    for i, t in enumerate(texts):
        if not isinstance(t, TEXT_TYPES):
            raise InputError(f"text {i} is {short(t)}, not a str; summarize() takes strings (or UTF-8 bytes)")
    return texts, False


def summarize(texts, model=None, tokenizer=None, batch_size=4, max_input_length=None, backend="numpy",
              dtype="float32", quantize=None, progress=None, **generation_options):
    """Summaries of `texts` (a string gives a string, a list gives a list).

    model: a checkpoint directory, a loaded PegasusX, or None for the bundled default (long) demo model.
    max_input_length: tokens kept per input, >= 1 (default None: the model's max_position_embeddings;
    a cut is announced by a TruncationWarning, never silent). generation_options: those of `generate`
    (num_beams, max_new_tokens, length_penalty, ...; defaults from generation_config.json).
    progress: a callable(step, max_steps, alive_rows) called after each decoding step.
    Every argument is checked before the model is loaded."""
    texts, single = as_texts(texts)
    batch_size = as_int("batch_size", batch_size, 1)
    if max_input_length is not None:
        max_input_length = as_int("max_input_length", max_input_length, 1)
    check_options({**generation_options, "progress": progress})
    model, tokenizer = load(model, tokenizer, backend, dtype, quantize)
    limit = max_input_length or model.config.max_position_embeddings
    summaries = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(texts[start:start + batch_size], padding=True, truncation=True, max_length=limit,
                          return_tensors="np")
        ids = model.generate(batch["input_ids"], batch["attention_mask"], progress=progress,
                             **generation_options)
        summaries += tokenizer.batch_decode(to_numpy(ids).tolist(), skip_special_tokens=True)
    return summaries[0] if single and len(summaries) == 1 else summaries
