"""The training tests' batch, one definition for the torch tests (test_training_grads) and the torch-free
stand-in tests (test_training_standin)."""

from __future__ import annotations

import numpy as np


def batch(vocab, B=2, T=13, S=6, seed=0):
    """Inputs of T tokens (row 1 padded after 9: a partial last block of 4 with padding inside), labels with
    -100 (row 1 after step 4, row 0 at step 3: a pad token fed to the decoder in the middle) and a label 0
    (the pad id, which the LM head must still learn)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, vocab, (B, T))                             # [B, T]
    mask = np.ones((B, T), np.int64)                                 # [B, T]
    mask[1, 9:], ids[1, 9:] = 0, 0
    labels = rng.integers(5, vocab, (B, S))                          # [B, S]
    labels[1, 4:] = -100
    labels[0, 3] = -100
    labels[0, 1] = 0
    return ids, mask, labels
