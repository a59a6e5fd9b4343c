"""Which tensors a PEGASUS-X checkpoint holds, under which names, and whether a file's tensors fit.

``expected_shapes(config)`` is the table of canonical names and shapes. ``canonicalize`` folds the
other names a tensor has been saved under into the canonical one: the bare ``PegasusXModel`` has no
``model.`` prefix, and the tied word embedding can be stored under any of four names. Two names that
land on the same parameter must hold identical values (old saves store the tied embedding four times);
otherwise loading stops and names both, rather than keep one of them silently. ``validate`` checks
names, shapes, dtypes and finite values.

The tied embedding: ``model.shared.weight`` is the token embedding of the encoder and the decoder and,
when ``config.tie_word_embeddings`` (every released checkpoint), the output projection too. With
untied embeddings transformers 5 gives the encoder, the decoder and the LM head separate matrices;
any that differs from ``shared`` is kept under its own name (``params["lm_head"]["weight"]``,
``params["model"]["encoder"]["embed_tokens"]["weight"]``), so the model reads
``p.get("embed_tokens", params["model"]["shared"])``.
"""

from __future__ import annotations

import numpy as np

from ..errors import CheckpointError
from ..limits import bounded_str

# The four names the tied word embedding has been saved under (old saves: all four, new: one).
SHARED = "model.shared.weight"
EMBED_ALIASES = ("model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight")
LM_HEAD = "lm_head.weight"
BARE_PREFIXES = ("shared", "encoder", "decoder")  # a bare PegasusXModel's names lack "model."


def expected_shapes(config) -> dict[str, tuple]:
    """Every tensor of a PegasusXForConditionalGeneration checkpoint, canonical name -> shape.

    No positional embeddings (they are sinusoidal), no biases in attention, no final_logits_bias.
    The tied token embedding appears once, as model.shared.weight; lm_head.weight only when untied.
    """
    M, V, G = config.d_model, config.vocab_size, config.num_global_tokens
    shapes = {SHARED: (V, M), "model.encoder.embed_global.weight": (G, M)}

    def proj(prefix):
        for p in ("q_proj", "k_proj", "v_proj", "out_proj"):
            shapes[f"{prefix}.{p}.weight"] = (M, M)

    def norm(prefix):
        shapes[f"{prefix}.weight"] = shapes[f"{prefix}.bias"] = (M,)

    def ffn(prefix, F):
        shapes.update({f"{prefix}.fc1.weight": (F, M), f"{prefix}.fc1.bias": (F,),
                       f"{prefix}.fc2.weight": (M, F), f"{prefix}.fc2.bias": (M,)})

    for i in range(config.encoder_layers):
        p = f"model.encoder.layers.{i}"
        proj(f"{p}.self_attn")
        norm(f"{p}.self_attn_layer_norm")
        norm(f"{p}.global_self_attn_layer_norm")
        ffn(p, config.encoder_ffn_dim)
        norm(f"{p}.final_layer_norm")
    norm("model.encoder.layer_norm")
    for i in range(config.decoder_layers):
        p = f"model.decoder.layers.{i}"
        proj(f"{p}.self_attn")
        norm(f"{p}.self_attn_layer_norm")
        proj(f"{p}.encoder_attn")
        norm(f"{p}.encoder_attn_layer_norm")
        ffn(p, config.decoder_ffn_dim)
        norm(f"{p}.final_layer_norm")
    norm("model.decoder.layer_norm")
    if not config.tie_word_embeddings:
        shapes[LM_HEAD] = (V, M)
    return shapes


def canonicalize(flat: dict, config, source: str = "checkpoint") -> dict:
    """Add the model. prefix of a bare PegasusXModel and fold the tied embedding names into one.

    Two stored names for one parameter (``encoder.X`` and ``model.encoder.X``; the tied embedding's
    aliases) must hold identical values: otherwise CheckpointError names both, since keeping either
    would silently swap a weight."""
    out: dict = {}
    stored_as: dict = {}  # canonical name -> the name it was stored under
    for name, x in flat.items():
        canonical = f"model.{name}" if name.split(".", 1)[0] in BARE_PREFIXES else name
        if canonical in out and not _same_values(out[canonical], x):
            raise CheckpointError(f"{source} stores {bounded_str(stored_as[canonical])} and {bounded_str(name)}, two "
                                  f"names for the parameter {bounded_str(canonical)}, with different values; minipegx "
                                  "will not pick one: keep the right one and delete the other")
        out.setdefault(canonical, x)
        stored_as.setdefault(canonical, name)
    names = (SHARED, *EMBED_ALIASES) + ((LM_HEAD,) if config.tie_word_embeddings else ())
    present = [n for n in names if n in out]
    if not present:
        return out  # validate() reports model.shared.weight missing
    shared = out[present[0]]
    for n in present[1:]:
        x = out.pop(n)
        if _same_values(shared, x):
            continue
        if config.tie_word_embeddings:
            raise CheckpointError(
                f"{source}: {stored_as[n]} differs from {stored_as[present[0]]}, but config.tie_word_embeddings is "
                "true, so they must be one matrix; if this checkpoint really has separate embeddings, set "
                "\"tie_word_embeddings\": false in config.json")
        out[n] = x  # untied (transformers 5 unties the encoder and decoder embeddings too): keep it
    out.pop(present[0])
    return {SHARED: shared, **out}


def _same_values(a: np.ndarray, b: np.ndarray, chunk: int = 1 << 22) -> bool:
    """Exact equality, by chunks (a 400 MB embedding never needs a second 400 MB temporary)."""
    if a.shape != b.shape:
        return False
    if a.dtype == b.dtype and a.strides == b.strides and \
            a.__array_interface__["data"][0] == b.__array_interface__["data"][0]:
        return True  # the same memory (tied weights of a .bin share one storage)
    a, b = a.reshape(-1), b.reshape(-1)
    return all(np.array_equal(a[i:i + chunk], b[i:i + chunk]) for i in range(0, a.size, chunk))


def is_float(x) -> bool:
    from ..backend import is_floating
    return is_floating(x.dtype)   # float16/32/64, bfloat16 and float8 (ml_dtypes)


def require_float(flat: dict, source: str) -> None:
    """Every plain array among the parameters is floating (quantized containers are checked on their own)."""
    bad = [f"{bounded_str(name)} ({x.dtype})" for name, x in flat.items()
           if isinstance(x, np.ndarray) and not is_float(x)]
    if bad:
        raise CheckpointError(f"{source}: {len(bad)} weight(s) are not floating point, e.g. {bad[0]}; a weight the "
                              "model multiplies or adds must be float32, float16 or bfloat16: re-save the model")


def validate(flat: dict, config, source: str = "checkpoint") -> None:
    """Every expected tensor present with its shape, nothing unexpected, floating dtype, all finite."""
    expected = expected_shapes(config)
    optional = {} if config.tie_word_embeddings else {n: expected[SHARED] for n in EMBED_ALIASES}
    problems = []
    for name, shape in expected.items():
        if name not in flat:
            problems.append(f"missing {name}: expected shape {list(shape)}")
    for name, x in flat.items():
        shape = expected.get(name, optional.get(name))
        if shape is None:
            problems.append(f"unexpected {bounded_str(name)}: shape {list(x.shape)}")
        elif tuple(x.shape) != shape:
            problems.append(f"{name}: expected shape {list(shape)}, found {list(x.shape)}")
        elif not is_float(x):
            problems.append(f"{name}: dtype {x.dtype} is not a floating dtype")
    if problems:
        raise CheckpointError(f"{source} does not fit the config ({len(problems)} problem(s)):\n  "
                              + "\n  ".join(problems[:10])
                              + (f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else "")
                              + "\n" + _mismatch_hint(flat, config))
    bad = [f"{bounded_str(name)} ({_count_nonfinite(x)} of {x.size} values)" for name, x in flat.items()
           if not _all_finite(x)]
    if bad:
        raise CheckpointError(f"{source} holds NaN or inf in {len(bad)} tensor(s): " + ", ".join(bad[:10])
                              + "; the checkpoint is corrupt or was saved from a diverged run: re-download it")


def _mismatch_hint(flat: dict, config) -> str:
    """A guess at why names or shapes do not fit: layer counts, widths, or another model type."""
    hints = []
    for part, want in (("encoder", config.encoder_layers), ("decoder", config.decoder_layers)):
        indices = [k.split(".")[3] for k in flat if k.startswith(f"model.{part}.layers.")]
        found = {int(i) for i in indices if i.isdecimal() and len(i) < 10}
        if found and max(found) + 1 != want:
            hints.append(f"the checkpoint has {max(found) + 1} {part} layers, config.{part}_layers is {want}")
    if SHARED in flat and flat[SHARED].ndim == 2 and flat[SHARED].shape != (config.vocab_size, config.d_model):
        hints.append(f"its embedding is {list(flat[SHARED].shape)}, config says vocab_size={config.vocab_size}, "
                     f"d_model={config.d_model}")
    if any("embed_positions" in k or "final_logits_bias" in k for k in flat):
        hints.append("it has learned positions or final_logits_bias: it looks like a PEGASUS (model_type "
                     "'pegasus') checkpoint, not PEGASUS-X")
    return "hint: " + ("; ".join(hints) if hints else "is config.json the one that came with these weights?")


def _all_finite(x: np.ndarray, chunk: int = 1 << 22) -> bool:
    """np.isfinite over chunks, so a 400 MB tensor never needs a 100 MB boolean temporary."""
    flat = x.reshape(-1)
    return all(np.isfinite(flat[i:i + chunk]).all() for i in range(0, flat.size, chunk))


def _count_nonfinite(x: np.ndarray) -> int:
    return int(x.size - np.count_nonzero(np.isfinite(x)))



__all__ = ["expected_shapes", "canonicalize", "validate", "require_float", "SHARED", "EMBED_ALIASES", "LM_HEAD"]
