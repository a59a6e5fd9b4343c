"""PegasusXConfig, field for field as transformers defines it, read from config.json.

The defaults are the config *class's* (gelu, 32 global tokens), which real checkpoints override
(relu, 128 global tokens): every field present in config.json wins, so always load the file.
All validation lives here, once.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field

from .errors import CheckpointNotFoundError, ConfigError

# Activations the FFN implements (transformers' ACT2FN names).
ACTIVATIONS = ("relu", "gelu", "gelu_new", "gelu_fast", "gelu_pytorch_tanh", "quick_gelu", "silu", "swish",
               "tanh", "sigmoid")


@dataclass(frozen=True)
class PegasusXConfig:
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
        def positive_int(name):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"config field {name} must be a positive integer, got {v!r}")

        if self.model_type != "pegasus_x":
            raise ConfigError(
                f"model_type is {self.model_type!r}, but minipegx only runs 'pegasus_x' checkpoints "
                "(google/pegasus-x-base, -large and their fine-tunes)"
            )
        for name in ("vocab_size", "max_position_embeddings", "encoder_layers", "encoder_ffn_dim",
                     "encoder_attention_heads", "decoder_layers", "decoder_ffn_dim", "decoder_attention_heads",
                     "d_model", "block_size"):
            positive_int(name)
        # 0 is allowed (transformers accepts it): an encoder of block-local attention only, as in the
        # demo's no-global ablation sibling (minipegx/data/demo_noglobal).
        if isinstance(self.num_global_tokens, bool) or not isinstance(self.num_global_tokens, int) \
                or self.num_global_tokens < 0:
            raise ConfigError(f"config field num_global_tokens must be a non-negative integer, got "
                              f"{self.num_global_tokens!r}")
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
            raise ConfigError(f"unknown activation_function {self.activation_function!r}; "
                              f"minipegx implements {', '.join(ACTIVATIONS)}")
        for name in ("pad_token_id", "decoder_start_token_id"):
            v = getattr(self, name)
            if v is None or isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < self.vocab_size:
                raise ConfigError(f"config field {name} must be a token id in [0, {self.vocab_size}), got {v!r}")
        for name in ("eos_token_id", "forced_eos_token_id"):
            v = getattr(self, name)
            ids = v if isinstance(v, list) else [] if v is None else [v]
            for i in ids:
                if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < self.vocab_size:
                    raise ConfigError(f"config field {name} must hold token ids in [0, {self.vocab_size}), got {v!r}")

    # ------------------------------------------------------------------ derived sizes
    @property
    def encoder_head_dim(self) -> int:
        return self.d_model // self.encoder_attention_heads

    @property
    def decoder_head_dim(self) -> int:
        return self.d_model // self.decoder_attention_heads

    def is_staggered(self, layer: int) -> bool:
        """Odd encoder layers shift their blocks by half a block (paper §3.1, 'staggered blocks')."""
        return self.stagger_local_blocks and layer % 2 == 1

    # ------------------------------------------------------------------ reading and writing
    @classmethod
    def from_dict(cls, d: dict) -> "PegasusXConfig":
        if not isinstance(d, dict):
            raise ConfigError(f"a config must be a JSON object, got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        if "model_type" not in d:
            raise ConfigError("config.json has no model_type; a PEGASUS-X config says \"model_type\": \"pegasus_x\"")
        known = {k: v for k, v in d.items() if k in names}
        extra = {k: v for k, v in d.items() if k not in names}
        for k in ("encoder_layerdrop", "decoder_layerdrop", "dropout", "attention_dropout",
                  "activation_dropout", "init_std"):
            if k in known and not isinstance(known[k], (int, float)):
                raise ConfigError(f"config field {k} must be a number, got {known[k]!r}")
        return cls(**known, extra=extra)

    @classmethod
    def from_json_file(cls, path) -> "PegasusXConfig":
        path = os.fspath(path)
        if os.path.isdir(path):
            path = os.path.join(path, "config.json")
        if not os.path.isfile(path):
            raise CheckpointNotFoundError(f"no config.json at {path}: a checkpoint directory needs the model's "
                                          "config.json beside its weights")
        try:
            with open(path, encoding="utf-8") as f:
                d = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path} is not valid JSON ({e}); re-download or re-save the config") from e
        try:
            return cls.from_dict(d)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        return {**self.extra, **d}

    def replace(self, **changes) -> "PegasusXConfig":
        return dataclasses.replace(self, **changes)
