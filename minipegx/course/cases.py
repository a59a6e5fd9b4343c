"""The inputs check_function grades a student's layer function on, and what each output's axes are.

Each public function gets a few cases built from a tiny random PEGASUS-X layer (seeded, float32) whose
shapes make the usual bugs visible: a batch of 2 whose row 1 is padded (a mask broadcast over the wrong
axis or rows mixed together change row 1 only), block size K=4 with T=10 tokens (3 blocks, the last one
partial; 4 blocks in a staggered layer), 2 global tokens, 2 heads, and beams (R=2 rows per input) in the
decoder's cross-attention. The reference outputs are minipegx's own functions, which the test suite
checks against transformers and the committed goldens. The backward exercises' cases are the same layer in
float64, each with the cache minipegx's forward keeps and a random upstream gradient.
Shape legend: B batch, T tokens, P padded tokens, S decoder steps, L cached + new steps, N blocks,
K block size, G global tokens, H heads, D head dim, F FFN width, M d_model, V vocab; R rows per input.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from .. import decoder, encoder, generate, layers
from ..generation import beam
from ..config import PegasusXConfig

M, F, H, K, G = 16, 32, 2, 4, 2          # d_model, FFN width, heads, block size, global tokens
D = M // H
T, KEPT = 10, (10, 7)                    # tokens; real tokens per row (row 1 is padded from token 7)
MODULES = {                              # the public function -> the module the model calls it from
    "layer_norm": layers, "softmax": layers, "ffn": layers, "sinusoidal_positions": layers,
    "stagger": encoder, "global_local_attention": encoder, "encoder_layer": encoder,
    "self_attention": decoder, "cross_kv": decoder, "cross_attention": decoder, "decoder_layer": decoder,
    "beam_step": beam,
    "layer_norm_backward": layers, "softmax_backward": layers, "global_local_attention_backward": encoder,
}
# The reference functions, held in a dict (parity.patched swaps module attributes, never this table).
REFERENCE = {name: getattr(module, name) for name, module in MODULES.items()}
CONFIG = PegasusXConfig(vocab_size=12, d_model=M, encoder_layers=2, decoder_layers=1, encoder_attention_heads=H,
                        decoder_attention_heads=H, encoder_ffn_dim=F, decoder_ffn_dim=F, num_global_tokens=G,
                        block_size=K, activation_function="relu", max_position_embeddings=64)


@dataclass
class Case:
    """One call: args for the function, names for its outputs (a nested structure like the outputs), and
    keep: per output name, a bool array of the entries that count (None: all). Padded tokens' outputs
    are dropped by the model, so a function may compute anything there."""
    label: str
    args: tuple
    names: object
    axes: dict = field(default_factory=dict)
    keep: dict = field(default_factory=dict)
    masks: tuple = ()          # outputs that are additive masks: a masked entry may hold any value <= MASKED
    legend: str = ""           # what the axis letters mean, when they are not the shape legend's


# An additive mask hides a key when exp(score + mask - max) underflows to 0 in float32 (below -104) for any
# score the model produces; finfo.min is what minipegx uses, -1e9 (a common choice) hides as well.
MASKED = -1e9


def _params(rng):
    def w(*shape, scale=1.0):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    def norm():
        return {"weight": 1.0 + w(M, scale=0.2), "bias": w(M, scale=0.2)}

    def attn():  # queries scaled up so attention is peaked and a wrong mask or scale moves it a lot
        return {name: {"weight": w(M, M, scale=(3.0 if name == "q_proj" else 1.0) * M ** -0.5)}
                for name in ("q_proj", "k_proj", "v_proj", "out_proj")}

    def mlp():
        return {"fc1": {"weight": w(F, M, scale=M ** -0.5), "bias": w(F, scale=0.2)},
                "fc2": {"weight": w(M, F, scale=F ** -0.5), "bias": w(M, scale=0.2)}}

    enc = {"self_attn": attn(), "self_attn_layer_norm": norm(), "global_self_attn_layer_norm": norm(),
           "final_layer_norm": norm(), **mlp()}
    dec = {"self_attn": attn(), "self_attn_layer_norm": norm(), "encoder_attn": attn(),
           "encoder_attn_layer_norm": norm(), "final_layer_norm": norm(), **mlp()}
    return enc, dec


def _token_mask():
    """Additive mask [B, P]: 0 for the KEPT real tokens of each row, finfo.min for padding."""
    P = -(-T // K) * K
    keep = np.arange(P)[None, :] < np.array(KEPT)[:, None]             # [B, P]
    return np.where(keep, 0.0, np.finfo(np.float32).min).astype(np.float32), keep


def _encoder_cases(rng, enc):
    mask, keep = _token_mask()
    x = (rng.standard_normal((2, keep.shape[1], M)) * 2.0 + 0.5).astype(np.float32)   # [B, P, M]
    g = rng.standard_normal((2, G, M)).astype(np.float32)                               # [B, G, M]
    sx, smask = REFERENCE["stagger"](x, mask, K)                                        # [B, P+K, M]
    skeep = smask == 0
    tok, glob, probs = ("tokens", "global tokens", {"local": "local probs", "global": "global probs"})
    ax_attn = {tok: "btm", glob: "bgm", "local probs": "bhnqk", "global probs": "bhgk"}

    def attention_keep(k):
        B, P = k.shape
        return {tok: k[:, :, None], "local probs": k.reshape(B, 1, P // K, K, 1)}

    def layer(staggered, label):
        sk = skeep if staggered else keep
        return Case(label, (x, g, mask, enc, CONFIG, staggered), (tok, glob, probs), ax_attn,
                    {tok: keep[:, :, None], "local probs": sk.reshape(2, 1, -1, K, 1)})

    h = x[:, :T]
    loud = {**enc["self_attn"], "q_proj": {"weight": enc["self_attn"]["q_proj"]["weight"] * np.float32(300)}}
    return {
        # the padded positions may hold anything the mask hides (zeros, edge values): only real ones count
        "stagger": [Case("tokens [2, 12, 16] in 3 blocks of K=4, row 1 padded from token 7", (x, mask, K),
                         ("tokens", "mask"), {"tokens": "btm", "mask": "bt"}, {"tokens": skeep[:, :, None]},
                         masks=("mask",))],
        "global_local_attention": [
            Case("3 blocks of K=4 (the last one partial), 2 global tokens, row 1 padded from token 7",
                 (x, g, mask, enc["self_attn"], H, K), (tok, glob, probs), ax_attn, attention_keep(keep)),
            Case("a staggered layer: 4 blocks after the half-block shift", (sx, g, smask, enc["self_attn"], H, K),
                 (tok, glob, probs), ax_attn, attention_keep(skeep)),
            Case("q_proj 300 times larger: scores in the thousands, where exp overflows float32 unless each "
                 "row's max is subtracted first", (x, g, mask, loud, H, K), (tok, glob, probs), ax_attn,
                 attention_keep(keep))],
        "encoder_layer": [layer(False, "an unstaggered layer: 3 blocks, 2 global tokens, row 1 padded"),
                          layer(True, "a staggered layer: 4 blocks after the half-block shift")],
        "layer_norm": [Case("tokens [2, 10, 16] of mean 0.5 and scale 2", (h, enc["final_layer_norm"]),
                            "output", {"output": "btm"}),
                       Case("global tokens [2, 2, 16]", (g, enc["global_self_attn_layer_norm"]), "output",
                            {"output": "bgm"})],
        "ffn": [Case("relu FFN on tokens [2, 10, 16]", (h, enc, "relu"), "output", {"output": "btm"}),
                Case("exact (erf) gelu FFN on tokens [2, 10, 16]", (h, enc, "gelu"), "output", {"output": "btm"})],
    }


def _decoder_cases(rng, dec):
    mask, _ = _token_mask()
    enc_h = rng.standard_normal((2, T, M)).astype(np.float32)                  # [B, T, M] encoder output
    cross_mask = mask[:, None, None, :T]                                        # [B, 1, 1, T]
    kv = REFERENCE["cross_kv"](enc_h, dec["encoder_attn"], H)                   # ([B, H, T, D], ...)
    x3 = rng.standard_normal((2, 3, M)).astype(np.float32)                      # [B, S=3, M]
    x1 = rng.standard_normal((4, 1, M)).astype(np.float32)                      # [B*R, 1, M], R=2 beams
    past = tuple(rng.standard_normal((4, H, 2, D)).astype(np.float32) for _ in "kv")  # [B*R, H, 2, D]
    causal3 = decoder.causal_mask(3, 0, np.float32, np)                         # [1, 1, 3, 3]
    causal1 = decoder.causal_mask(1, 2, np.float32, np)                         # [1, 1, 1, 3]
    att = ("output", "probs", ("cache k", "cache v"))
    ax = {"output": "bsm", "probs": "bhsl", "cache k": "bhld", "cache v": "bhld"}
    lay = ("output", ("cache k", "cache v"), "self-attention probs", "cross-attention probs")
    lax = {"output": "bsm", "self-attention probs": "bhsl", "cross-attention probs": "bhst",
           "cache k": "bhld", "cache v": "bhld"}
    return {
        "self_attention": [
            Case("3 new steps, no cache, causal mask", (x3, dec["self_attn"], H, causal3, None), att, ax),
            Case("1 new step after a cache of 2 steps, 4 rows", (x1, dec["self_attn"], H, causal1, past), att, ax)],
        "cross_kv": [Case("encoder output [2, 10, 16]", (enc_h, dec["encoder_attn"], H), ("k", "v"),
                          {"k": "bhtd", "v": "bhtd"})],
        "cross_attention": [
            Case("3 steps over 10 encoder tokens, row 1 padded from token 7", (x3, kv, dec["encoder_attn"], H,
                                                                               cross_mask),
                 ("output", "probs"), {"output": "bsm", "probs": "bhst"}),
            Case("2 beams per input (4 rows, rows 2-3 are input 1's), 1 step", (x1, kv, dec["encoder_attn"], H,
                                                                                cross_mask),
                 ("output", "probs"), {"output": "bsm", "probs": "bhst"})],
        "decoder_layer": [
            Case("3 steps, no cache, row 1 of the encoder padded", (x3, dec, CONFIG, causal3, kv, cross_mask, None),
                 lay, lax),
            Case("1 step after a 2-step cache, 2 beams per input", (x1, dec, CONFIG, causal1, kv, cross_mask, past),
                 lay, lax)],
    }


def _other_cases(rng):
    s = (rng.standard_normal((2, H, 3, K, G + K)) * 30.0).astype(np.float32)  # [B, H, N, K, G+K] large scores
    s[1, :, 2, :, G + 3:] += np.finfo(np.float32).min                          # padded keys of row 1's block 2
    s[0, 0, 0, 0, :] = np.float32(100.0)                                        # a row of equal scores
    return {
        "softmax": [Case("scores [2, 2, 3, 4, 6] of scale 30 with padded keys at finfo.min", (s,), "probs",
                         {"probs": "bhnqk"})],
        "sinusoidal_positions": [
            Case("positions 0..9 of width 16", (0, T, M, np), "positions", {"positions": "tm"}),
            Case("positions 37..39 of width 16 (a decoding step after a cache)", (37, 3, M, np), "positions",
                 {"positions": "tm"})],
        "beam_step": [_beam_case(rng)],
    }


def beam_options(**overrides):
    """GenerationOptions for the beam-search cases: 3 beams, EOS 1, max_length 8, length_penalty 0.8."""
    base = dict(max_length=8, min_length=0, num_beams=3, length_penalty=0.8, early_stopping=False,
                do_sample=False, temperature=1.0, top_k=50, top_p=1.0, repetition_penalty=1.0,
                no_repeat_ngram_size=0, encoder_no_repeat_ngram_size=0, num_return_sequences=1,
                forced_bos_token_id=None, forced_eos_token_ids=None, decoder_start_token_id=0,
                eos_token_ids=(1,), pad_token_id=0, output_scores=False, return_dict_in_generate=False,
                static_cache=False)
    return generate.GenerationOptions(**{**base, **overrides})


def _beam_case(rng):
    """The state after 3 reference steps (some hypotheses finished), then log-probs where EOS is likely."""
    opts, Bn, W, V = beam_options(), 2, 3, 12
    state = generate.init_beams(Bn, W, 2 * W, opts.decoder_start_token_id, np)

    def log_probs(eos_boost):
        z = rng.standard_normal((Bn * W, V)).astype(np.float32) * 2.0
        z[:, 1] += eos_boost                                                    # EOS
        return generate.log_softmax(z)

    for boost in (0.0, 2.0, 1.0):
        state, _ = REFERENCE["beam_step"](state, log_probs(boost), opts)
    names = (replace(state, **{f: f"state.{f}" for f in vars(state)}),
             ("candidate tokens", "candidate parents", "candidate scores", "kept", "finished"))
    axes = {"state.running": "bwl", "state.running_scores": "bw", "state.running_parents": "bwl",
            "state.pool": "bwl", "state.pool_scores": "bw", "state.pool_parents": "bwl", "state.pool_done": "bw",
            "state.improvable": "b1", "state.hits": "bc", **{n: "bc" for n in names[1]}}
    return Case("2 inputs, 3 beams, after 3 steps with finished hypotheses", (state, log_probs(2.5), opts), names,
                axes, legend="axes: b input, w beam (best first), l token position, c candidate (best first)")


def _float64(tree):
    return {k: _float64(v) for k, v in tree.items()} if isinstance(tree, dict) else tree.astype(np.float64)


def _backward_cases(enc):
    """The backward exercises, in float64 as gradient checks are (only rounding far below TINY_FP32 can differ):
    minipegx's own forward makes the cache, and the upstream gradient is random at every position, padded ones
    too (the check is of the whole gradient of the function, not only of what one model reads)."""
    rng = np.random.default_rng(20220809)
    enc = _float64(enc)
    mask, keep = _token_mask()
    mask = np.where(keep, 0.0, np.finfo(np.float64).min)                                # [B, P] additive
    P = keep.shape[1]
    x = rng.standard_normal((2, P, M)) * 2.0 + 0.5                                      # [B, P, M]
    g = rng.standard_normal((2, G, M))                                                  # [B, G, M]
    sx, smask = REFERENCE["stagger"](x, mask, K)                                        # [B, P+K, M]

    def grad(*shape):                                                                   # an upstream gradient
        return rng.standard_normal(shape) * 0.5

    def norm_case(label, h, p, axes):
        _, cache = layers.layer_norm_forward(h, p)
        return Case(label, (grad(*h.shape), cache), ("dx", {"weight": "d weight", "bias": "d bias"}),
                    {"dx": axes, "d weight": "m", "d bias": "m"})

    def attention_case(label, x, g, mask):
        _, cache = encoder.global_local_attention_forward(x, g, mask, enc["self_attn"], H, K)
        proj = ("q_proj", "k_proj", "v_proj", "out_proj")
        names = ("dx", "dg", {n: {"weight": f"d {n}.weight"} for n in proj})
        axes = {"dx": "btm", "dg": "bgm", **{f"d {n}.weight": "oi" for n in proj}}
        return Case(label, (grad(*x.shape), grad(*g.shape), cache), names, axes,
                    legend="axes of a weight's gradient: o its output feature, i its input feature")

    s = rng.standard_normal((2, H, 3, K, G + K)) * 3.0                                  # [B, H, N, K, G+K]
    s[1, :, 2, :, G + 3:] += np.finfo(np.float64).min                                   # row 1's padded keys
    probs = REFERENCE["softmax"](s)                                                     # [B, H, N, K, G+K]
    return {
        "layer_norm_backward": [
            norm_case("tokens [2, 12, 16] of mean 0.5 and scale 2", x, enc["final_layer_norm"], "btm"),
            norm_case("global tokens [2, 2, 16]", g, enc["global_self_attn_layer_norm"], "bgm")],
        "softmax_backward": [Case("probabilities [2, 2, 3, 4, 6] (row 1's padded keys at 0)",
                                  (grad(*probs.shape), probs), "ds", {"ds": "bhnqk"})],
        "global_local_attention_backward": [
            attention_case("3 blocks of K=4 (the last one partial), 2 global tokens, row 1 padded from token 7",
                           x, g, mask),
            attention_case("a staggered layer: 4 blocks after the half-block shift", sx, g, smask)],
    }


def cases(name):
    """The cases for one public function (fresh arrays each time: functions may write into their inputs)."""
    rng = np.random.default_rng(20220808)                # the paper's arXiv month, any fixed seed works
    enc, dec = _params(rng)
    table = {**_encoder_cases(rng, enc), **_decoder_cases(rng, dec), **_other_cases(rng), **_backward_cases(enc)}
    return table[name]
