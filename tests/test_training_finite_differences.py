"""Each backward function on its own agrees with centred finite differences of its forward, in float64
(CS231n's gradient check), over shapes that hypothesis chooses: no torch here.

The check: with a fixed random upstream gradient dy, L(inputs) = sum(forward(inputs) * dy). For every input
and parameter a, and a random direction u, the centred difference (L(a + h u) - L(a - h u)) / 2h must equal
<dL/da, u> from the backward. Its error: truncation h^2/6 |L'''| ~ 1e-12 at h = 1e-6 and O(1) values, and
rounding eps |L| / h ~ 1e-10 |L| (eps = 2.2e-16). The bound FD_RTOL * ||dL/da|| + FD_ATOL * (1 + |L|) sits
two orders above both; a wrong gradient misses it by orders of magnitude (<g, u> has spread ||g||).
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minipegx.config import ACTIVATIONS, PegasusXConfig
from minipegx.decoder import (attention_backward, attention_forward, causal_mask, decoder_layer_backward,
                              decoder_layer_forward)
from minipegx.encoder import (encoder_layer_backward, encoder_layer_forward, global_local_attention_backward,
                              global_local_attention_forward, stagger, stagger_backward, unstagger_backward)
from minipegx.layers import (activation_backward, activation_forward, attend_backward, attend_forward,
                             embed_tokens_backward, embed_tokens_forward, erf64, ffn_backward, ffn_forward,
                             layer_norm_backward, layer_norm_forward, linear_backward, linear_forward,
                             softmax, softmax_backward)
from minipegx.training.loss import cross_entropy_backward, cross_entropy_forward
from minipegx.tree import flatten_params

H_STEP = 1e-6
FD_RTOL = 1e-6       # see the module docstring
FD_ATOL = 1e-8
CHECK = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
seeds = st.integers(0, 2**32 - 1)


def check_gradients(loss, arrays, grads, rng):
    """For each name in arrays (float64 arrays that loss() reads, perturbed in place and restored), the
    centred difference along a random direction equals <grads[name], u>."""
    base = abs(loss())
    for name, a in arrays.items():
        u = rng.standard_normal(a.shape)
        keep = a.copy()
        a += H_STEP * u
        up = loss()
        a[...] = keep - H_STEP * u
        down = loss()
        a[...] = keep
        numeric, analytic = (up - down) / (2 * H_STEP), float((grads[name] * u).sum())
        bound = FD_RTOL * np.linalg.norm(grads[name]) + FD_ATOL * (1 + base)
        assert abs(numeric - analytic) <= bound, f"{name}: numeric {numeric:.12g}, backward {analytic:.12g}"


def upstream(rng, *outputs):
    """Random upstream gradients and L = sum(output * dy) over the outputs."""
    dys = [rng.standard_normal(y.shape) for y in outputs]
    return dys, lambda *ys: float(sum((y * dy).sum() for y, dy in zip(ys, dys)))


def norm_params(rng, M):
    return {"weight": 1 + 0.1 * rng.standard_normal(M), "bias": 0.1 * rng.standard_normal(M)}


def proj_params(rng, M):
    return {name: {"weight": rng.standard_normal((M, M)) / math.sqrt(M)}
            for name in ("q_proj", "k_proj", "v_proj", "out_proj")}


def ffn_params(rng, M, F):
    return {"fc1": {"weight": rng.standard_normal((F, M)) / math.sqrt(M), "bias": 0.1 * rng.standard_normal(F)},
            "fc2": {"weight": rng.standard_normal((M, F)) / math.sqrt(F), "bias": 0.1 * rng.standard_normal(M)}}


def padding_mask(rng, B, T, pad=True):
    """Additive [B, T]: 0, or finfo.min on a random tail of each row after its first token (pad=False: 0).

    Without global tokens a whole block of padding would give its queries nothing but masked keys: their
    softmax is uniform whatever the scores (finfo.min swamps them), so the finite difference sees no
    gradient where the chain rule, torch's included, gives one. Those rows are padding, whose outputs
    nothing reads, so the model's gradients are unaffected; the tests below pad only when G > 0."""
    keep = np.arange(T)[None, :] < rng.integers(1 if pad else T, T + 1, size=(B, 1))
    return np.where(keep, 0.0, np.finfo(np.float64).min)


@CHECK
@given(seed=seeds, rows=st.integers(1, 6), I=st.integers(1, 5), O=st.integers(1, 5), bias=st.booleans())
def test_linear_backward(seed, rows, I, O, bias):
    rng = np.random.default_rng(seed)
    a = {"x": rng.standard_normal((2, rows, I)), "weight": rng.standard_normal((O, I)), "bias": rng.standard_normal(O)}
    fwd = lambda: linear_forward(a["x"], a["weight"], a["bias"] if bias else None)  # noqa: E731
    y, cache = fwd()
    (dy,), L = upstream(rng, y)
    dx, grads = linear_backward(dy, cache, bias=bias)
    if not bias:
        a.pop("bias")
    check_gradients(lambda: L(fwd()[0]), a, {"x": dx, **grads}, rng)


@CHECK
@given(seed=seeds, rows=st.integers(1, 5), M=st.integers(2, 8))
def test_layer_norm_backward(seed, rows, M):
    rng = np.random.default_rng(seed)
    x, p = 3 * rng.standard_normal((rows, M)) + 1, norm_params(rng, M)
    y, cache = layer_norm_forward(x, p)
    (dy,), L = upstream(rng, y)
    dx, grads = layer_norm_backward(dy, cache)
    check_gradients(lambda: L(layer_norm_forward(x, p)[0]), {"x": x, **p}, {"x": dx, **grads}, rng)


@CHECK
@given(seed=seeds, shape=st.tuples(st.integers(1, 4), st.integers(1, 6)), act=st.sampled_from(ACTIVATIONS))
def test_activation_backward(seed, shape, act):
    rng = np.random.default_rng(seed)
    h = 2 * rng.standard_normal(shape)
    y, cache = activation_forward(h, act)
    (dy,), L = upstream(rng, y)
    check_gradients(lambda: L(activation_forward(h, act)[0]), {"h": h}, {"h": activation_backward(dy, cache, act)}, rng)


@CHECK
@given(seed=seeds, M=st.integers(1, 5), F=st.integers(1, 6), act=st.sampled_from(ACTIVATIONS))
def test_ffn_backward(seed, M, F, act):
    rng = np.random.default_rng(seed)
    x, p = rng.standard_normal((2, 3, M)), ffn_params(rng, M, F)
    y, cache = ffn_forward(x, p, act)
    (dy,), L = upstream(rng, y)
    dx, grads = ffn_backward(dy, cache)
    check_gradients(lambda: L(ffn_forward(x, p, act)[0]), {"x": x, **flatten_params(p)},
                    {"x": dx, **flatten_params(grads)}, rng)


@CHECK
@given(seed=seeds, rows=st.integers(1, 4), C=st.integers(1, 7))
def test_softmax_backward(seed, rows, C):
    rng = np.random.default_rng(seed)
    s = 3 * rng.standard_normal((rows, C))
    probs = softmax(s.copy())                        # softmax works in place
    (dp,), L = upstream(rng, probs)
    check_gradients(lambda: L(softmax(s.copy())), {"s": s}, {"s": softmax_backward(dp.copy(), probs)}, rng)


@CHECK
@given(seed=seeds, Q=st.integers(1, 5), C=st.integers(1, 6), D=st.integers(1, 4), scale=st.booleans())
def test_attend_backward_with_a_mask(seed, Q, C, D, scale):
    rng = np.random.default_rng(seed)
    a = {"q": rng.standard_normal((2, Q, D)), "k": rng.standard_normal((2, C, D)), "v": rng.standard_normal((2, C, D))}
    mask = padding_mask(rng, 2, C)[:, None, :]       # [2, 1, C]
    s = D ** -0.5 if scale else 1.0
    out, cache = attend_forward(a["q"], a["k"], a["v"], mask, s)
    (dout,), L = upstream(rng, out)
    dq, dk, dv = attend_backward(dout, cache)
    check_gradients(lambda: L(attend_forward(a["q"], a["k"], a["v"], mask, s)[0]), a, {"q": dq, "k": dk, "v": dv}, rng)


@CHECK
@given(seed=seeds, V=st.integers(2, 9), M=st.integers(1, 4), pad=st.booleans())
def test_embed_tokens_backward_accumulates_repeated_ids_and_skips_the_padding_row(seed, V, M, pad):
    rng = np.random.default_rng(seed)
    ids, table = rng.integers(0, V, (2, 7)), rng.standard_normal((V, M))   # 7 ids from V <= 9: repeats
    y, cache = embed_tokens_forward(ids, table, 1.7)
    (dy,), L = upstream(rng, y)
    dtable = embed_tokens_backward(dy, cache, 0 if pad else None)
    if pad:   # torch.nn.Embedding(padding_idx=0): the padding row gets no gradient
        assert not dtable[0].any()
        dtable = dtable.copy()
        dtable[0] = embed_tokens_backward(dy, cache)[0]
    check_gradients(lambda: L(embed_tokens_forward(ids, table, 1.7)[0]), {"table": table}, {"table": dtable}, rng)


@CHECK
@given(seed=seeds, B=st.integers(1, 2), H=st.integers(1, 2), D=st.integers(1, 3), K=st.sampled_from([2, 4]),
       N=st.integers(1, 3), G=st.integers(0, 3), staggered=st.booleans())
def test_global_local_attention_backward(seed, B, H, D, K, N, G, staggered):
    rng = np.random.default_rng(seed)
    M = H * D
    a = {"x": rng.standard_normal((B, N * K, M)), "g": rng.standard_normal((B, G, M))}
    p = proj_params(rng, M)
    mask = padding_mask(rng, B, N * K, pad=G > 0)
    if staggered:   # the stagger's layout: K/2 masked positions at both ends, one block more
        a["x"], mask = stagger(a["x"], mask, K)
    fwd = lambda: global_local_attention_forward(a["x"], a["g"], mask, p, H, K)[0]  # noqa: E731
    (x_out, g_out), cache = global_local_attention_forward(a["x"], a["g"], mask, p, H, K)
    (dx_out, dg_out), L = upstream(rng, x_out, g_out)
    dx, dg, grads = global_local_attention_backward(dx_out, dg_out, cache)
    check_gradients(lambda: L(*fwd()), {**a, **flatten_params(p)}, {"x": dx, "g": dg, **flatten_params(grads)}, rng)


@CHECK
@given(seed=seeds, P=st.integers(1, 9), K=st.sampled_from([2, 4, 6]))
def test_stagger_and_unstagger_backward(seed, P, K):
    rng = np.random.default_rng(seed)
    x, mask = rng.standard_normal((2, P, 3)), np.zeros((2, P))
    padded = stagger(x, mask, K)[0]                                     # [2, P+K, 3]
    (dy,), L = upstream(rng, padded)
    check_gradients(lambda: L(stagger(x, mask, K)[0]), {"x": x}, {"x": stagger_backward(dy, K)}, rng)
    h = rng.standard_normal((2, P + K, 3))
    (dy,), L = upstream(rng, h[:, K // 2:-(K // 2)])                    # the un-padding after the attention
    check_gradients(lambda: L(h[:, K // 2:-(K // 2)]), {"h": h}, {"h": unstagger_backward(dy, K)}, rng)


def tiny_config(M, H, K, F, act, G=2):
    return PegasusXConfig(vocab_size=11, d_model=M, encoder_attention_heads=H, decoder_attention_heads=H,
                          encoder_ffn_dim=F, decoder_ffn_dim=F, block_size=K, num_global_tokens=G,
                          activation_function=act, pad_token_id=0, decoder_start_token_id=0, eos_token_id=1,
                          forced_eos_token_id=1)


@CHECK
@given(seed=seeds, H=st.integers(1, 2), K=st.sampled_from([2, 4]), N=st.integers(1, 3), G=st.integers(0, 2),
       staggered=st.booleans(), act=st.sampled_from(["relu", "gelu", "silu"]))
def test_encoder_layer_backward_with_and_without_the_stagger(seed, H, K, N, G, staggered, act):
    rng = np.random.default_rng(seed)
    M, F = 4, 5
    cfg = tiny_config(M, H, K, F, act, G)
    a = {"x": rng.standard_normal((2, N * K, M)), "g": rng.standard_normal((2, G, M))}
    p = {"self_attn": proj_params(rng, M), "self_attn_layer_norm": norm_params(rng, M),
         "global_self_attn_layer_norm": norm_params(rng, M), "final_layer_norm": norm_params(rng, M),
         **ffn_params(rng, M, F)}
    mask = padding_mask(rng, 2, N * K, pad=G > 0)
    fwd = lambda: encoder_layer_forward(a["x"], a["g"], mask, p, cfg, staggered)[0]  # noqa: E731
    (x, g), cache = encoder_layer_forward(a["x"], a["g"], mask, p, cfg, staggered)
    (dx_out, dg_out), L = upstream(rng, x, g)
    dx, dg, grads = encoder_layer_backward(dx_out, dg_out, cache)
    check_gradients(lambda: L(*fwd()), {**a, **flatten_params(p)}, {"x": dx, "g": dg, **flatten_params(grads)}, rng)


@CHECK
@given(seed=seeds, H=st.integers(1, 2), S=st.integers(1, 5), T=st.integers(1, 6), cross=st.booleans())
def test_decoder_attention_backward_causal_self_and_cross(seed, H, S, T, cross):
    rng = np.random.default_rng(seed)
    M = 2 * H
    a = {"x": rng.standard_normal((2, S, M))}
    if cross:
        a["enc"] = rng.standard_normal((2, T, M))
        mask = padding_mask(rng, 2, T)[:, None, None, :]                 # [2, 1, 1, T]
    else:
        mask = causal_mask(S, 0, np.float64, np)                        # [1, 1, S, S]
    p = proj_params(rng, M)
    fwd = lambda: attention_forward(a["x"], a["enc"] if cross else a["x"], p, H, mask)[0]  # noqa: E731
    y, cache = attention_forward(a["x"], a["enc"] if cross else a["x"], p, H, mask)
    (dy,), L = upstream(rng, y)
    dx, dkv, grads = attention_backward(dy, cache)
    if cross:
        want = {"x": dx, "enc": dkv}
    else:
        want = {"x": dx + dkv}                                           # x gave the queries and the keys
    check_gradients(lambda: L(fwd()), {**a, **flatten_params(p)}, {**want, **flatten_params(grads)}, rng)


@CHECK
@given(seed=seeds, S=st.integers(1, 4), T=st.integers(1, 5), act=st.sampled_from(["relu", "gelu_new", "tanh"]))
def test_decoder_layer_backward(seed, S, T, act):
    rng = np.random.default_rng(seed)
    M, H, F = 4, 2, 3
    cfg = tiny_config(M, H, 4, F, act)
    a = {"x": rng.standard_normal((2, S, M)), "enc": rng.standard_normal((2, T, M))}
    p = {"self_attn": proj_params(rng, M), "encoder_attn": proj_params(rng, M),
         "self_attn_layer_norm": norm_params(rng, M), "encoder_attn_layer_norm": norm_params(rng, M),
         "final_layer_norm": norm_params(rng, M), **ffn_params(rng, M, F)}
    self_mask = causal_mask(S, 0, np.float64, np)
    cross_mask = padding_mask(rng, 2, T)[:, None, None, :]
    fwd = lambda: decoder_layer_forward(a["x"], a["enc"], p, cfg, self_mask, cross_mask)[0]  # noqa: E731
    y, cache = decoder_layer_forward(a["x"], a["enc"], p, cfg, self_mask, cross_mask)
    (dy,), L = upstream(rng, y)
    dx, denc, grads = decoder_layer_backward(dy, cache)
    check_gradients(lambda: L(fwd()), {**a, **flatten_params(p)}, {"x": dx, "enc": denc, **flatten_params(grads)}, rng)


@CHECK
@given(seed=seeds, B=st.integers(1, 3), S=st.integers(1, 4), V=st.integers(2, 7),
       smoothing=st.sampled_from([0.0, 0.1, 0.5]))
def test_cross_entropy_backward_with_ignored_labels_and_smoothing(seed, B, S, V, smoothing):
    rng = np.random.default_rng(seed)
    logits = 3 * rng.standard_normal((B, S, V))
    labels = rng.integers(0, V, (B, S))
    labels[rng.random((B, S)) < 0.3] = -100
    labels[0, 0] = 0                                  # at least one label counts
    loss, cache = cross_entropy_forward(logits, labels, smoothing)
    L = lambda: float(cross_entropy_forward(logits, labels, smoothing)[0])  # noqa: E731
    check_gradients(L, {"logits": logits}, {"logits": cross_entropy_backward(cache)}, rng)


@settings(max_examples=200, deadline=None)
@given(x=st.floats(-40, 40))
def test_erf64_is_math_erf_to_a_few_ulp(x):
    assert abs(float(erf64(np.array([x]))[0]) - math.erf(x)) <= 8 * np.finfo(np.float64).eps * max(abs(math.erf(x)), 1e-300) + 1e-300
