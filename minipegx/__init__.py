"""minipegx: PEGASUS-X (Phang, Zhao & Liu 2022) from scratch, as small array functions over NumPy / CuPy.

    import minipegx
    model = minipegx.from_pretrained("path/to/pegasus-x-base")     # or None: the bundled demo model
    tok = minipegx.Tokenizer.from_pretrained("path/to/pegasus-x-base")
    batch = tok(["a long document ..."], return_tensors="np")
    out = model(**batch, decoder_input_ids=[[0]])                   # .logits [B, S, V]
    ids = model.generate(batch["input_ids"], batch["attention_mask"], num_beams=4)
    minipegx.summarize(["a long document ..."])                     # text in, summary out
"""

from .errors import *  # noqa: F401,F403  (MiniPegxError and friends)

__version__ = "0.1.0"

_LAZY = {
    "Tokenizer": ("tokenizer", "Tokenizer"),
    "summarize": ("pipeline", "summarize"),
    "PegasusXConfig": ("config", "PegasusXConfig"),
    **{name: ("model", name) for name in ("EncoderOutput", "PegasusX", "Seq2SeqLMOutput", "demo_model_path",
                                           "from_pretrained")},
}


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


def __getattr__(name):
    # NumPy and the model load on first use, so `import minipegx` (and the CLI's start-up, where Ctrl-C
    # must already be handled) stays light.
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(f".{module}", __name__), attr)
    raise AttributeError(f"module 'minipegx' has no attribute {name!r}")


def example_document() -> str:
    """The bundled long example document (held out from the demo model's training)."""
    import os

    with open(os.path.join(os.path.dirname(__file__), "data", "example_document.txt"), encoding="utf-8") as f:
        return f.read()
