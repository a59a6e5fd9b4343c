"""The loss and the whole model's backward pass: loss_and_grads.

The forward runs the training forwards beside the inference ones (encoder_forward, decoder_forward, each
keeping its caches), then the backward walks back through them: cross entropy -> LM head -> decoder layers
(last first) -> the encoder's output -> encoder layers (last first) -> the embeddings. The tied token table
collects three gradients: the LM head's, the decoder's embedding's and the encoder's.
Shape legend: B batch, T tokens, S decoder steps, M d_model, V vocab.
"""

from __future__ import annotations

from typing import NamedTuple

from ..backend import array_module
from ..decoder import decoder_backward, decoder_forward
from ..encoder import encoder_backward, encoder_forward
from ..errors import InputError
from ..inputs import as_labels, as_mask, check_encoder_inputs
from ..layers import additive_mask, linear_backward, linear_forward
from ..model import shift_tokens_right
from .params import check_trainable, grads_by_name


class CrossEntropyCache(NamedTuple):
    """What cross_entropy_backward reads."""
    probs: object                              # [B, S, V] softmax of the logits
    targets: object                            # [B, S] label ids, 0 where ignored
    valid: object                              # [B, S] 1.0 where the label counts, 0.0 where it is -100
    count: int                                 # labels that count (the mean's denominator)
    smoothing: float


def cross_entropy_forward(logits, labels, label_smoothing=0.0):
    """torch.nn.functional.cross_entropy(logits, labels, ignore_index=-100, label_smoothing=eps), mean over the
    labels that are not -100: per label (1 - eps) (-log p_label) + eps mean_v(-log p_v).
    logits [B, S, V], labels [B, S]. Returns the loss (a 0-d array) and the cache."""
    xp = array_module(logits)
    V = logits.shape[-1]
    valid = labels != -100                                                # [B, S]
    count = int(valid.sum())
    if count == 0:
        raise InputError("every label is -100 (ignored): there is no token to compute a loss on")
    targets = xp.where(valid, labels, 0)                                  # [B, S]
    shifted = logits - logits.max(axis=-1, keepdims=True)                 # [B, S, V]
    logp = shifted - xp.log(xp.exp(shifted).sum(axis=-1, keepdims=True))  # [B, S, V] log-softmax
    nll = -xp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]  # [B, S]
    per_label = (1.0 - label_smoothing) * nll - label_smoothing * logp.sum(axis=-1) / V  # [B, S]
    valid = valid.astype(logits.dtype)
    loss = (per_label * valid).sum() / count
    return loss, CrossEntropyCache(xp.exp(logp), targets, valid, count, label_smoothing)


def cross_entropy_backward(cache):
    """d loss / d logits [B, S, V] = (softmax - smoothed one-hot) / count on the counted labels, 0 elsewhere;
    the smoothed one-hot is (1 - eps) at the label plus eps / V everywhere."""
    xp = array_module(cache.probs)
    V = cache.probs.shape[-1]
    dlogits = cache.probs - cache.smoothing / V                           # [B, S, V]
    rows = xp.arange(dlogits.shape[0])[:, None]                           # [B, 1]
    cols = xp.arange(dlogits.shape[1])[None, :]                           # [1, S]
    dlogits[rows, cols, cache.targets] -= 1.0 - cache.smoothing           # [B, S] the labels' entries
    dlogits *= (cache.valid / cache.count)[..., None]                     # [B, S, 1]
    return dlogits


def loss_and_grads(model, input_ids, attention_mask, labels, decoder_attention_mask=None, label_smoothing=0.0,
                   recompute=False):
    """The loss of PegasusXForConditionalGeneration(input_ids, attention_mask, labels=labels,
    decoder_attention_mask=...) and the gradient of every parameter.

    Decoder inputs are the labels shifted right (decoder_start_token_id first, -100 read as pad), as
    transformers does; the loss is the mean cross entropy over labels that are not -100, with optional label
    smoothing (the PEGASUS-X paper fine-tunes with 0.1). No dropout: the gradient of the eval-mode model.
    recompute=True keeps only each layer's inputs during the forward and recomputes the layer inside the
    backward (less memory, about one more forward pass of time); the gradients are the same.
    Returns (loss as a Python float, {transformers named_parameters() name: gradient}), each gradient of its
    parameter's shape and the model's dtype, on the model's backend; the tied embedding once, under
    model.shared.weight."""
    params = check_trainable(model)
    if not isinstance(label_smoothing, (int, float)) or isinstance(label_smoothing, bool) \
            or not 0.0 <= label_smoothing <= 1.0:
        raise InputError(f"label_smoothing must be a number in [0, 1], got {label_smoothing!r}")
    cfg, tree = model.config, model.params["model"]
    input_ids, attention_mask, _ = check_encoder_inputs(model, input_ids, attention_mask, None)
    if attention_mask is None:
        attention_mask = model.xp.ones(input_ids.shape, dtype="int64")   # [B, T]
    labels = as_labels(model, labels)
    if labels.shape[0] != input_ids.shape[0]:
        raise InputError(f"labels have {labels.shape[0]} rows but input_ids {input_ids.shape[0]}; give one "
                         "label sequence per input")
    if decoder_attention_mask is not None:
        decoder_attention_mask = as_mask(model, decoder_attention_mask, labels.shape, "decoder_attention_mask")
    decoder_input_ids = shift_tokens_right(labels, cfg.pad_token_id, cfg.decoder_start_token_id)  # [B, S]

    # Forward, keeping the caches.
    enc, enc_cache = encoder_forward(tree, cfg, input_ids, attention_mask, recompute)       # [B, T, M]
    cross_mask = additive_mask(attention_mask, enc.dtype, model.xp)[:, None, None, :]     # [B, 1, 1, T]
    h, dec_cache = decoder_forward(tree, cfg, decoder_input_ids, enc, cross_mask, decoder_attention_mask,
                                   recompute)                                              # [B, S, M]
    logits, head_cache = linear_forward(h, model.lm_head_weight)                           # [B, S, V]
    loss, loss_cache = cross_entropy_forward(logits, labels, float(label_smoothing))
    del logits

    # Backward, in the reverse order.
    dlogits = cross_entropy_backward(loss_cache)                                           # [B, S, V]
    del loss_cache
    dh, head = linear_backward(dlogits, head_cache, bias=False)                            # [B, S, M], [V, M]
    del dlogits, head_cache
    decoder_grads, denc, dec_table = decoder_backward(dh, dec_cache)                       # ..., [B, T, M], [V, M]
    del dec_cache
    encoder_grads, enc_table = encoder_backward(denc, enc_cache)                           # ..., [V, M]

    grads = {"model": {"encoder": encoder_grads, "decoder": decoder_grads}}
    shared = None                                                       # the tied table's gradient, accumulated
    for tied, g in (("lm_head", head["weight"]), ("model.encoder.embed_tokens", enc_table),
                    ("model.decoder.embed_tokens", dec_table)):
        if f"{tied}.weight" in params:                                  # untied in this checkpoint: its own
            node = grads
            for part in tied.split("."):
                node = node.setdefault(part, {})
            node["weight"] = g
        elif shared is None:
            shared = g
        else:
            shared += g
    if shared is None:                                                  # all three untied: shared is unread
        shared = model.xp.zeros_like(params["model.shared.weight"])
    grads["model"]["shared"] = {"weight": shared}
    grads = grads_by_name(grads)
    missing = set(params) ^ set(grads)
    assert not missing, f"gradient names differ from the parameters': {sorted(missing)}"
    return float(loss), grads
