"""Lower precision against float32: what each mode costs in accuracy and buys in memory and speed.

For float32 / float16 / bfloat16 / int8 / nf4 (docs/precision.md shows the tables):
  * max |logit - float32 logit| over teacher-forced decoder steps (fed float32's greedy summary),
    also relative to max |float32 logit|;
  * the share of greedy summaries identical to float32's, and the mean share of steps before the first
    differing token;
  * bytes of the weights (quantized containers: codes + scales; embeddings stay in the compute dtype);
  * seconds to encode one document and for one cached decoder step (NumPy; the modes take turns,
    best of `--repeat` rounds);
and two analyses:
  * fp16 headroom: the largest |activation| of every layer under float32 -- the residual stream, each
    sub-block's output, the FFN's hidden layer -- against float16's largest finite value, 65504;
  * the error layer by layer: max |h - h_float32| / max |h_float32| for every layer's output.

Models: the first (short) demo checkpoint (minipegx/data/demo, on held-out documents from tools/demo_data.py), or
while it does not exist a random model of the demo's shape; and random weights in pegasus-x-base's
shape (d_model 768, 12+12 layers, 12 heads, FFN 3072, block 512, 128 global tokens, vocab 96103),
drawn as transformers initializes them (normal, std 0.02; layer norms 1 and 0).

    python -m benchmarks.precision                      # both models, markdown on stdout
    python -m benchmarks.precision --model demo --json out.json
    python -m benchmarks.precision --model base --docs 4 --tokens 256 --new-tokens 16
    python -m benchmarks.precision --path path/to/pegasus-x-base     # a real checkpoint
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np

import minipegx
from benchmarks.random_checkpoint import write_random_checkpoint
from minipegx.config import PegasusXConfig
from minipegx.layers import ACTIVATIONS, layer_norm, linear
from minipegx.quantize import weight_bytes

MODES = [("float32", None), ("float16", None), ("bfloat16", None), ("float32", "int8"), ("float32", "nf4")]
FP16_MAX = 65504.0
BASE = dict(d_model=768, encoder_layers=12, decoder_layers=12, encoder_attention_heads=12,
            decoder_attention_heads=12, encoder_ffn_dim=3072, decoder_ffn_dim=3072, num_global_tokens=128,
            block_size=512, stagger_local_blocks=True, activation_function="relu", scale_embedding=True,
            max_position_embeddings=16384, vocab_size=96103, pad_token_id=0, eos_token_id=1,
            decoder_start_token_id=0, init_std=0.02, tie_word_embeddings=True)

def label(dtype, quantize):
    return quantize or dtype


# ---------------------------------------------------------------------------------------------- models
def random_checkpoint(directory, shape, seed=0):
    """A random checkpoint of `shape` (benchmarks/random_checkpoint.py) -> its directory."""
    return write_random_checkpoint(directory, shape, seed)


def demo_inputs(path, docs, lo=1000, hi=3000):
    """Held-out demo documents (tools/demo_data.py, tools/eval_demo.py's seed stream, shifted) -> ids, mask."""
    from tools.demo_data import make_dataset, make_named_example

    tok = minipegx.Tokenizer.from_pretrained(path)
    texts = [doc for doc, _ in make_dataset(987_654_321 + 1, docs, lo, hi, make=make_named_example)]
    batch = tok(texts, padding=True, return_tensors="np")
    return np.asarray(batch["input_ids"]), np.asarray(batch["attention_mask"])


def random_inputs(vocab, docs, tokens, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(103, vocab, size=(docs, tokens))
    ids[:, -1] = 1                                       # </s>
    return ids, np.ones_like(ids)


def timed(fn, repeat):
    """(result, best seconds of `repeat` runs after one warm-up run). Best-of, because the machine is shared."""
    out = fn()
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return out, best


# ---------------------------------------------------------------------------------------------- measures
def measure(path, ids, mask, new_tokens, modes=MODES):
    """One row per mode (see the module docstring), plus per-layer errors and float32's activations."""
    ref = minipegx.from_pretrained(path)
    gen = dict(max_new_tokens=new_tokens, num_beams=1, do_sample=False)
    seq32 = ref.generate(ids, mask, **gen)
    dec = seq32[:, :-1] if seq32.shape[1] > 1 else seq32
    out32 = ref(input_ids=ids, attention_mask=mask, decoder_input_ids=dec, output_hidden_states=True)
    logits32 = out32.logits
    scale = float(np.abs(logits32).max())
    rows, layers = [], {}
    for dtype, quantize in modes:
        name = label(dtype, quantize)
        if (dtype, quantize) == ("float32", None):
            model, out, seq = ref, out32, seq32
        else:
            model = minipegx.from_pretrained(path, dtype=dtype, quantize=quantize)
            seq = model.generate(ids, mask, **gen)
            out = model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec, output_hidden_states=True)
        err = float(np.abs(out.logits.astype(np.float32) - logits32).max())
        same = [a.tolist() == b.tolist() for a, b in zip(seq, seq32)]
        prefix = [common_prefix(a, b) / max(len(b) - 1, 1) for a, b in zip(seq, seq32)]
        rows.append(dict(mode=name, max_logit_err=err, rel_logit_err=err / scale,
                         identical=float(np.mean(same)), agree_prefix=float(np.mean(prefix)),
                         weight_mb=weight_bytes(model.params) / 2 ** 20,
                         argmax_agree=float((out.logits.argmax(-1) == logits32.argmax(-1)).mean())))
        layers[name] = layer_errors(out, out32)
        del model
    return dict(rows=rows, layers=layers, logit_scale=scale, docs=int(ids.shape[0]),
                tokens=int(mask.sum(1).max()), new_tokens=new_tokens, steps=int(dec.shape[1]))


def common_prefix(a, b):
    a, b = list(a), list(b)
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return max(n - 1, 0)   # the start token is always shared


def layer_errors(out, out32):
    """{layer name: max|h - h32| / max|h32|} for every encoder and decoder layer's output and the logits."""
    res = {}
    enc, enc32 = out.encoder_hidden_states, out32.encoder_hidden_states
    for i in range(1, len(enc) - 1):                      # enc[i] is layer i-1's output (padded)
        res[f"encoder.layers.{i - 1}"] = rel(enc[i], enc32[i])
    res["encoder.layer_norm"] = rel(enc[-1][0], enc32[-1][0])
    dec, dec32 = out.decoder_hidden_states, out32.decoder_hidden_states
    for i in range(1, len(dec) - 1):
        res[f"decoder.layers.{i - 1}"] = rel(dec[i], dec32[i])
    res["decoder.layer_norm"] = rel(dec[-1], dec32[-1])
    res["logits"] = rel(out.logits, out32.logits)
    return res


def rel(a, b):
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def speed(path, ids, mask, rounds=3, modes=MODES):
    """Seconds to encode one document and to run one cached decoder step (LM head included), per mode.
    The modes take turns, `rounds` times, and the best time counts: the machine is shared, and turns
    keep a busy minute from landing on one mode only."""
    models = {label(d, q): minipegx.from_pretrained(path, dtype=d, quantize=q) for d, q in modes}
    ids1, mask1 = ids[:1], mask[:1]
    best = {m: [float("inf"), float("inf")] for m in models}
    for _ in range(rounds):
        for name, model in models.items():
            t = time.perf_counter()
            enc = model.encode(ids1, mask1)
            best[name][0] = min(best[name][0], time.perf_counter() - t)
            first = model(encoder_outputs=enc, attention_mask=mask1, decoder_input_ids=[[0]], use_cache=True)
            t = time.perf_counter()
            model(encoder_outputs=enc, attention_mask=mask1, decoder_input_ids=[[first.logits[0, -1].argmax()]],
                  past_key_values=first.past_key_values, use_cache=True)
            best[name][1] = min(best[name][1], time.perf_counter() - t)
    return {m: dict(encode_s=e, step_s=s) for m, (e, s) in best.items()}


def activation_ranges(path, ids, mask, dec):
    """Under float32: for every layer, the largest |value| of the residual stream after it, of its
    attention output(s), of its FFN's hidden layer and of its FFN output -- against 65504."""
    model = minipegx.from_pretrained(path)
    cfg, p = model.config, model.params["model"]
    trace = {}
    out = model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec, output_hidden_states=True, trace=trace)
    act = ACTIVATIONS[cfg.activation_function]
    rows = []
    enc = out.encoder_hidden_states
    K = cfg.block_size
    for i, lp in enumerate(p["encoder"]["layers"]):
        name = f"model.encoder.layers.{i}"
        x_in, x_out = enc[i], (enc[i + 1] if i + 1 < len(enc) - 1 else None)
        attn = trace[f"{name}.self_attn"]
        if cfg.is_staggered(i):
            attn = attn[:, K // 2:-(K // 2)]
        mid = x_in + attn
        hidden = act(linear(layer_norm(mid, lp["final_layer_norm"]), lp["fc1"]["weight"], lp["fc1"]["bias"]))
        ffn = linear(hidden, lp["fc2"]["weight"], lp["fc2"]["bias"])
        x_out = mid + ffn
        rows.append(dict(layer=name, residual=amax(x_out), attention=max(amax(attn), amax(trace[f"{name}.self_attn.global"])),
                         ffn_hidden=amax(hidden), ffn_out=amax(ffn), global_residual=amax(trace[f"{name}.global"])))
    dech = out.decoder_hidden_states
    for i, lp in enumerate(p["decoder"]["layers"]):
        name = f"model.decoder.layers.{i}"
        sa, ca = trace[f"{name}.self_attn"], trace[f"{name}.encoder_attn"]
        mid = dech[i] + sa + ca
        hidden = act(linear(layer_norm(mid, lp["final_layer_norm"]), lp["fc1"]["weight"], lp["fc1"]["bias"]))
        ffn = linear(hidden, lp["fc2"]["weight"], lp["fc2"]["bias"])
        rows.append(dict(layer=name, residual=amax(trace[name]), attention=max(amax(sa), amax(ca)),
                         ffn_hidden=amax(hidden), ffn_out=amax(ffn)))
    rows.append(dict(layer="lm_head (logits)", residual=amax(out.logits)))
    return rows


def amax(x):
    return float(np.abs(np.asarray(x, np.float32)).max())


def check_cost(path, ids, mask, dec, repeat=3):
    """The inf/NaN check after every layer: its own seconds per forward pass (timed alone, on arrays of
    the residual stream's shapes) against a float16 forward pass without it."""
    from minipegx.precision import assert_finite

    model = minipegx.from_pretrained(path, dtype="float16")
    cfg = model.config
    model.check_finite = False
    _, forward = timed(lambda: model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec), repeat)
    B, T = ids.shape
    P = -(-T // cfg.block_size) * cfg.block_size
    rng = np.random.default_rng(0)
    arrays = ([rng.standard_normal((B, P, cfg.d_model), dtype=np.float32),
               rng.standard_normal((B, cfg.num_global_tokens, cfg.d_model), dtype=np.float32)] * cfg.encoder_layers
              + [rng.standard_normal((B, dec.shape[1], cfg.d_model), dtype=np.float32)] * cfg.decoder_layers)
    _, checks = timed(lambda: [assert_finite(a, "x", "float16") for a in arrays], 20)
    return dict(forward=forward, checks=checks, n_checks=len(arrays))


# ---------------------------------------------------------------------------------------------- report
def markdown(title, res):
    out = [f"### {title}", "",
           f"{res['docs']} documents of up to {res['tokens']} tokens; logits over {res['steps']} teacher-forced "
           f"steps (max |float32 logit| = {res['logit_scale']:.3g}); greedy summaries of {res['new_tokens']} new tokens.",
           "", "| mode | max logit error | relative | same argmax | identical summaries | tokens before first "
               "difference | weights MiB | encode 1 doc s | decoder step ms |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        sp = res["speed"][r["mode"]]
        out.append(f"| {r['mode']} | {r['max_logit_err']:.2e} | {r['rel_logit_err']:.1e} | {100 * r['argmax_agree']:.1f}% "
                   f"| {100 * r['identical']:.0f}% | {100 * r['agree_prefix']:.0f}% | {r['weight_mb']:.1f} "
                   f"| {sp['encode_s']:.2f} | {1e3 * sp['step_s']:.0f} |")
    return "\n".join(out)


def layers_markdown(res, every=1):
    """Rows for every `every`-th layer of each stack, its last layer, the final norms and the logits."""
    names = list(next(iter(res["layers"].values())))
    last = {n.rsplit(".", 1)[0]: n for n in names}          # the last layer of each stack
    modes = [m for m in res["layers"] if m != "float32"]
    out = ["| layer output | " + " | ".join(modes) + " |", "|---|" + "---|" * len(modes)]
    for n in names:
        index = n.rsplit(".", 1)[-1]
        if index.isdigit() and int(index) % every and n not in last.values():
            continue
        out.append(f"| {n} | " + " | ".join(f"{res['layers'][m][n]:.1e}" for m in modes) + " |")
    return "\n".join(out)


def ranges_markdown(rows):
    out = ["| layer | residual stream | attention out | FFN hidden | FFN out | headroom to 65504 |",
           "|---|---|---|---|---|---|"]
    for r in rows:
        vals = [r.get(k) for k in ("residual", "attention", "ffn_hidden", "ffn_out")]
        top = max(v for v in vals if v is not None)
        out.append(f"| {r['layer']} | " + " | ".join("" if v is None else f"{v:.3g}" for v in vals)
                   + f" | {FP16_MAX / top:.0f}x |")
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", choices=["demo", "base", "both"], default="both")
    ap.add_argument("--path", help="measure this checkpoint directory instead (e.g. a real pegasus-x-base)")
    ap.add_argument("--docs", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=256, help="tokens per document for the random base model")
    ap.add_argument("--new-tokens", type=int, default=24)
    ap.add_argument("--vocab", type=int, default=96103, help="vocabulary of the random base-shaped model")
    ap.add_argument("--repeat", type=int, default=3, help="rounds of the speed measurement; the best counts")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)
    results = {}
    if args.path:
        config = PegasusXConfig.from_json_file(args.path)
        if os.path.isfile(os.path.join(args.path, "spiece.model")):
            ids, mask = demo_inputs(args.path, args.docs)
        else:
            ids, mask = random_inputs(config.vocab_size, args.docs, args.tokens)
        results["path"] = run(f"Checkpoint {args.path}", args.path, ids, mask, args, every=3)
        args.model = None
    with tempfile.TemporaryDirectory() as tmp:
        if args.model in ("demo", "both"):
            path = minipegx.demo_model_path("short")   # the first demo model, on its task's documents
            title = "Demo model (minipegx/data/demo), held-out documents"
            ids, mask = demo_inputs(path, args.docs)
            results["demo"] = run(title, path, ids, mask, args)
        if args.model in ("base", "both"):
            shape = {**BASE, "vocab_size": args.vocab}
            path = random_checkpoint(os.path.join(tmp, "base_shape"), shape, seed=0)
            ids, mask = random_inputs(args.vocab, args.docs, args.tokens)
            results["base"] = run(f"Random weights in pegasus-x-base's shape (vocab {args.vocab})", path, ids, mask,
                                  args, every=3)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)


def run(title, path, ids, mask, args, every=1):
    res = measure(path, ids, mask, args.new_tokens)
    res["speed"] = speed(path, ids, mask, rounds=args.repeat)
    dec = ids[:, :8] * 0 + np.arange(8)[None] + 103   # any decoder ids: ranges do not depend on them much
    res["ranges"] = activation_ranges(path, ids, mask, dec)
    res["check_cost"] = check_cost(path, ids[:1], mask[:1], dec[:1], repeat=1)
    print(markdown(title, res), "\n", flush=True)
    print("Error layer by layer (max |h - h_float32| / max |h_float32|):\n", flush=True)
    print(layers_markdown(res, every), "\n", flush=True)
    print("Largest |activation| under float32:\n", flush=True)
    print(ranges_markdown(res["ranges"]), "\n", flush=True)
    c = res["check_cost"]
    print(f"inf/NaN checks: {c['n_checks']} per forward pass, {1e3 * c['checks']:.2f} ms together, "
          f"{100 * c['checks'] / c['forward']:.2f}% of a float16 forward pass ({c['forward']:.2f} s)\n", flush=True)
    return res


if __name__ == "__main__":
    main()
