"""The encoder's cost model, in one place: matmul FLOPs and memory of PEGASUS-X's encoder against a
full-attention encoder of the same shape. viz.plot_cost draws it and benchmarks/bench.py divides
measured seconds by it to report a FLOP rate, so both count the same work.

Shape legend: T tokens, P tokens padded to whole blocks, N blocks, K block size, G global tokens,
H heads, M d_model, F FFN width.
"""

from __future__ import annotations

from .blocks import attended_length, padded_length
from .errors import InputError


def encoder_cost(config, length, attention="pegasus_x", batch=1, bytes_per_element=4):
    """Matmul FLOPs and memory of the encoder on `length` tokens (2 FLOPs per multiply-add; layer
    norms, softmax and activations are O(T M) and left out).

    attention="pegasus_x": minipegx's computation exactly -- tokens padded to whole blocks (P), G
      global tokens, staggered layers running on P + K positions (the half blocks at both ends);
    attention="full": a standard encoder of the same shape (M, F, H, layers), every token attending
      every token, no global tokens.
    Returns flops (whole encoder), attention_flops (the part in q k^T and probs v), score_bytes (the
    largest layer's attention probabilities; output_attentions keeps one such per layer) and
    activation_bytes (the largest layer's other intermediates: residual, normed input, q, k, v,
    attention output, FFN hidden), for `batch` sequences of bytes_per_element (4: float32)."""
    if isinstance(length, bool) or not isinstance(length, int) and not hasattr(length, "__index__") or length < 1:
        raise InputError(f"length must be the number of input tokens (a positive integer), got {length!r}")
    T = int(length)
    if attention not in ("pegasus_x", "full"):
        raise InputError(f"attention must be 'pegasus_x' or 'full', got {attention!r}")
    M, F, H = config.d_model, config.encoder_ffn_dim, config.encoder_attention_heads
    K, G = config.block_size, config.num_global_tokens
    flops = attention_flops = score = act = 0
    for layer in range(config.encoder_layers):
        if attention == "full":
            rows, tokens, glob = T, T, 0
            pairs = T * T                                         # every token attends every token
        else:
            rows = attended_length(T, K, config.is_staggered(layer))  # positions the attention runs on
            tokens, glob = padded_length(T, K), G
            pairs = rows * (G + K) + G * (G + rows)               # each block's G+K keys + the global rows
        attn = 2 * 2 * pairs * M                                  # scores and probs @ v, all heads
        proj = 2 * 4 * (rows + glob) * M * M                      # q, k, v, out projections
        ffn = 2 * 2 * (tokens + glob) * M * F                     # fc1, fc2
        flops += proj + attn + ffn
        attention_flops += attn
        score = max(score, H * pairs)
        act = max(act, (tokens + glob) * M + 5 * (rows + glob) * M + (tokens + glob) * F)
    b = batch * bytes_per_element
    return dict(flops=batch * flops, attention_flops=batch * attention_flops, score_bytes=b * score,
                activation_bytes=b * act)
