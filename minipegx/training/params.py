"""The model's trainable parameters by the names transformers' named_parameters() gives them.

minipegx keeps the checkpoint's tree (model.params["model"]["encoder"]["layers"][0]["fc1"]["weight"]); its
dotted names are transformers' own, and the tied token embedding is there once, as model.shared.weight
(lm_head.weight and the encoder's/decoder's embed_tokens.weight only where a checkpoint unties them), which is
the name transformers keeps for it. PEGASUS-X has no final_logits_bias and no learned positions.
"""

from __future__ import annotations

from ..errors import InputError
from ..quantize import is_quantized
from ..tree import flatten_params


def named_parameters(model) -> dict:
    """{transformers name: array} of every parameter; the arrays are model.params' own (not copies), so an
    in-place update (p -= lr * g) changes the model. (float32 weights loaded from safetensors are read-only
    memory maps until replaced by copies, which AdamW(model) does.)"""
    return flatten_params(model.params)


def check_trainable(model):
    """Training computes in float32 or float64 on unquantized weights; anything else is refused by name."""
    from ..inputs import check_model

    check_model(model)
    params = named_parameters(model)
    quantized = [n for n, a in params.items() if is_quantized(a)]
    if quantized:
        raise InputError(f"{len(quantized)} weights are quantized (e.g. {quantized[0]}): training needs float weights; "
                         "load the checkpoint with quantize=None")
    if str(model.dtype) not in ("float32", "float64"):
        raise InputError(f"training computes in float32 or float64, and this model is loaded in {model.dtype}; "
                         "load it with from_pretrained(..., dtype='float32') (or 'float64' for gradient checks)")
    return params


def grads_by_name(tree) -> dict:
    """A gradient tree (the parameter tree's shape) -> {transformers name: array}."""
    return flatten_params(tree)
