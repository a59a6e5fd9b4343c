"""minipegx.views: per-token views from the blocked probabilities, checked against dense ground truth.

The dense truth is built the slow way on tiny inputs: viz.densify stitches a layer's probabilities into
the [G+T, G+T] matrix (checked in test_viz against a brute-force softmax), viz.attention_pattern says
which query may attend which key. Tiny config: block 4, 2 global tokens, stagger on, T not a multiple of K.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_viz import TINY, tiny_model

from minipegx import views as V
from minipegx import viz
from minipegx.config import PegasusXConfig
from minipegx.errors import InputError

# Probabilities are float32 softmaxes of O(1) scores, summed over at most G+T terms: 1e-5 is a few ulps.
TOL = 1e-5
T = 41


@pytest.fixture(scope="module")
def tiny():
    model = tiny_model(seed=3)
    ids = np.random.default_rng(4).integers(5, model.config.vocab_size, size=(1, T))
    out = model(input_ids=ids, decoder_input_ids=ids[:, :2], output_attentions=True)
    views = V.encoder_views(model, ids, keep_inputs=True)
    return model, ids, out, views


def dense(out, cfg, layer):
    """One layer's [G+T, G+T] probabilities, mean over heads (densify is linear in the heads)."""
    return viz.densify(out.encoder_attentions[layer], cfg, layer, T).mean(axis=0)


def test_encoder_views_recomputes_the_models_own_probabilities_layer_by_layer(tiny):
    model, _, out, views = tiny
    for layer, att in enumerate(views.layers):
        ref = V.layer_attention(out.encoder_attentions[layer], model.config, layer, T)
        np.testing.assert_allclose(att.local, ref.local, atol=TOL)
        np.testing.assert_allclose(att.glob, ref.glob, atol=TOL)


def test_token_attention_is_the_row_of_the_dense_matrix(tiny):
    model, _, out, views = tiny
    G = model.config.num_global_tokens
    for layer, att in enumerate(views.layers):
        A = dense(out, model.config, layer)
        for q in (0, 1, 2, 3, 17, 38, T - 1):
            to_globals, to_tokens = V.token_attention(att, q)
            np.testing.assert_allclose(np.concatenate([to_globals, to_tokens]), A[G + q], atol=TOL)
            assert abs(to_globals.sum() + to_tokens.sum() - 1) < TOL


def test_global_reads_are_the_global_rows_of_the_dense_matrix(tiny):
    model, _, out, views = tiny
    G = model.config.num_global_tokens
    for layer, att in enumerate(views.layers):
        A = dense(out, model.config, layer)
        to_globals, to_tokens = V.global_reads(att)
        np.testing.assert_allclose(to_globals, A[:G, :G], atol=TOL)
        np.testing.assert_allclose(to_tokens, A[:G, G:], atol=TOL)


def test_full_attention_row_is_an_independent_softmax_of_q_k(tiny):
    """Layer 0's inputs are known without the encoder: the global embeddings and the layer-normed
    token embeddings. torch computes softmax(q k^T / sqrt(D)) over all G+T keys for one query."""
    model, _, _, views = tiny
    cfg = model.config
    G, H, D = cfg.num_global_tokens, cfg.encoder_attention_heads, cfg.d_model // cfg.encoder_attention_heads
    h, hg = views.inputs[0]
    w = model.params["model"]["encoder"]["layers"][0]["self_attn"]
    x = torch.from_numpy(np.concatenate([hg, h])).double()                       # [G+T, M]
    q = (x @ torch.from_numpy(w["q_proj"]["weight"]).double().T).reshape(-1, H, D).transpose(0, 1)
    k = (x @ torch.from_numpy(w["k_proj"]["weight"]).double().T).reshape(-1, H, D).transpose(0, 1)
    query = 22
    want = torch.softmax(torch.einsum("hd,hjd->hj", q[:, G + query], k) / D ** 0.5, dim=-1).mean(0)  # [G+T]
    qs, ks = V.project_qk(model, h, hg, 0)
    np.testing.assert_allclose(V.full_attention_row(qs, ks, query, G), want.numpy(), atol=TOL)


def test_full_attention_restricted_to_the_block_gives_the_models_local_row(tiny):
    model, _, _, views = tiny
    cfg = model.config
    G = cfg.num_global_tokens
    for layer, att in enumerate(views.layers):
        qs, ks = V.project_qk(model, *views.inputs[layer], layer)
        for query in (0, 5, 21, T - 1):
            for head in range(cfg.encoder_attention_heads):
                keys = V.local_keys(cfg, layer, T, query)
                row = V.full_attention_row(qs, ks, query, G, head=head, keys=keys)
                own = V.layer_attention(tiny[2].encoder_attentions[layer], cfg, layer, T, head=head)
                np.testing.assert_allclose(row, np.concatenate(V.token_attention(own, query)), atol=TOL)


def brute_force_reach(cfg, length, query, use_global):
    """Boolean products of the per-layer [G+T, G+T] patterns: row query of A_l ... A_1, token columns."""
    G = cfg.num_global_tokens
    rows, r = [], np.zeros(G + length, bool)
    for top in range(1, cfg.encoder_layers + 1):
        r = np.zeros(G + length, bool)
        r[G + query] = True
        for layer in reversed(range(top)):
            A = viz.attention_pattern(cfg, length, layer)
            if not use_global:
                A[:G] = False
                A[:, :G] = False
            r = (r[:, None] & A).any(axis=0)
        rows.append(r[G:])
    return np.array(rows)


@pytest.mark.parametrize("stagger", [True, False])
def test_reach_structure_equals_brute_force_reachability(stagger):
    cfg = PegasusXConfig(**{**TINY, "encoder_layers": 4, "stagger_local_blocks": stagger})  # K=4, G=2
    for query in range(40):
        codes = V.reach_structure(cfg, 40, query)
        assert codes[0, query] == 2 and codes[0].sum() == 2
        np.testing.assert_array_equal(codes[1:] >= 1, brute_force_reach(cfg, 40, query, True))
        np.testing.assert_array_equal(codes[1:] == 2, brute_force_reach(cfg, 40, query, False))


def test_reach_structure_grows_half_a_block_per_staggered_layer_at_base_shape():
    """K=512, G=128, 16k tokens: no T x T anywhere. Through local blocks alone, token 5000's state
    after layer 1 read its block (4608..5119); after 2 layers it read the staggered block of 5000
    (4864..5375) whose tokens had read their unstaggered blocks (4608..5631): K more per layer."""
    cfg = PegasusXConfig(**{**TINY, "block_size": 512, "num_global_tokens": 128, "encoder_layers": 4})
    codes = V.reach_structure(cfg, 16384, 5000)
    local = [np.flatnonzero(row == 2) for row in codes]
    assert [(a[0], a[-1]) for a in local] == [(5000, 5000), (4608, 5119), (4608, 5631), (4096, 5631),
                                              (4096, 6143)]
    assert (codes[2] >= 1).all() and not (codes[1] >= 1).all()


def test_influence_layers_is_a_row_of_influence_hops():
    cfg = PegasusXConfig(**{**TINY, "encoder_layers": 5})
    for use_global in (True, False):
        hops = viz.influence_hops(cfg, 37, use_global=use_global)
        for query in (0, 9, 36):
            np.testing.assert_array_equal(V.influence_layers(cfg, 37, query, use_global), hops[query])


def test_reach_weighted_is_the_dense_rollout_row_and_each_row_sums_to_one(tiny):
    model, _, out, views = tiny
    G = model.config.num_global_tokens
    I = np.eye(G + T)
    for query in (0, 13, T - 1):
        got = V.reach_weighted(views.layers, query)
        r = np.zeros(G + T)
        r[G + query] = 1
        for top in range(1, len(views.layers) + 1):
            want = I[G + query]
            for layer in reversed(range(top)):
                want = want @ (0.5 * I + 0.5 * dense(out, model.config, layer))
            np.testing.assert_allclose(got[top], want, atol=TOL)
        np.testing.assert_allclose(got.sum(axis=1), 1, atol=TOL)


def test_views_name_a_bad_query(tiny):
    with pytest.raises(InputError, match=r"query must be a token position in \[0, 41\)"):
        V.token_attention(tiny[3].layers[0], T)


@pytest.mark.parametrize("overrides", [{}, {"stagger_local_blocks": False}, {"block_size": 6}, {"encoder_layers": 1}])
@pytest.mark.parametrize("use_global", [True, False])
def test_influence_atoms_expand_to_influence_hops(overrides, use_global):
    cfg = PegasusXConfig(**{**TINY, "encoder_layers": 4, **overrides})
    atom, hops = V.influence_atoms(cfg, 39, use_global)
    dense = hops[atom[:, None], atom[None, :]]
    np.fill_diagonal(dense, 0)
    np.testing.assert_array_equal(dense, viz.influence_hops(cfg, 39, use_global=use_global))


def test_influence_atoms_are_half_blocks_at_the_base_shape():
    cfg = PegasusXConfig(**{**TINY, "block_size": 512, "num_global_tokens": 128, "encoder_layers": 12})
    atom, hops = V.influence_atoms(cfg, 16384, use_global=False)
    assert hops.shape == (64, 64) and atom[255] == 0 and atom[256] == 1
    # Through local blocks alone the reach grows by a half block per layer on each side (in turns):
    # 12 half blocks to the left after 12 layers, never 13.
    assert list(hops[32, 19:33]) == [-1, 12, 12, 10, 10, 8, 8, 6, 6, 4, 4, 2, 2, 1]
    assert V.influence_atoms(cfg, 16384)[1].max() == 2                   # with global tokens: 2 layers
