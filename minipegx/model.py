"""The model: a config, a parameter tree (the checkpoint's own names) and the forward pass, with the
reference's inputs and outputs (transformers' PegasusXForConditionalGeneration / Seq2SeqLMOutput).

`PegasusX` is a thin value holder: everything it does is a call to the array functions in
encoder.py, decoder.py and layers.py. Every argument is checked at this boundary (by inputs.py, before any
work), so the layer functions stay free of checks that hide the math. The cross-attention keys/values
and mask come from decoding.prepare_decoding, the same function generation uses.
"""

from __future__ import annotations

import difflib
import inspect
import os
from dataclasses import dataclass, field

import numpy as np

from . import backend as B_
from .config import PegasusXConfig
from .decoder import decoder, unstack_rows
from .decoding import prepare_decoding
from .encoder import encoder
from .errors import InputError
from .generation import generate
# The input checks live in inputs.py (shared with generation); as_ids, as_mask, as_labels and
# check_encoder_inputs stay importable from here.
from .inputs import (as_flag, as_hidden, as_labels, as_mask, check_encoder_inputs, check_past_key_values,
                     ids_or_embeds, mark_checked, short)
from .layers import linear, record


@dataclass
class EncoderOutput:
    """transformers' BaseModelOutput: last_hidden_state [B, T, M] (after the final layer norm);
    hidden_states: each layer's padded input [B, P, M], then the pair (tokens [B, T, M], global tokens
    [B, G, M]); attentions: per layer {"local": [B, H, N, K, G+K], "global": [B, H, G, G+P]} (N + 1
    blocks and P + K positions in a staggered layer). Indexable like a tuple."""
    last_hidden_state: object
    hidden_states: tuple | None = None
    attentions: tuple | None = None

    def __getitem__(self, i):
        return (self.last_hidden_state, self.hidden_states, self.attentions)[i]


@dataclass
class Seq2SeqLMOutput:
    """transformers' Seq2SeqLMOutput, field for field: loss; logits [B*R, S, V]; past_key_values, per decoder
    layer (self_k, self_v, cross_k, cross_v): self [B*R, H, P+S, D], cross [B, H, T, D] (shared by the rows
    of an input); decoder_hidden_states (embeddings and each layer's input, the last entry the final layer
    norm's output, [B*R, S, M]); decoder_attentions [B*R, H, S, P+S]; cross_attentions [B*R, H, S, T];
    encoder_last_hidden_state [B, T, M], encoder_hidden_states, encoder_attentions (as in EncoderOutput)."""
    loss: object = None
    logits: object = None
    past_key_values: tuple | None = None
    decoder_hidden_states: tuple | None = None
    decoder_attentions: tuple | None = None
    cross_attentions: tuple | None = None
    encoder_last_hidden_state: object = None
    encoder_hidden_states: tuple | None = None
    encoder_attentions: tuple | None = None


@dataclass
class PegasusX:
    """A loaded PEGASUS-X: config, parameters on the chosen backend, and generation defaults.

    Fields: config (a PegasusXConfig), params (the parameter tree with the checkpoint's names, e.g.
    ``params["model"]["shared"]["weight"]`` [V, M]), backend ('numpy' | 'cupy'), dtype (the compute
    dtype), generation_config (generation_config.json's dict), path (the folder it was loaded from),
    check_finite (inf/NaN check after every layer; None: on under float16/bfloat16). Calling the model,
    ``model(input_ids=[B, T], decoder_input_ids=[B*R, S], ...)``, is ``forward``: logits [B*R, S, V].
    """
    config: PegasusXConfig
    params: dict
    backend: str = "numpy"
    dtype: str = "float32"
    generation_config: dict = field(default_factory=dict)
    path: str | None = None
    check_finite: bool | None = None  # inf/NaN check after every layer; None: on under fp16/bf16

    @property
    def xp(self):
        """The array module of the parameters: numpy or cupy."""
        return B_.get_backend(self.backend)

    @property
    def lm_head_weight(self):
        """The LM head [V, M]; tied to the token embeddings unless the checkpoint unties them."""
        return self.params.get("lm_head", self.params["model"]["shared"])["weight"]  # [V, M]

    def __call__(self, *args, **inputs) -> Seq2SeqLMOutput:
        """``forward(self, ...)``: input_ids [B, T], decoder_input_ids [B*R, S], ... -> logits [B*R, S, V]
        (the arguments are in the table below; unknown names are refused with a "did you mean")."""
        check_call_names(args, inputs)
        return forward(self, *args, **inputs)

    def encode(self, input_ids=None, attention_mask=None, inputs_embeds=None, output_attentions=False,
               output_hidden_states=False, trace=None) -> EncoderOutput:
        """Run the encoder alone (what generation does once per input): input_ids and attention_mask [B, T]
        (or inputs_embeds [B, T, M]) -> EncoderOutput, last_hidden_state [B, T, M]. Pass it back as
        ``encoder_outputs=`` to decode without re-encoding."""
        input_ids, attention_mask, inputs_embeds = check_encoder_inputs(self, input_ids, attention_mask,
                                                                        inputs_embeds)
        return run_encoder(self, input_ids, attention_mask, inputs_embeds, as_flag("output_attentions",
                           output_attentions), as_flag("output_hidden_states", output_hidden_states), trace)

    def generate(self, input_ids, attention_mask=None, **options):
        """Generated ids [B * num_return_sequences, S], starting with the decoder start token."""
        return generate(self, input_ids, attention_mask=attention_mask, **options)

    def save_pretrained(self, directory, tokenizer=None, *, quantized: str | None = None,
                        overwrite: bool = False) -> str:
        """Write the folder transformers writes (config.json, generation_config.json, model.safetensors
        under transformers' names, and the tokenizer's files, tokenizer.json included), which
        minipegx.from_pretrained and transformers' from_pretrained both load. Returns the directory.

        tokenizer: a minipegx Tokenizer to save along; None takes the tokenizer of the folder the model was
        loaded from. quantized: a quantized model must say "dequantize" (float32, transformers loads it) or
        "packed" (minipegx's int8/NF4 format). overwrite=True allows the folder the model was loaded from.
        The rules: minipegx.checkpoint.writer."""
        from .checkpoint import save_model

        return save_model(self, directory, tokenizer, quantized=quantized, overwrite=overwrite)


# ---------------------------------------------------------------------------------------------- inputs
def check_call_names(args, inputs):
    """model(...) takes forward's arguments: at most its positional ones, and no unknown names."""
    names = list(inspect.signature(forward).parameters)[1:]
    if len(args) > len(names):
        raise InputError(f"the model takes at most {len(names)} arguments, got {len(args)}; pass them by name")
    twice = sorted(set(names[:len(args)]) & set(inputs))
    if twice:
        raise InputError(f"{', '.join(twice)} given both by position and by name; give each once")
    unknown = sorted(set(inputs) - set(names))
    if unknown:
        hints = {u: difflib.get_close_matches(u, names, 1) for u in unknown}
        hint = "".join(f" Did you mean {h[0]!r} for {u!r}?" for u, h in hints.items() if h)
        raise InputError(f"unknown model argument(s) {', '.join(map(short, unknown))}.{hint} "
                         f"Known arguments: {', '.join(names)}")


def shift_tokens_right(labels, pad_token_id, decoder_start_token_id):
    """Decoder inputs from labels: start token, then ``labels[:, :-1]``; -100 (ignored) becomes pad.
    labels [B, S] -> [B, S]."""
    xp = B_.array_module(labels)
    shifted = xp.empty_like(labels)
    shifted[:, 1:] = labels[:, :-1]
    shifted[:, 0] = decoder_start_token_id
    return xp.where(shifted == -100, pad_token_id, shifted)


def cross_entropy(logits, labels):
    """Mean token cross-entropy over labels != -100 (torch.nn.CrossEntropyLoss's default).
    logits [B, S, V], labels [B, S] -> a scalar."""
    xp = B_.array_module(logits)
    logits = logits.astype("float32")
    valid = labels != -100
    safe = xp.where(valid, labels, 0)
    m = logits.max(axis=-1, keepdims=True)
    lse = (xp.log(xp.exp(logits - m).sum(axis=-1, keepdims=True)) + m)[..., 0]   # [B, S]
    picked = xp.take_along_axis(logits, safe[..., None], axis=-1)[..., 0]        # [B, S]
    return ((lse - picked) * valid).sum() / valid.sum()


# ---------------------------------------------------------------------------------------------- forward
def forward(model, input_ids=None, attention_mask=None, decoder_input_ids=None, decoder_attention_mask=None,
            encoder_outputs=None, past_key_values=None, inputs_embeds=None, decoder_inputs_embeds=None,
            labels=None, use_cache=None, output_attentions=False, output_hidden_states=False,
            trace=None) -> Seq2SeqLMOutput:
    """PegasusXForConditionalGeneration.forward, same arguments and outputs (see Seq2SeqLMOutput).
    Every argument is checked (inputs.py) before the encoder runs.

    input_ids / attention_mask [B, T] (or inputs_embeds [B, T, M]); decoder_input_ids [B*R, S] (R rows per
    input share its encoder output); labels [B, S]; returns logits [B*R, S, V] and, with use_cache, the
    cache: per decoder layer (self_k, self_v [B*R, H, P+S, D], cross_k, cross_v [B, H, T, D])."""
    cfg = model.config
    output_attentions = as_flag("output_attentions", output_attentions)
    output_hidden_states = as_flag("output_hidden_states", output_hidden_states)
    use_cache = cfg.use_cache if use_cache is None else as_flag("use_cache", use_cache)
    if trace is not None and not isinstance(trace, dict):
        raise InputError(f"trace must be None or a dict to collect named intermediates, got {type(trace).__name__}")

    # Encoder inputs (or its outputs, reused), checked: [B, T].
    if encoder_outputs is None:
        input_ids, attention_mask, inputs_embeds = check_encoder_inputs(model, input_ids, attention_mask,
                                                                        inputs_embeds)
        B, T = (input_ids if input_ids is not None else inputs_embeds).shape[:2]
    else:
        encoder_outputs = as_encoder_output(model, encoder_outputs)
        B, T = encoder_outputs.last_hidden_state.shape[:2]
        if attention_mask is not None:
            attention_mask = as_mask(model, attention_mask, (B, T), "attention_mask")

    # Decoder inputs: [B*R, S].
    if labels is not None:
        use_cache = False
        if decoder_input_ids is None and decoder_inputs_embeds is None:
            labels = as_labels(model, labels)
            decoder_input_ids = shift_tokens_right(labels, cfg.pad_token_id, cfg.decoder_start_token_id)
    decoder_input_ids, decoder_inputs_embeds, dshape = ids_or_embeds(
        model, decoder_input_ids, decoder_inputs_embeds, "decoder_",
        " (e.g. [[config.decoder_start_token_id]]), or labels to derive them from")
    if labels is not None:
        labels = as_labels(model, labels, dshape)
    if dshape[0] % B:
        raise InputError(f"the decoder has {dshape[0]} rows, not a multiple of the encoder's batch {B}")
    caches, kvs, past = None, None, 0
    if past_key_values is not None:     # self keys/values of past steps, cross keys/values of the inputs
        caches, kvs, past = check_past_key_values(model, past_key_values, dshape[0], B, T)
    if decoder_attention_mask is not None:
        # Like the reference, the mask covers the cached steps and the new ones.
        decoder_attention_mask = as_mask(model, decoder_attention_mask, (dshape[0], past + dshape[1]),
                                         "decoder_attention_mask")

    # The work: encoder (unless reused), cross keys/values and mask, decoder, LM head.
    if encoder_outputs is None:
        encoder_outputs = run_encoder(model, input_ids, attention_mask, inputs_embeds, output_attentions,
                                      output_hidden_states, trace)
    enc_h = encoder_outputs.last_hidden_state                                  # [B, T, M]
    dec = prepare_decoding(model, enc_h, attention_mask, kvs)
    h, new_caches, dhs, self_probs, cross_probs = decoder(
        model.params["model"], cfg, dec.kvs, dec.cross_mask, decoder_input_ids, decoder_inputs_embeds,
        decoder_attention_mask, caches, output_hidden_states, trace, model.check_finite)
    logits = linear(h, model.lm_head_weight)                                   # [B*R, S, V]
    record(trace, "lm_head", logits)

    rows = dshape[0] // B
    pkv = tuple((c[0], c[1], kv[0], kv[1]) for c, kv in zip(new_caches, dec.kvs)) if use_cache else None
    mark_checked([enc_h] + [a for layer in pkv or () for a in layer])  # fed back, not checked again
    return Seq2SeqLMOutput(
        loss=None if labels is None else cross_entropy(logits, labels),
        logits=logits,
        past_key_values=pkv,
        decoder_hidden_states=dhs,
        decoder_attentions=self_probs if output_attentions else None,
        cross_attentions=tuple(unstack_rows(c, rows) for c in cross_probs) if output_attentions else None,
        encoder_last_hidden_state=enc_h,
        encoder_hidden_states=encoder_outputs.hidden_states,
        encoder_attentions=encoder_outputs.attentions,
    )


def as_encoder_output(model, encoder_outputs):
    """encoder_outputs as an EncoderOutput (also from a tuple or a bare [B, T, M] array), its last hidden
    state checked: shape [B, T, d_model], floating, finite."""
    if not isinstance(encoder_outputs, EncoderOutput):
        if isinstance(encoder_outputs, (tuple, list)):
            if not 1 <= len(encoder_outputs) <= 3:
                raise InputError("encoder_outputs as a tuple must be (last_hidden_state[, hidden_states"
                                 f"[, attentions]]), got {len(encoder_outputs)} items")
            encoder_outputs = EncoderOutput(*encoder_outputs)
        else:
            encoder_outputs = EncoderOutput(encoder_outputs)
    h = as_hidden(model, encoder_outputs.last_hidden_state, "encoder_outputs.last_hidden_state")
    return EncoderOutput(h, encoder_outputs.hidden_states, encoder_outputs.attentions)


def run_encoder(model, input_ids, attention_mask, inputs_embeds, output_attentions=False,
                output_hidden_states=False, trace=None) -> EncoderOutput:
    """The encoder on inputs already checked by check_encoder_inputs."""
    h, hs, att = encoder(model.params["model"], model.config, input_ids, attention_mask, inputs_embeds,
                         output_attentions, output_hidden_states, trace, model.check_finite)
    mark_checked([h])  # model(encoder_outputs=...) with it again reads no value of it a second time
    return EncoderOutput(h, hs, att)


# ---------------------------------------------------------------------------------------------- loading
def from_pretrained(path, backend="numpy", dtype="float32", quantize=None) -> PegasusX:
    """Load a Hugging Face PEGASUS-X checkpoint directory (config.json + model.safetensors, sharded
    safetensors or pytorch_model.bin), weights moved to `backend` ('numpy' | 'cupy') once, in `dtype`.

    path=None loads the bundled default demo model, demo_model_path("long"). dtype: 'float32' | 'float16' |
    'bfloat16', the compute dtype (docs/precision.md), or 'float64' for gradient checks (docs/backward.md).
    quantize: None | 'int8' | 'nf4', weight-only quantization of every linear layer (quantize.py); a directory
    written by checkpoint.save_quantized (or save_pretrained(dir, quantized="packed")) loads quantized as saved."""
    from .checkpoint import load_params
    from .checkpoint.names import require_float
    from .tree import flatten_params, unflatten_params
    from .errors import CheckpointError
    from .limits import as_path, read_json

    if path is None:
        path = demo_model_path()
    if not isinstance(path, (str, os.PathLike)):
        raise InputError(f"path must be a checkpoint directory (a str or os.PathLike) or None for the demo model, "
                         f"got {short(path)}")
    path = as_path(path, CheckpointError)  # and no NUL byte
    xp = B_.get_backend(backend)
    compute = B_.resolve_dtype(dtype, xp)
    config = PegasusXConfig.from_json_file(path)
    from .precision import assert_weights_fit
    from .checkpoint import load_quantized, read_quant_config
    from .quantize import check_mode, is_quantized, quantize_params

    saved = read_quant_config(path)
    if saved is not None:  # written by checkpoint.save_quantized
        if quantize not in (None, saved):
            from .errors import ConfigError
            raise ConfigError(f"{path} holds {saved}-quantized weights; load it with quantize=None or "
                              f"{saved!r} (re-quantizing quantized weights would add a second rounding)")
        params = load_quantized(path, config)
        require_float(flatten_params(params), path)  # what load_quantized keeps unquantized must be float
    else:
        params = load_params(path, config)
        if quantize is not None:
            params = quantize_params(params, check_mode(quantize))

    def cast(a):  # floating weights in the compute dtype, cast on the host (bf16/fp8 files reach CuPy as it)
        if is_quantized(a) or not B_.is_floating(a.dtype):
            return a
        return B_.to_device(a, np, compute)

    def place(a):  # every weight to the backend once, as the compute dtype's bytes
        return a.to_device(xp) if is_quantized(a) else B_.to_device(a, xp)

    flat = flatten_params(params)
    for name, a in flat.items():  # one tensor at a time, so one host copy at most is alive besides the file
        a = cast(a)
        assert_weights_fit({name: a}, compute)  # float16 has no inf-free cast past 65504 (checked on the host)
        flat[name] = place(a)
    params = unflatten_params(flat)
    gpath = os.path.join(path, "generation_config.json")
    gen = read_json(gpath, "generation_config.json") if os.path.isfile(gpath) else {}
    return PegasusX(config, params, backend, str(compute), gen, path)


DEMO_VARIANTS = {"long": "demo_long", "short": "demo", "long_nostagger": "demo_long_nostagger",
                 "long_noglobal": "demo_long_noglobal"}


def demo_model_path(variant: str = "long") -> str:
    """A bundled demo checkpoint (small PEGASUS-X models trained by tools/train_demo.py): "long", the default
    (trained up to 16,384 tokens on a task whose facts need information from far-apart blocks); "short", the
    first demo model (1,000-4,000-token documents, facts inside one sentence; the long model's phase 1); and
    the long model's ablation siblings, trained with its recipe up to its phase 3: "long_nostagger" (no
    staggered blocks) and "long_noglobal" (no global tokens)."""
    if variant not in DEMO_VARIANTS:
        from .errors import CheckpointNotFoundError
        renamed = (' ("main" was the first demo model, now "short"; the default is now "long")'
                   if variant == "main" else "")
        raise CheckpointNotFoundError(f"no bundled demo model {variant!r}; choose one of "
                                      f"{', '.join(DEMO_VARIANTS)}{renamed}")
    return os.path.join(os.path.dirname(__file__), "data", DEMO_VARIANTS[variant])
