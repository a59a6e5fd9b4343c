"""minipegx.viz: the attention pattern, densified probabilities, information flow, cost model, plots.

Tiny random minipegx models (no torch needed): block_size 4, 2 global tokens, stagger on and off,
lengths that are not a multiple of the block size, and a batch row with padding.
"""

from __future__ import annotations

import importlib
import io
import sys

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")  # headless: the plots must run without a display

from minipegx import viz  # noqa: E402
from minipegx.checkpoint import expected_shapes, unflatten_params  # noqa: E402
from minipegx.config import PegasusXConfig  # noqa: E402
from minipegx.errors import BackendError, InputError  # noqa: E402
from minipegx.model import PegasusX  # noqa: E402
from minipegx.tolerances import TINY_FP32  # noqa: E402

TINY = dict(vocab_size=163, d_model=16, encoder_layers=3, decoder_layers=2, encoder_attention_heads=2,
            decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, num_global_tokens=2,
            block_size=4, max_position_embeddings=128, activation_function="relu")
# Probabilities are float32 softmaxes of O(1) scores: 1e-5 is a few ulps of a probability.
TOL = TINY_FP32.atol  # minipegx.tolerances


def tiny_model(seed=0, **overrides):
    """A random PEGASUS-X with large q/k weights, so attention is peaked rather than uniform."""
    cfg = PegasusXConfig(**{**TINY, **overrides})
    rng = np.random.default_rng(seed)
    flat = {}
    for name, shape in expected_shapes(cfg).items():
        if name.endswith("norm.weight"):
            flat[name] = np.ones(shape, np.float32)
        else:
            std = 0.6 if ("q_proj" in name or "k_proj" in name) else 0.2
            flat[name] = rng.normal(0, std, shape).astype(np.float32)
    return PegasusX(cfg, unflatten_params(flat))


def run(model, T, pad_row=True, seed=1):
    """Forward with attentions and a trace: batch of 2, row 1 right-padded when pad_row."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, model.config.vocab_size, size=(2, T))
    mask = np.ones((2, T), dtype=np.int64)
    if pad_row and T > 1:
        mask[1, T - max(1, T // 3):] = 0
    trace = {}
    out = model(input_ids=ids, attention_mask=mask, decoder_input_ids=ids[:, :3], output_attentions=True,
                trace=trace)
    return out, mask, trace


def brute_force_probs(model, trace, layer, b, T, mask_row):
    """Attention recomputed densely: every query against every key of [globals, tokens], with the
    softmax restricted to attention_pattern -- no blocks, no padding, no stagger arithmetic."""
    cfg = model.config
    p = model.params["model"]["encoder"]["layers"][layer]["self_attn"]
    h = trace[f"model.encoder.layers.{layer}.self_attn_layer_norm"][b, :T]          # [T, M]
    hg = trace[f"model.encoder.layers.{layer}.global_self_attn_layer_norm"][b]      # [G, M]
    x = np.concatenate([hg, h]).astype(np.float64)                                  # [G+T, M]
    H = cfg.encoder_attention_heads
    D = cfg.d_model // H
    q = (x @ p["q_proj"]["weight"].T).reshape(-1, H, D).transpose(1, 0, 2) * D ** -0.5  # [H, G+T, D]
    k = (x @ p["k_proj"]["weight"].T).reshape(-1, H, D).transpose(1, 0, 2)
    s = q @ k.transpose(0, 2, 1)                                                    # [H, G+T, G+T]
    allowed = viz.attention_pattern(cfg, T, layer, mask_row)
    s = np.where(allowed, s, -np.inf)
    e = np.exp(s - s.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


# ================================================================================= attention_pattern
def grid(text):
    return np.array([[c == "#" for c in row.split()[0]] for row in text.strip().splitlines()])


def test_attention_pattern_small_cases_by_hand():
    cfg = PegasusXConfig(**{**TINY, "num_global_tokens": 1})  # K = 4, G = 1, T = 8
    # Layer 0: the global token (index 0) sees all and is seen by all; blocks {0..3} and {4..7}.
    local = grid("""
        #########
        #####....
        #####....
        #####....
        #####....
        #....####
        #....####
        #....####
        #....####""")
    # Layer 1 is staggered: blocks shifted by K/2 = 2: {0,1}, {2..5}, {6,7}.
    staggered = grid("""
        #########
        ###......
        ###......
        #..####..
        #..####..
        #..####..
        #..####..
        #......##
        #......##""")
    assert (viz.attention_pattern(cfg, 8, 0) == local).all()
    assert (viz.attention_pattern(cfg, 8, 1) == staggered).all()
    assert (viz.attention_pattern(cfg, 8, 2) == local).all()
    assert (viz.attention_pattern(cfg, 8, None) == (local | staggered)).all()
    assert (viz.attention_pattern(cfg, 8, -2) == staggered).all()
    assert (viz.attention_pattern(cfg.replace(stagger_local_blocks=False), 8, 1) == local).all()
    # Token 7 is padding: nobody attends it; its own row is still computed (and later ignored).
    masked = viz.attention_pattern(cfg, 8, 0, attention_mask=[1] * 7 + [0])
    expected = local.copy()
    expected[:, 8] = False
    assert (masked == expected).all()
    # T = 6, not a multiple of K: the last block is cut at the end of the input.
    assert (viz.attention_pattern(cfg, 6, 0) == local[:7, :7]).all()
    assert (viz.attention_pattern(cfg, 6, 1) == staggered[:7, :7]).all()


def test_attention_pattern_rejects_bad_arguments():
    cfg = PegasusXConfig(**TINY)
    with pytest.raises(InputError, match="layer"):
        viz.attention_pattern(cfg, 8, 3)
    with pytest.raises(InputError, match="length"):
        viz.attention_pattern(cfg, 0)
    with pytest.raises(InputError, match="attention_mask"):
        viz.attention_pattern(cfg, 8, 0, attention_mask=np.ones(7))


# ================================================================================= densify
@pytest.mark.parametrize("stagger", [True, False])
@pytest.mark.parametrize("T", [13, 8, 3])
def test_densify_is_the_dense_attention_of_the_pattern(stagger, T):
    model = tiny_model(stagger_local_blocks=stagger)
    cfg = model.config
    out, mask, trace = run(model, T)
    G = cfg.num_global_tokens
    for layer in range(cfg.encoder_layers):
        for b in range(2):
            dense = viz.densify(out.encoder_attentions[layer], cfg, layer, T, batch_index=b)
            assert dense.shape == (cfg.encoder_attention_heads, G + T, G + T)
            # Every row (real queries, padded ones too: the model computes them) is a distribution.
            np.testing.assert_allclose(dense.sum(axis=-1), 1.0, atol=TOL)
            # Nonzero only where the pattern allows; the padding keys have exactly 0.
            allowed = viz.attention_pattern(cfg, T, layer, mask[b])
            assert (dense[:, ~allowed] == 0).all()
            # And it is the dense softmax over the allowed keys, computed without any blocking.
            np.testing.assert_allclose(dense, brute_force_probs(model, trace, layer, b, T, mask[b]), atol=TOL)


def test_densify_puts_blocked_probabilities_at_the_right_places():
    model = tiny_model()
    cfg = model.config
    out, _, _ = run(model, 13)
    G, h = cfg.num_global_tokens, 1
    loc0, glo0 = out.encoder_attentions[0]["local"][0, h], out.encoder_attentions[0]["global"][0, h]
    loc1, glo1 = out.encoder_attentions[1]["local"][0, h], out.encoder_attentions[1]["global"][0, h]
    d0 = viz.densify(out.encoder_attentions[0], cfg, 0, 13)[h]
    d1 = viz.densify(out.encoder_attentions[1], cfg, 1, 13)[h]
    # Layer 0: token 5 is row 1 of block 1; token 6 is key slot G + 2 of that block.
    assert d0[G + 5, G + 6] == loc0[1, 1, G + 2]
    assert d0[G + 5, 1] == loc0[1, 1, 1]                          # token 5 -> global token 1
    assert d0[G + 12, G + 12] == loc0[3, 0, G + 0]                # the last token, alone in block 3
    assert d0[0, G + 9] == glo0[0, G + 9]                         # global 0 -> token 9
    # Layer 1 is staggered: padded position = token + K/2, so token 5 is row 3 of block 1 and
    # token 4 is key slot G + 2; token 0 is row 2 of block 0.
    assert d1[G + 5, G + 4] == loc1[1, 3, G + 2]
    assert d1[G + 0, G + 1] == loc1[0, 2, G + 3]
    assert d1[G + 12, G + 12] == loc1[3, 2, G + 2]
    assert d1[1, G + 5] == glo1[1, G + 5 + 2]                     # the global rows are shifted too
    assert d1[1, 0] == glo1[1, 0]                                 # global 1 -> global 0
    assert loc1.shape[0] == 5 and loc0.shape[0] == 4              # N + 1 blocks when staggered


def test_densify_checks_layer_and_length_against_the_shapes():
    model = tiny_model()
    out, _, _ = run(model, 13)
    with pytest.raises(InputError, match="staggered"):
        viz.densify(out.encoder_attentions[1], model.config, 0, 13)   # wrong layer: stagger differs
    with pytest.raises(InputError, match="length"):
        viz.densify(out.encoder_attentions[0], model.config, 0, 17)
    with pytest.raises(InputError, match="dict"):
        viz.densify(out.encoder_attentions[0]["local"], model.config, 0, 13)


def test_densify_accepts_torch_tensors():
    torch = pytest.importorskip("torch")
    model = tiny_model()
    out, _, _ = run(model, 7)
    att = {k: torch.from_numpy(np.asarray(v)) for k, v in out.encoder_attentions[1].items()}
    np.testing.assert_array_equal(viz.densify(att, model.config, 1, 7),
                                  viz.densify(out.encoder_attentions[1], model.config, 1, 7))


# ================================================================================= influence
def test_influence_hops_by_hand():
    cfg = PegasusXConfig(**{**TINY, "encoder_layers": 8})         # K = 4
    # No globals, no stagger: only the own block, in one layer; other blocks never.
    hops = viz.influence_hops(cfg, 8, use_global=False, stagger=False)
    block = np.arange(8) // 4
    expected = np.where(block[:, None] == block[None, :], 1, -1)
    np.fill_diagonal(expected, 0)
    assert (hops == expected).all()
    # No globals, staggered: every layer pushes the reach K/2 further (a block, then half blocks).
    hops = viz.influence_hops(cfg, 16, use_global=False)
    assert hops[:, 0].tolist() == [0, 1, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7]
    assert hops[::-1, 15].tolist() == hops[:, 0].tolist()         # symmetric for T a multiple of K
    assert viz.influence_hops(cfg, 16, use_global=False, num_layers=3)[15, 0] == -1
    # With globals: token -> global (layer 1) -> token (layer 2), so every pair within 2 layers.
    hops = viz.influence_hops(cfg, 16)
    expected = np.where(np.arange(16)[:, None] // 4 == np.arange(16)[None, :] // 4, 1, 2)
    np.fill_diagonal(expected, 0)
    assert (hops == expected).all()
    # ... but not in a one-layer model: the global token's news arrives a layer too late.
    one = viz.influence_hops(cfg.replace(encoder_layers=1), 16)
    assert one[15, 0] == -1 and one[1, 0] == 1


@pytest.mark.parametrize("use_global", [True, False])
@pytest.mark.parametrize("stagger", [True, False])
def test_influence_hops_equals_reachability_through_the_patterns(use_global, stagger):
    cfg = PegasusXConfig(**{**TINY, "encoder_layers": 5, "stagger_local_blocks": stagger})
    T, G = 13, cfg.num_global_tokens
    keep = slice(None) if use_global else slice(G, None)
    reach = np.eye(G + T, dtype=bool)[keep, G:]                   # [nodes, source tokens]
    hops = np.where(np.eye(T, dtype=bool), 0, -1)
    for layer in range(cfg.encoder_layers):
        pattern = viz.attention_pattern(cfg, T, layer)[keep, keep]  # node i reads node k's layer input
        reach = (pattern.astype(int) @ reach.astype(int)) > 0
        tokens = reach[-T:]
        hops[tokens & (hops < 0)] = layer + 1
    assert (viz.influence_hops(cfg, T, use_global=use_global) == hops).all()


# ================================================================================= cost
def test_encoder_cost_is_linear_for_pegasus_x_and_quadratic_for_full_attention():
    cfg = PegasusXConfig(d_model=768, encoder_layers=12, encoder_attention_heads=12, encoder_ffn_dim=3072,
                         block_size=512, num_global_tokens=128)
    K = cfg.block_size
    px = [viz.encoder_cost(cfg, n * K) for n in (4, 8, 12)]
    full = [viz.encoder_cost(cfg, n * K, attention="full") for n in (4, 8, 12)]
    for key in ("flops", "attention_flops", "score_bytes", "activation_bytes"):
        assert px[0][key] + px[2][key] == 2 * px[1][key]          # second difference 0: linear
    assert full[0]["flops"] + full[2]["flops"] > 2 * full[1]["flops"]  # convex: quadratic term
    assert full[1]["attention_flops"] == 4 * full[0]["attention_flops"]
    assert full[1]["score_bytes"] == 4 * full[0]["score_bytes"]
    T = 16384
    assert viz.encoder_cost(cfg, T, "full")["attention_flops"] == 12 * 4 * T * T * 768
    assert viz.encoder_cost(cfg, T)["flops"] < viz.encoder_cost(cfg, T, "full")["flops"] / 3
    # Lengths not a multiple of K cost as much as their padded length.
    assert viz.encoder_cost(cfg, 1000) == viz.encoder_cost(cfg, 1024)
    assert viz.encoder_cost(cfg, 1000, batch=3)["flops"] == 3 * viz.encoder_cost(cfg, 1000)["flops"]


def test_encoder_cost_score_bytes_match_the_real_probabilities():
    model = tiny_model()
    for T in (13, 5):
        out, _, _ = run(model, T)
        real = max((a["local"][0].size + a["global"][0].size) * 4 for a in out.encoder_attentions)
        assert viz.encoder_cost(model.config, T)["score_bytes"] == real


# ================================================================================= plots
def png(fig):
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plots_run_headless_and_return_figures():
    from matplotlib.figure import Figure

    model = tiny_model()
    cfg = model.config
    out, mask, _ = run(model, 13)
    figs = [
        viz.plot_attention_pattern(cfg, 13),
        viz.plot_attention_pattern(cfg, 13, layer=1, attention_mask=mask[1]),
        viz.plot_attention_pattern(cfg, 5000, max_pixels=100),
        viz.plot_attention(out, cfg, 1),
        viz.plot_attention(out, cfg, 0, head=1, region=(2, 9), tokens=[f"t{i}" for i in range(13)]),
        viz.plot_attention(out.encoder_attentions[2], cfg, 2, length=13, max_pixels=4, pool="mean", log=True),
        viz.plot_cross_attention(out, [f"s{i}" for i in range(13)], ["<pad>", "a", "b"]),
        viz.plot_cross_attention(out.cross_attentions, list("abcdefghijklm"), list("xyz"), head=0, top_k_sources=4),
        viz.plot_cross_attention(out.cross_attentions[0][0], list("abcdefghijklm"), list("xyz"), max_sources=5),
        viz.plot_influence(cfg, 40),
        viz.plot_influence(cfg, 300, use_global=False, max_pixels=50),
        viz.plot_cost(cfg, [64, 256, 1024]),
        viz.plot_cost(cfg, [64, 256, 1024], measured={64: 0.01, 256: 0.03}),
    ]
    for fig in figs:
        assert isinstance(fig, Figure) and png(fig)
    # ax=: draw into a figure of one's own.
    fig = Figure()
    axes = fig.subplots(1, 2)
    assert viz.plot_attention_pattern(cfg, 13, layer=0, ax=axes[0]) is fig
    assert viz.plot_influence(cfg, 13, ax=axes[1]) is fig


def test_plot_attention_pools_the_dense_picture():
    model = tiny_model()
    cfg = model.config
    out, _, _ = run(model, 13)
    dense = viz.densify(out.encoder_attentions[1], cfg, 1, 13).mean(axis=0)   # [15, 15]
    img = viz.plot_attention(out, cfg, 1, max_pixels=5).axes[0].images[0].get_array().filled(0)  # 3x3 tiles
    np.testing.assert_allclose(img, dense.reshape(5, 3, 5, 3).max(axis=(1, 3)), atol=TOL)
    img = viz.plot_attention(out, cfg, 1, max_pixels=4, pool="mean").axes[0].images[0].get_array().filled(0)  # 4x4
    sums = np.pad(dense, ((0, 1), (0, 1))).reshape(4, 4, 4, 4).sum(axis=(1, 3))
    sizes = np.array([4, 4, 4, 3])                                # the last tile is short
    np.testing.assert_allclose(img, sums / np.outer(sizes, sizes), atol=TOL)
    # A region: only tokens 4..9 (plus the globals): the corresponding sub-matrix, unpooled.
    img = viz.plot_attention(out, cfg, 1, region=(4, 10)).axes[0].images[0].get_array().filled(0)
    idx = np.r_[0:2, 6:12]
    np.testing.assert_allclose(img, dense[np.ix_(idx, idx)], atol=TOL)
    # The pooled pattern is the OR over tiles of the exact one.
    cat = viz.plot_attention_pattern(cfg, 13, layer=1, max_pixels=5).axes[0].images[0].get_array()
    exact = viz.attention_pattern(cfg, 13, 1)
    pooled = exact.reshape(5, 3, 5, 3).any(axis=(1, 3))
    assert ((np.asarray(cat) > 0) == pooled).all()


def test_plot_cross_attention_checks_its_labels():
    model = tiny_model()
    out, _, _ = run(model, 13)
    with pytest.raises(InputError, match="source tokens"):
        viz.plot_cross_attention(out, list("abc"), list("xyz"))


def test_plots_need_matplotlib_but_the_computations_do_not(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    fresh = importlib.reload(viz)
    try:
        cfg = PegasusXConfig(**TINY)
        assert fresh.attention_pattern(cfg, 8).shape == (10, 10)
        assert fresh.encoder_cost(cfg, 8)["flops"] > 0
        for plot in (lambda: fresh.plot_attention_pattern(cfg, 8), lambda: fresh.plot_influence(cfg, 8),
                     lambda: fresh.plot_cost(cfg, [8, 16]), lambda: fresh.plot_attention({}, cfg, 0),
                     lambda: fresh.plot_cross_attention(np.ones((1, 1)), ["a"], ["b"])):
            with pytest.raises(BackendError, match=r"pip install 'minipegx\[viz\]'"):
                plot()
    finally:
        monkeypatch.undo()
        importlib.reload(viz)


# ================================================================================= bertviz
def test_to_bertviz_shapes_and_limit():
    model = tiny_model()
    cfg = model.config
    out, _, _ = run(model, 13)
    H, G, L = 2, cfg.num_global_tokens, cfg.encoder_layers
    enc, dec, cross = viz.to_bertviz(out, cfg, [f"t{i}" for i in range(13)])
    assert len(enc) == L and all(a.shape == (1, H, G + 13, G + 13) for a in enc)
    assert len(dec) == cfg.decoder_layers and all(a.shape == (1, H, 3, 3) for a in dec)
    assert all(a.shape == (1, H, 3, G + 13) for a in cross)
    assert all(isinstance(a, np.ndarray) for a in enc + dec + cross)
    np.testing.assert_allclose(cross[0].sum(axis=-1), 1.0, atol=TOL)
    assert (cross[0][..., :G] == 0).all()
    assert len(viz.encoder_token_labels(cfg, ["a"] * 13)) == G + 13
    enc, _, cross = viz.to_bertviz(out, cfg, ["t"] * 13, include_globals=False, batch_index=1)
    assert enc[0].shape == (1, H, 13, 13) and cross[0].shape == (1, H, 3, 13)
    enc, dec, cross = viz.to_bertviz(model.encode(np.ones((1, 13), int) * 7, output_attentions=True), cfg, ["t"] * 13)
    assert dec is None and cross is None and enc[1].shape == (1, H, G + 13, G + 13)
    with pytest.raises(InputError, match="plot_attention"):
        viz.to_bertviz(out, cfg, ["t"] * 600)


@pytest.mark.parametrize("stagger,use_global,T,pixels", [(True, True, 40, 7), (True, False, 300, 50),
                                                         (False, False, 97, 10), (True, False, 13, 100)])
def test_influence_tiles_pool_the_dense_hops_without_building_them(stagger, use_global, T, pixels):
    """The tiles plot_influence draws, made from the atoms, equal the min-pooling of the full [T, T] hops."""
    from minipegx.viz.patterns import influence_tiles

    cfg = PegasusXConfig(**TINY).replace(stagger_local_blocks=stagger)
    hops = viz.influence_hops(cfg, T, use_global)
    top = max(int(hops.max()), 1)
    s = -(-T // pixels)
    m = -(-T // s)
    dense = np.pad(np.where(hops < 0, top + 1, hops), ((0, m * s - T),) * 2, constant_values=top + 1)
    tiles, s_got, top_got = influence_tiles(cfg, T, use_global, max_pixels=pixels)
    assert (s_got, top_got) == (s, top)
    np.testing.assert_array_equal(tiles, dense.reshape(m, s, m, s).min(axis=(1, 3)))


def test_attention_heatmaps_show_small_probabilities_and_a_colour_bar():
    """A probability of 0.01 against a maximum of 1 sits a tenth of the way up the colour scale (square root),
    not a hundredth (linear), and every heatmap carries a colour bar that names its scale."""
    model = tiny_model()
    out, _, _ = run(model, 13)
    for fig in (viz.plot_attention(out, model.config, 1),
                viz.plot_cross_attention(out, [f"s{i}" for i in range(13)], ["<pad>", "a", "b"])):
        image = fig.axes[0].images[0]
        norm = image.norm
        assert abs(norm(0.01 * norm.vmax) - 0.1) < 1e-6
        assert len(fig.axes) == 2 and "square-root scale" in fig.axes[1].get_ylabel()
