"""Shared helpers for the parity tests: tiny random transformers models and their minipegx twins.

Tiny configs exercise the hard parts (block_size 4, 2 global tokens, stagger on, lengths that are
not a multiple of the block size). Every helper builds the reference model with transformers +
torch, saves it in a format the Hub uses, and loads it back with minipegx.from_pretrained, so the
loader is on the path of every parity test.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

TINY = dict(vocab_size=103 + 60, d_model=16, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
            decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, num_global_tokens=2,
            block_size=4, max_position_embeddings=128, activation_function="relu", dropout=0.0,
            stagger_local_blocks=True, scale_embedding=True)


def tiny_kwargs(**overrides):
    return {**TINY, **overrides}


def hf_model(seed=0, **overrides):
    """A random PegasusXForConditionalGeneration in eval mode (dropout off)."""
    torch.manual_seed(seed)
    cfg = transformers.PegasusXConfig(**tiny_kwargs(**overrides))
    return transformers.PegasusXForConditionalGeneration(cfg).eval()


def save(model, directory, **save_kwargs):
    model.save_pretrained(directory, **save_kwargs)
    return directory


def pair(tmp_path, seed=0, **overrides):
    """(transformers model, minipegx model) with identical weights, through a safetensors checkpoint."""
    import minipegx.model as mm

    ref = hf_model(seed, **overrides)
    path = save(ref, tmp_path / f"ckpt_{seed}_{abs(hash(tuple(sorted(overrides.items())))) % 10**8}")
    return ref, mm.from_pretrained(path)


def random_batch(rng, vocab_size, batch, length, pad_rows=()):
    """Ids in [5, vocab) (no special tokens) and a mask with the rows in pad_rows right-padded."""
    ids = rng.integers(5, vocab_size, size=(batch, length))
    mask = np.ones((batch, length), dtype=np.int64)
    for r in pad_rows:
        cut = int(rng.integers(1, length)) if length > 1 else 1
        mask[r, cut:] = 0
        ids[r, cut:] = 0
    return ids, mask


def t(x):
    return torch.as_tensor(np.asarray(x))


def max_err(a, b):
    """max |a - b| between a minipegx array and a torch tensor (or arrays)."""
    from minipegx.backend import to_numpy

    b = b.detach().float().numpy() if hasattr(b, "detach") else np.asarray(b)
    return float(np.max(np.abs(to_numpy(a).astype(np.float64) - b.astype(np.float64)))) if b.size else 0.0
