"""Training data for `minipegx finetune`: JSON-lines pairs in, padded batches packed by length out.

    pairs = read_pairs("train.jsonl", text_field="text", summary_field="summary")
    examples = tokenize_pairs(tok, pairs, max_input_length=16384, max_target_length=256)
    batches = pack_by_length([len(e.input_ids) for e in examples], batch_tokens=16384)   # [[example index]]
    batch = make_batch(examples, batches[order_for_epoch(seed, epoch, len(batches))[i]])

The corpus runner's conventions (docs/corpus.md): one JSON object per line, the fields named by
--text-field / --summary-field, blank lines ignored, a malformed line an error naming its file and line
number. No id is needed (a training pair is not written back anywhere).

Packing: examples sorted by input length, cut into batches whose padded size (rows x longest input) stays
within batch_tokens, so a batch holds documents of about one length and little padding. The order of the
batches in each epoch is a permutation drawn from (seed, epoch) alone, so the batch of step i is a pure function
of (data, seed, i): what makes a resumed run take the same steps as an uninterrupted one.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np

from ..errors import CorpusError, InputError


@dataclass(frozen=True)
class Example:
    input_ids: list      # the document's ids, </s> last
    labels: list         # the summary's ids, </s> last
    where: str           # "FILE line N", for messages


def read_pairs(path, text_field="text", summary_field="summary", on_malformed="error"):
    """(pairs, malformed): pairs [(text, summary, where)] of a JSON-lines file; malformed ["FILE line N: why"].

    A line that is not UTF-8, not JSON, not an object, or lacks either field as a string is an error naming
    its line (on_malformed="skip": left out and listed)."""
    if not os.path.isfile(path):
        raise CorpusError(f"cannot read {path}: no such file")
    pairs, malformed = [], []
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            where = f"{path} line {number}"
            try:
                pairs.append((*_parse(raw, text_field, summary_field), where))
            except CorpusError as e:
                if on_malformed == "error":
                    raise CorpusError(f"{where}: {e} (pass --skip-malformed to leave such lines out)") from None
                malformed.append(f"{where}: {e}")
    if not pairs:
        raise CorpusError(f"{path} holds no training pairs" +
                          (f" ({len(malformed)} malformed lines skipped)" if malformed else
                           f": expected JSON lines with {text_field!r} and {summary_field!r} fields"))
    return pairs, malformed


def _parse(raw: bytes, text_field: str, summary_field: str):
    try:
        obj = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise CorpusError(f"not valid UTF-8 (bad byte at offset {e.start})") from None
    except json.JSONDecodeError as e:
        raise CorpusError(f"not JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(obj, dict):
        raise CorpusError(f"expected a JSON object, got {type(obj).__name__}")
    out = []
    for name, flag in ((text_field, "--text-field"), (summary_field, "--summary-field")):
        if not isinstance(obj.get(name), str):
            got = (f"no such field; fields: {', '.join(map(repr, obj)) or 'none'}; choose one with {flag}"
                   if name not in obj else f"a {type(obj[name]).__name__}")
            raise CorpusError(f"the {name!r} field must be a string ({got})")
        if not obj[name].strip():
            raise CorpusError(f"the {name!r} field is empty")
        out.append(obj[name])
    return out


def tokenize_pairs(tok, pairs, max_input_length: int, max_target_length: int):
    """(examples, cut_inputs, cut_targets): ids of each pair, each side cut to its limit (</s> kept last)."""
    examples, cut_inputs, cut_targets = [], 0, 0
    eos = tok.eos_token_id
    for text, summary, where in pairs:
        ids, labels = tok.encode(text), tok.encode(summary)
        if len(ids) > max_input_length:
            ids, cut_inputs = ids[:max_input_length - 1] + [eos], cut_inputs + 1
        if len(labels) > max_target_length:
            labels, cut_targets = labels[:max_target_length - 1] + [eos], cut_targets + 1
        examples.append(Example(ids, labels, where))
    return examples, cut_inputs, cut_targets


def pack_by_length(lengths, batch_tokens: int) -> list[list[int]]:
    """Indices grouped into batches of about one length: sorted by length, a batch grows while
    rows x longest <= batch_tokens. A length above batch_tokens is the caller's error (checked before)."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    batches, current, longest = [], [], 0
    for i in order:
        wider = max(longest, lengths[i])
        if current and wider * (len(current) + 1) > batch_tokens:
            batches.append(current)
            current, wider = [], lengths[i]
        current.append(i)
        longest = wider
    if current:
        batches.append(current)
    return batches


def order_for_epoch(seed: int, epoch: int, n_batches: int) -> list[int]:
    """The order of the batches in `epoch`: a permutation that depends on (seed, epoch) only."""
    return np.random.default_rng([seed, epoch]).permutation(n_batches).tolist()


def batch_indices(batches, seed: int, step: int) -> list[int]:
    """The examples of training step `step` (0-based): epoch step // len(batches), in that epoch's order."""
    epoch, i = divmod(step, len(batches))
    return batches[order_for_epoch(seed, epoch, len(batches))[i]]


def make_batch(examples, indices, pad_token_id: int = 0):
    """input_ids, attention_mask [B, T] (right-padded with pad, mask 0) and labels [B, S] (padded with -100)."""
    rows = [examples[i] for i in indices]
    T, S = max(len(e.input_ids) for e in rows), max(len(e.labels) for e in rows)
    input_ids = np.full((len(rows), T), pad_token_id, np.int64)                  # [B, T]
    attention_mask = np.zeros((len(rows), T), np.int64)                          # [B, T]
    labels = np.full((len(rows), S), -100, np.int64)                             # [B, S]
    for r, e in enumerate(rows):
        input_ids[r, :len(e.input_ids)] = e.input_ids
        attention_mask[r, :len(e.input_ids)] = 1
        labels[r, :len(e.labels)] = e.labels
    return input_ids, attention_mask, labels


def check_fits(examples, batch_tokens: int, source: str) -> None:
    """Every example must fit one batch on its own."""
    longest = max(examples, key=lambda e: len(e.input_ids))
    if len(longest.input_ids) > batch_tokens:
        raise InputError(f"--batch-tokens {batch_tokens} is smaller than the longest document of {source} "
                         f"({len(longest.input_ids)} tokens, {longest.where}); raise --batch-tokens or cut the "
                         "documents with --max-input-length")


__all__ = ["Example", "read_pairs", "tokenize_pairs", "pack_by_length", "order_for_epoch", "batch_indices",
           "make_batch", "check_fits"]
