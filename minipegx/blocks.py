"""Block geometry of PEGASUS-X's encoder attention, in one place: how T tokens are laid out in blocks
of K, where a staggered layer's blocks start, and which keys each slot of a block sees.

Phang, Zhao & Liu (2022), §3: the tokens are padded to whole blocks; a token attends the G global
tokens and the tokens of its own block; a staggered layer (every other layer, when
config.stagger_local_blocks) pads K/2 masked positions at both ends first, so its N+1 blocks are shifted
by half a block and each straddles two unstaggered ones. encoder.py computes with this layout, viz.py
draws it, and the cost model counts it; they all ask these functions.

Positions: a token position t in [0, T) sits at padded position t + shift in its layer's layout, and a
key slot j in [0, G+K) of block n is global token j when j < G, else the token at n K + (j - G) - shift.
Global tokens are reported as the negative positions j - G; a staggered layer's leading padding is
negative too, so tell the two apart by the slot (j < G), not by the sign.
Shape legend: T tokens, P padded tokens, N blocks, K block size, G global tokens.
"""

from __future__ import annotations

import numpy as np


def padded_length(T: int, K: int) -> int:
    """P: T tokens padded to a whole number of blocks of K (the padding is masked)."""
    return -(-T // K) * K


def stagger_shift(K: int, staggered: bool) -> int:
    """Positions a layer's blocks are shifted by: K/2 in a staggered layer (pad_local_tokens), else 0."""
    return K // 2 if staggered else 0


def num_blocks(T: int, K: int, staggered: bool) -> int:
    """N: blocks a layer attends over; a staggered layer has one more (its first and last are half empty)."""
    return padded_length(T, K) // K + bool(staggered)


def attended_length(T: int, K: int, staggered: bool) -> int:
    """Positions a layer's local attention runs on: P, or P + K in a staggered layer (K/2 at each end)."""
    return num_blocks(T, K, staggered) * K


def block_of(positions, K: int, staggered: bool):
    """The block index of each token position in a layer's layout: positions [T] (any shape) -> [T] ints."""
    return (np.asarray(positions) + stagger_shift(K, staggered)) // K


def query_positions(blocks, K: int, staggered: bool):
    """Token position of each query slot of the given blocks [N'] -> [N', K] (outside [0, T): padding)."""
    n = np.asarray(blocks)[:, None]                                  # [N', 1]
    return n * K + np.arange(K) - stagger_shift(K, staggered)        # [N', K]


def key_positions(blocks, K: int, G: int, staggered: bool):
    """Which keys each slot of blocks [N'] sees -> [N', G+K]: the G global tokens (slots j < G, as
    -G..-1), then the block's own K token positions (outside [0, T): padding, never attended)."""
    n = np.asarray(blocks)[:, None]                                  # [N', 1]
    j = np.arange(G + K)                                             # [G+K] key slot
    return np.where(j < G, j - G, n * K + (j - G) - stagger_shift(K, staggered))  # [N', G+K]
