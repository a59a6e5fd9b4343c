"""The model: a config, a parameter tree (the checkpoint's own names) and the forward pass, with the
reference's inputs and outputs (transformers' PegasusXForConditionalGeneration / Seq2SeqLMOutput).

`PegasusX` is a thin value holder: everything it does is a call to the array functions in
encoder.py, decoder.py and layers.py. Inputs are checked here, at the boundary, so the layer
functions stay free of checks that hide the math.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field

from . import backend as B_
from .config import PegasusXConfig
from .decoder import cross_kv, decoder, unstack_rows
from .encoder import encoder
from .errors import InputError, LongInputWarning, MiniPegxWarning
from .layers import additive_mask, linear, record


@dataclass
class EncoderOutput:
    """transformers' BaseModelOutput: last_hidden_state [B, T, M], hidden_states, attentions."""
    last_hidden_state: object
    hidden_states: tuple | None = None
    attentions: tuple | None = None

    def __getitem__(self, i):
        return (self.last_hidden_state, self.hidden_states, self.attentions)[i]


@dataclass
class Seq2SeqLMOutput:
    """transformers' Seq2SeqLMOutput, field for field. past_key_values holds, per decoder layer,
    (self_k, self_v, cross_k, cross_v): self [B*R, H, S, D], cross [B, H, T, D] (shared by rows)."""
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
    """A loaded PEGASUS-X: config, parameters on the chosen backend, and generation defaults."""
    config: PegasusXConfig
    params: dict
    backend: str = "numpy"
    dtype: str = "float32"
    generation_config: dict = field(default_factory=dict)
    path: str | None = None
    check_finite: bool | None = None  # inf/NaN check after every layer; None: on under fp16/bf16

    @property
    def xp(self):
        return B_.get_backend(self.backend)

    @property
    def lm_head_weight(self):
        """The LM head; tied to the token embeddings unless the checkpoint unties them."""
        return self.params.get("lm_head", self.params["model"]["shared"])["weight"]  # [V, M]

    def __call__(self, **inputs) -> Seq2SeqLMOutput:
        return forward(self, **inputs)

    def encode(self, input_ids=None, attention_mask=None, inputs_embeds=None, output_attentions=False,
               output_hidden_states=False, trace=None) -> EncoderOutput:
        """Run the encoder alone (what generation does once per input)."""
        input_ids, attention_mask, inputs_embeds = check_encoder_inputs(self, input_ids, attention_mask,
                                                                        inputs_embeds)
        h, hs, att = encoder(self.params["model"], self.config, input_ids, attention_mask, inputs_embeds,
                             output_attentions, output_hidden_states, trace, self.check_finite)
        return EncoderOutput(h, hs, att)

    def generate(self, input_ids, attention_mask=None, **options):
        """Generated ids [B * num_return_sequences, S], starting with the decoder start token."""
        from .generate import generate
        return generate(self, input_ids, attention_mask=attention_mask, **options)


# ---------------------------------------------------------------------------------------------- inputs
def as_ids(model, ids, name):
    """Lists or arrays of token ids -> an int64 [B, L] array on the model's backend, checked on the way:
    integers, rank 1 or 2, a non-empty batch, every id in [0, vocab_size) (CuPy would wrap bad ids
    silently)."""
    xp = model.xp
    if isinstance(ids, (list, tuple)):
        try:
            ids = B_.to_numpy(ids)
        except ValueError as e:
            raise InputError(f"{name} rows have different lengths; pad them (the tokenizer's padding=True) "
                             "and pass an attention_mask") from e
    if not hasattr(ids, "dtype") or not hasattr(ids, "ndim"):
        raise InputError(f"{name} must be a NumPy/CuPy array or a list of token ids, got {type(ids).__name__}")
    if ids.ndim == 1:
        ids = ids[None]
    if ids.ndim != 2:
        raise InputError(f"{name} must have shape [batch, length], got shape {tuple(ids.shape)}")
    if ids.shape[0] == 0:
        raise InputError(f"{name} has a batch of zero sequences; give at least one")
    if ids.shape[1] == 0:
        raise InputError(f"{name} has sequences of length zero; every input needs at least one token")
    if ids.dtype.kind not in "iu":
        raise InputError(f"{name} must hold integer token ids, got dtype {ids.dtype}; "
                         "cast with .astype('int64') if they are whole numbers")
    lo, hi = int(ids.min()), int(ids.max())
    V = model.config.vocab_size
    if lo < 0 or hi >= V:
        bad = lo if lo < 0 else hi
        raise InputError(f"{name} holds id {bad}, outside the vocabulary [0, {V}); "
                         "was it made by this checkpoint's tokenizer?")
    return B_.to_device(ids, xp).astype("int64")


def as_mask(model, mask, shape, name):
    """A 1/0 attention mask of exactly `shape`, as an array on the model's backend."""
    xp = model.xp
    if isinstance(mask, (list, tuple)):
        mask = B_.to_numpy(mask)
    if not hasattr(mask, "shape"):
        raise InputError(f"{name} must be an array of 1 (keep) and 0 (padding), got {type(mask).__name__}")
    if mask.ndim == 1 and len(shape) == 2 and shape[0] == 1:
        mask = mask[None]
    if tuple(mask.shape) != tuple(shape):
        raise InputError(f"{name} has shape {tuple(mask.shape)} but its ids have shape {tuple(shape)}; "
                         "they must match (one 1/0 per token)")
    m = B_.to_device(mask, xp)
    if m.dtype.kind == "b":
        m = m.astype("int64")
    if not bool(((m == 0) | (m == 1)).all()):
        raise InputError(f"{name} must hold only 1 (keep) and 0 (padding)")
    return m


def check_encoder_inputs(model, input_ids, attention_mask, inputs_embeds):
    xp, dtype = model.xp, B_.resolve_dtype(model.dtype, model.xp)
    if (input_ids is None) == (inputs_embeds is None):
        raise InputError("give exactly one of input_ids or inputs_embeds")
    if input_ids is not None:
        input_ids = as_ids(model, input_ids, "input_ids")
        shape = input_ids.shape
    else:
        if not hasattr(inputs_embeds, "shape") or inputs_embeds.ndim != 3 \
                or inputs_embeds.shape[-1] != model.config.d_model or inputs_embeds.shape[0] == 0:
            raise InputError(f"inputs_embeds must have shape [batch>0, length, d_model={model.config.d_model}], "
                             f"got {getattr(inputs_embeds, 'shape', type(inputs_embeds).__name__)}")
        inputs_embeds = B_.to_device(inputs_embeds, xp, dtype)
        shape = inputs_embeds.shape[:2]
    if attention_mask is not None:
        attention_mask = as_mask(model, attention_mask, shape, "attention_mask")
        empty = ~(attention_mask == 1).any(axis=1)
        if bool(empty.any()):
            rows = [int(i) for i in B_.to_numpy(xp.nonzero(empty)[0])]
            warnings.warn(f"attention_mask rows {rows} are all padding: those inputs have no tokens, so "
                          "their outputs depend only on the global tokens", MiniPegxWarning, stacklevel=3)
    if shape[1] > model.config.max_position_embeddings:
        warnings.warn(f"the input has {shape[1]} tokens, more than max_position_embeddings="
                      f"{model.config.max_position_embeddings}; positions are sinusoidal so it runs, but the "
                      "model never saw such positions in training", LongInputWarning, stacklevel=3)
    return input_ids, attention_mask, inputs_embeds


def shift_tokens_right(labels, pad_token_id, decoder_start_token_id):
    """Decoder inputs from labels: start token, then labels[:-1]; -100 (ignored) becomes pad."""
    xp = B_.array_module(labels)
    shifted = xp.empty_like(labels)
    shifted[:, 1:] = labels[:, :-1]
    shifted[:, 0] = decoder_start_token_id
    return xp.where(shifted == -100, pad_token_id, shifted)


def cross_entropy(logits, labels):
    """Mean token cross-entropy over labels != -100 (torch.nn.CrossEntropyLoss's default)."""
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
    """PegasusXForConditionalGeneration.forward, same arguments and outputs (see Seq2SeqLMOutput)."""
    cfg, xp = model.config, model.xp
    dtype = B_.resolve_dtype(model.dtype, xp)
    params = model.params["model"]

    # Encoder (or reuse its outputs).
    if encoder_outputs is None:
        enc = model.encode(input_ids, attention_mask, inputs_embeds, output_attentions, output_hidden_states,
                           trace)
        attention_mask = None if attention_mask is None else as_mask(
            model, attention_mask, enc.last_hidden_state.shape[:2], "attention_mask")
    else:
        if not isinstance(encoder_outputs, EncoderOutput):
            if isinstance(encoder_outputs, (tuple, list)):
                encoder_outputs = EncoderOutput(*encoder_outputs)
            else:
                encoder_outputs = EncoderOutput(encoder_outputs)
        enc = encoder_outputs
        if attention_mask is not None:
            attention_mask = as_mask(model, attention_mask, enc.last_hidden_state.shape[:2], "attention_mask")
    enc_h = enc.last_hidden_state                                              # [B, T, M]
    cross_mask = None if attention_mask is None else \
        additive_mask(attention_mask, dtype, xp)[:, None, None, :]             # [B, 1, 1, T]

    # Decoder inputs.
    if labels is not None:
        labels = as_labels(model, labels)
        use_cache = False
        if decoder_input_ids is None and decoder_inputs_embeds is None:
            decoder_input_ids = shift_tokens_right(labels, cfg.pad_token_id, cfg.decoder_start_token_id)
    if decoder_input_ids is None and decoder_inputs_embeds is None:
        raise InputError("give decoder_input_ids (e.g. [[config.decoder_start_token_id]]), decoder_inputs_embeds "
                         "or labels")
    if decoder_input_ids is not None:
        decoder_input_ids = as_ids(model, decoder_input_ids, "decoder_input_ids")
        dshape = decoder_input_ids.shape
    else:
        decoder_inputs_embeds = B_.to_device(decoder_inputs_embeds, xp, dtype)
        dshape = decoder_inputs_embeds.shape[:2]
    if dshape[0] % enc_h.shape[0]:
        raise InputError(f"the decoder has {dshape[0]} rows, not a multiple of the encoder's batch "
                         f"{enc_h.shape[0]}")

    # Caches: cross keys/values once per input, self-attention keys/values of past steps.
    L = cfg.decoder_layers
    if past_key_values is not None:
        caches = tuple((pkv[0], pkv[1]) for pkv in past_key_values)
        kvs = tuple((pkv[2], pkv[3]) for pkv in past_key_values)
        past = caches[0][0].shape[2]
    else:
        caches, past = None, 0
        kvs = tuple(cross_kv(enc_h, params["decoder"]["layers"][i]["encoder_attn"], cfg.decoder_attention_heads)
                    for i in range(L))
    if decoder_attention_mask is not None:
        # Like the reference, the mask covers the cached steps and the new ones.
        decoder_attention_mask = as_mask(model, decoder_attention_mask, (dshape[0], past + dshape[1]),
                                         "decoder_attention_mask")

    h, new_caches, dhs, self_probs, cross_probs = decoder(
        params, cfg, kvs, cross_mask, decoder_input_ids, decoder_inputs_embeds, decoder_attention_mask,
        caches, output_hidden_states, trace, model.check_finite)
    logits = linear(h, model.lm_head_weight)                                   # [B*R, S, V]
    record(trace, "lm_head", logits)

    rows = dshape[0] // enc_h.shape[0]
    return Seq2SeqLMOutput(
        loss=None if labels is None else cross_entropy(logits, labels),
        logits=logits,
        past_key_values=tuple((c[0], c[1], kv[0], kv[1]) for c, kv in zip(new_caches, kvs))
        if (cfg.use_cache if use_cache is None else use_cache) else None,
        decoder_hidden_states=dhs,
        decoder_attentions=self_probs if output_attentions else None,
        cross_attentions=tuple(unstack_rows(c, rows) for c in cross_probs) if output_attentions else None,
        encoder_last_hidden_state=enc_h,
        encoder_hidden_states=enc.hidden_states,
        encoder_attentions=enc.attentions,
    )


def as_labels(model, labels):
    xp = model.xp
    labels = B_.to_numpy(labels) if isinstance(labels, (list, tuple)) else labels
    if not hasattr(labels, "dtype") or labels.dtype.kind not in "iu" or labels.ndim != 2:
        raise InputError("labels must be an integer array [batch, length] of token ids (-100 = ignore)")
    bad = (labels != -100) & ((labels < 0) | (labels >= model.config.vocab_size))
    if bool(bad.any()):
        raise InputError(f"labels hold ids outside [0, {model.config.vocab_size}) other than -100 (ignore)")
    return B_.to_device(labels, xp).astype("int64")


# ---------------------------------------------------------------------------------------------- loading
def from_pretrained(path, backend="numpy", dtype="float32", quantize=None) -> PegasusX:
    """Load a Hugging Face PEGASUS-X checkpoint directory (config.json + model.safetensors, sharded
    safetensors or pytorch_model.bin), weights moved to `backend` ('numpy' | 'cupy') once, in `dtype`.

    path=None loads the bundled demo model. dtype: 'float32' | 'float16' | 'bfloat16', the compute dtype
    (docs/precision.md). quantize: None | 'int8' | 'nf4', weight-only quantization of every linear layer
    (quantize.py); a directory written by quantize.save_quantized loads quantized as saved."""
    from .checkpoint import load_params
    from .checkpoint.names import require_float
    from .tree import flatten_params
    from .errors import CheckpointError
    from .limits import as_path, read_json

    if path is None:
        path = demo_model_path()
    path = as_path(path, CheckpointError)
    xp = B_.get_backend(backend)
    compute = B_.resolve_dtype(dtype, xp)
    config = PegasusXConfig.from_json_file(path)
    from .precision import assert_weights_fit
    from .quantize import check_mode, is_quantized, load_quantized, quantize_params, read_quant_config

    saved = read_quant_config(path)
    if saved is not None:  # written by quantize.save_quantized
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

    def place(a):  # every weight to the backend once; floating weights in the compute dtype
        if is_quantized(a):  # int8/nf4 container: codes and float32 scales as they are
            return a.to_device(xp)
        return B_.to_device(a, xp, compute if B_.is_floating(a.dtype) else None)

    params = B_.tree_map(place, params)
    assert_weights_fit(params, compute)  # float16 has no inf-free cast for weights past 65504
    gpath = os.path.join(path, "generation_config.json")
    gen = read_json(gpath, "generation_config.json") if os.path.isfile(gpath) else {}
    return PegasusX(config, params, backend, str(compute), gen, path)


def demo_model_path() -> str:
    """The bundled demo checkpoint (a small PEGASUS-X trained by tools/train_demo.py)."""
    return os.path.join(os.path.dirname(__file__), "data", "demo")
