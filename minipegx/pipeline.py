"""Text in, summary out: tokenizer + generate + decode, in the spirit of transformers'
summarization pipeline.

    minipegx.summarize("a long document ...")                  # the bundled demo model
    minipegx.summarize(texts, model="pegasus-x-base", num_beams=8, max_new_tokens=128)
"""

from __future__ import annotations

from .backend import to_numpy
from .errors import InputError
from .model import PegasusX, from_pretrained
from .tokenizer import Tokenizer


def load(model=None, tokenizer=None, backend="numpy", dtype="float32", quantize=None):
    """(model, tokenizer) from a directory, None (the bundled demo model) or ready objects."""
    if not isinstance(model, PegasusX):
        model = from_pretrained(model, backend=backend, dtype=dtype, quantize=quantize)
    if tokenizer is None:
        tokenizer = Tokenizer.from_pretrained(model.path)
    elif not isinstance(tokenizer, Tokenizer):
        tokenizer = Tokenizer.from_pretrained(tokenizer)
    return model, tokenizer


def summarize(texts, model=None, tokenizer=None, batch_size=4, max_input_length=None, backend="numpy",
              dtype="float32", quantize=None, progress=None, **generation_options):
    """Summaries of `texts` (a string gives a string, a list gives a list).

    model: a checkpoint directory, a loaded PegasusX, or None for the bundled demo model.
    max_input_length: tokens kept per input (default: the model's max_position_embeddings; a cut is
    announced by a TruncationWarning, never silent). generation_options: those of `generate`
    (num_beams, max_new_tokens, length_penalty, ...; defaults from generation_config.json).
    progress: a callable(step, max_steps, alive_rows) called after each decoding step."""
    single = isinstance(texts, (str, bytes))
    texts = [texts] if single else list(texts)
    if not texts:
        raise InputError("summarize() got no texts; pass a string or a non-empty list of strings")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
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
