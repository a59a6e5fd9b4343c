"""Training PEGASUS-X in NumPy/CuPy: hand-written backward passes, no autograd engine (docs/training.md).

    from minipegx.training import loss_and_grads, named_parameters
    model = minipegx.from_pretrained(path, dtype="float64")           # or float32
    loss, grads = loss_and_grads(model, input_ids, attention_mask, labels, label_smoothing=0.1)
    grads["model.encoder.layers.0.self_attn.q_proj.weight"]           # transformers' named_parameters() names

The backward functions sit beside their forward ones (layers.py, encoder.py, decoder.py, each in a section
"backward passes (training)" at its end; their math in brief: docs/backward.md); loss.py runs them over the
whole model; params.py names the parameters.
"""

from .loss import cross_entropy_backward, cross_entropy_forward, loss_and_grads  # noqa: F401
from .params import named_parameters  # noqa: F401

# --- train-app exports (optimizer, schedule, train_step, finetune) below this line ---
from .optim import AdamW, decay_matrices_only  # noqa: F401,E402
from .schedule import Schedule  # noqa: F401,E402
from .step import Batch, StepStats, clip_grad_norm, train_step  # noqa: F401,E402
from .finetune import FinetuneResult, finetune  # noqa: F401,E402
