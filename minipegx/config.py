"""PegasusXConfig, field for field as transformers defines it, read from config.json.

The defaults are the config *class's* (gelu, 32 global tokens), which real checkpoints override
(relu, 128 global tokens): every field present in config.json wins, so always load the file.
All validation lives here, once.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field

from . import limits
from .errors import CheckpointNotFoundError, ConfigError
from .limits import bounded_repr

# Activations the FFN implements (transformers' ACT2FN names).
ACTIVATIONS = ("relu", "gelu", "gelu_new", "gelu_fast", "gelu_pytorch_tanh", "quick_gelu", "silu", "swish",
               "tanh", "sigmoid")

# Each size field and the limit (limits.py) that bounds it: a config.json is untrusted input, and
# encoder_layers 10000000 or block_size 2**30 would exhaust memory long before any weight is read.
SIZE_FIELDS = {"vocab_size": "max_vocab_size", "max_position_embeddings": "max_position_embeddings",
               "encoder_layers": "max_layers", "decoder_layers": "max_layers", "encoder_ffn_dim": "max_ffn_dim",
               "decoder_ffn_dim": "max_ffn_dim", "encoder_attention_heads": "max_heads",
               "decoder_attention_heads": "max_heads", "d_model": "max_d_model", "block_size": "max_block_size",
               "num_global_tokens": "max_global_tokens"}
BOOL_FIELDS = ("use_cache", "is_encoder_decoder", "scale_embedding", "stagger_local_blocks", "tie_word_embeddings")
FLOAT_FIELDS = ("encoder_layerdrop", "decoder_layerdrop", "dropout", "attention_dropout", "activation_dropout",
                "init_std")


@dataclass(frozen=True)
class PegasusXConfig:
    """transformers' PegasusXConfig, field for field (vocab_size V, d_model M, encoder_layers,
    encoder_attention_heads H, encoder_ffn_dim F, the decoder's three, block_size K, num_global_tokens G,
    stagger_local_blocks, activation_function, scale_embedding, max_position_embeddings, the special token
    ids, tie_word_embeddings, the dropouts, ...), frozen; unknown config.json keys are kept in ``extra``.
    The defaults are the class's (gelu, 32 global tokens), which real checkpoints override (relu, 128):
    always load config.json. Validation happens on construction and raises ConfigError naming the field."""
    vocab_size: int = 96103
    max_position_embeddings: int = 16384
    encoder_layers: int = 16
    encoder_ffn_dim: int = 4096
    encoder_attention_heads: int = 16
    decoder_layers: int = 16
    decoder_ffn_dim: int = 4096
    decoder_attention_heads: int = 16
    encoder_layerdrop: float = 0.0
    decoder_layerdrop: float = 0.0
    use_cache: bool = True
    is_encoder_decoder: bool = True
    activation_function: str = "gelu"
    d_model: int = 1024
    dropout: float = 0.1
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    init_std: float = 0.02
    decoder_start_token_id: int | None = 0
    scale_embedding: bool = True
    pad_token_id: int | None = 0
    eos_token_id: int | list | None = 1
    forced_eos_token_id: int | list | None = 1
    num_global_tokens: int = 32
    block_size: int = 512
    stagger_local_blocks: bool = True
    tie_word_embeddings: bool = True
    model_type: str = "pegasus_x"
    # Fields of config.json that PegasusXConfig does not define (architectures, torch_dtype, ...).
    extra: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self):
        self.validate()

    # ------------------------------------------------------------------ validation, in one place
    def validate(self) -> None:
        """Types first (every field), then bounds (limits.py), then consistency between fields."""
        lim = limits.current()
        for name, bound in SIZE_FIELDS.items():
            v = getattr(self, name)
            # num_global_tokens may be 0, as transformers accepts: block-local attention only (the demo's
            # no-global ablation sibling, minipegx/data/demo_long_noglobal).
            low = 0 if name == "num_global_tokens" else 1
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                kind = "a non-negative" if low == 0 else "a positive"
                raise ConfigError(f"config field {name} must be {kind} integer, got {bounded_repr(v)}")
            if v > getattr(lim, bound):
                raise ConfigError(f"config field {name}: " + limits.over_limit("it", v, bound))
        for name in BOOL_FIELDS:
            v = getattr(self, name)
            if not isinstance(v, bool):
                raise ConfigError(f"config field {name} must be true or false (a JSON boolean), got "
                                  f"{bounded_repr(v)}; transformers would treat any non-empty string, even "
                                  "\"false\", as true, so minipegx refuses to guess")
        for name in FLOAT_FIELDS:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ConfigError(f"config field {name} must be a finite number, got {bounded_repr(v)}")
        for name in ("activation_function", "model_type"):
            if not isinstance(getattr(self, name), str):
                raise ConfigError(f"config field {name} must be a string, got {bounded_repr(getattr(self, name))}")
        if self.model_type != "pegasus_x":
            raise ConfigError(
                f"model_type is {bounded_repr(self.model_type)}, but minipegx only runs 'pegasus_x' checkpoints "
                "(google/pegasus-x-base, -large and their fine-tunes)"
            )
        for heads in ("encoder_attention_heads", "decoder_attention_heads"):
            if self.d_model % getattr(self, heads):
                raise ConfigError(f"d_model ({self.d_model}) must be divisible by {heads} "
                                  f"({getattr(self, heads)})")
        if self.d_model % 2 or self.d_model < 4:
            raise ConfigError(f"d_model must be even and >= 4 for the sinusoidal positions, got {self.d_model}")
        if self.stagger_local_blocks and self.block_size % 2:
            raise ConfigError(f"block_size ({self.block_size}) must be even when stagger_local_blocks is on "
                              "(staggered layers shift blocks by block_size / 2)")
        if self.activation_function not in ACTIVATIONS:
            raise ConfigError(f"unknown activation_function {bounded_repr(self.activation_function)}; "
                              f"minipegx implements {', '.join(ACTIVATIONS)}")
        for name in ("pad_token_id", "decoder_start_token_id"):
            v = getattr(self, name)
            if v is None or isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < self.vocab_size:
                raise ConfigError(f"config field {name} must be a token id in [0, {self.vocab_size}), got "
                                  f"{bounded_repr(v)}")
        for name in ("eos_token_id", "forced_eos_token_id"):
            v = getattr(self, name)
            ids = v if isinstance(v, list) else [] if v is None else [v]
            for i in ids:
                if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < self.vocab_size:
                    raise ConfigError(f"config field {name} must hold token ids in [0, {self.vocab_size}), got "
                                      f"{bounded_repr(v)}")

    # ------------------------------------------------------------------ derived sizes
    @property
    def encoder_head_dim(self) -> int:
        """D of the encoder: d_model / encoder_attention_heads."""
        return self.d_model // self.encoder_attention_heads

    @property
    def decoder_head_dim(self) -> int:
        """D of the decoder: d_model / decoder_attention_heads."""
        return self.d_model // self.decoder_attention_heads

    def is_staggered(self, layer: int) -> bool:
        """Odd encoder layers shift their blocks by half a block (paper §3.1, 'staggered blocks')."""
        return self.stagger_local_blocks and layer % 2 == 1

    # ------------------------------------------------------------------ reading and writing
    @classmethod
    def from_dict(cls, d: dict) -> "PegasusXConfig":
        """A validated config from config.json's dict; keys that are no field are kept in ``extra``."""
        if not isinstance(d, dict):
            raise ConfigError(f"a config must be a JSON object, got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        if "model_type" not in d:
            raise ConfigError("config.json has no model_type; a PEGASUS-X config says \"model_type\": \"pegasus_x\"")
        known = {k: v for k, v in d.items() if k in names}
        extra = {k: v for k, v in d.items() if k not in names}
        return cls(**known, extra=extra)

    @classmethod
    def from_json_file(cls, path) -> "PegasusXConfig":
        """From config.json, or a checkpoint directory holding it."""
        path = limits.as_path(path, ConfigError)
        if os.path.isdir(path):
            path = os.path.join(path, "config.json")
        if not os.path.exists(path):
            raise CheckpointNotFoundError(f"no config.json at {path}: a checkpoint directory needs the model's "
                                          "config.json beside its weights")
        d = limits.read_json(path, "config.json")
        try:
            return cls.from_dict(d)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None

    def to_dict(self) -> dict:
        """config.json's dict: every field, and the ``extra`` keys it was read with."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        return {**self.extra, **d}

    def replace(self, **changes) -> "PegasusXConfig":
        """A validated copy with some fields changed, e.g. ``replace(block_size=T, stagger_local_blocks=False)``."""
        return dataclasses.replace(self, **changes)
