"""Train a sentencepiece model laid out like Pegasus' own spiece.model.

Pegasus' spiece.model is a unigram model whose first three pieces are ``<pad>`` (id 0), ``</s>``
(id 1) and ``<unk>`` (id 2), with no ``<s>``; text is normalized with ``nmt_nfkc``, and a dummy
``▁`` is put in front of the text. transformers' PegasusTokenizer (and minipegx.Tokenizer) drop
pieces 0 and 1, put their own 105 special tokens in front (``<pad>``, ``</s>``, ``<mask_1>``,
``<mask_2>``, ``<unk_2>`` .. ``<unk_102>``) and shift every other piece by offset 103, so
``<unk>`` becomes id 105. A model trained here loads in both.

Training is deterministic: a fixed random seed, one thread, every input sentence used.

As a library (tools/train_demo.py does this)::

    from train_spm import train_spm
    model_path = train_spm(["first document ...", "second ..."], "out/spiece", vocab_size=8000)

As a script::

    python -m tools.train_spm corpus.txt out/spiece --vocab-size 8000
"""

from __future__ import annotations

import argparse
import io
import os
from collections.abc import Iterable

import sentencepiece as spm

# Pegasus' piece layout inside sentencepiece (before the tokenizer's offset of 103).
PEGASUS_LAYOUT = dict(
    pad_id=0, pad_piece="<pad>",
    eos_id=1, eos_piece="</s>",
    unk_id=2, unk_piece="<unk>",
    bos_id=-1,                                   # Pegasus has no <s>
)


def train_spm(
    texts_or_file: str | os.PathLike | Iterable[str],
    model_prefix: str | os.PathLike,
    vocab_size: int = 8000,
    *,
    character_coverage: float = 1.0,
    seed: int = 0,
    hard_vocab_limit: bool = True,
    **sentencepiece_options,
) -> str:
    """Train a Pegasus-layout unigram sentencepiece model; return the path of ``<model_prefix>.model``.

    texts_or_file: a path to a UTF-8 text file (one sentence per line), or an iterable of texts
        (each text is split into lines; empty lines are skipped).
    model_prefix: where to write, e.g. ``"ckpt/spiece"`` writes ckpt/spiece.model and ckpt/spiece.vocab.
    vocab_size: number of sentencepiece pieces, the three specials included; the tokenizer's vocab
        is this plus 103.
    character_coverage: share of characters the vocab must cover (1.0: every character seen).
    seed: random seed of sentencepiece's trainer (with one thread the result is byte-for-byte stable).
    hard_vocab_limit: False lets a small corpus give fewer pieces than vocab_size instead of failing.
    sentencepiece_options: any further SentencePieceTrainer option, passed through unchanged.
    """
    model_prefix = os.fspath(model_prefix)
    options = dict(
        model_type="unigram",
        vocab_size=vocab_size,
        character_coverage=character_coverage,
        normalization_rule_name="nmt_nfkc",      # what Pegasus' spiece.model uses
        add_dummy_prefix=True,                   # PegasusTokenizer always prepends "▁"
        remove_extra_whitespaces=True,
        byte_fallback=False,
        hard_vocab_limit=hard_vocab_limit,
        num_threads=1,                           # determinism: no multi-threaded float sums
        input_sentence_size=0,                   # determinism: use every sentence, no sampling
        shuffle_input_sentence=False,
        minloglevel=2,                           # quiet; errors still raise
        **PEGASUS_LAYOUT,
    )
    options.update(sentencepiece_options)

    directory = os.path.dirname(model_prefix)
    if directory:
        os.makedirs(directory, exist_ok=True)
    spm.set_random_generator_seed(seed)

    if isinstance(texts_or_file, (str, os.PathLike)):
        path = os.fspath(texts_or_file)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"train_spm: no text file at {path!r} (pass a path to a UTF-8 file, or a list of texts)"
            )
        spm.SentencePieceTrainer.train(input=path, model_prefix=model_prefix, **options)
        return model_prefix + ".model"

    lines = [line for text in texts_or_file for line in str(text).splitlines() if line.strip()]
    if not lines:
        raise ValueError("train_spm: the texts are empty; give at least a few KB of text")
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=model, **options)
    with open(model_prefix + ".model", "wb") as f:
        f.write(model.getvalue())
    _write_vocab(model.getvalue(), model_prefix + ".vocab")
    return model_prefix + ".model"


def _write_vocab(model_bytes: bytes, path: str) -> None:
    """Write the human-readable ``piece<TAB>score`` list that sentencepiece writes beside a model."""
    sp = spm.SentencePieceProcessor(model_proto=model_bytes)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(sp.get_piece_size()):
            f.write(f"{sp.id_to_piece(i)}\t{sp.get_score(i):g}\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("input", help="UTF-8 text file, one sentence per line")
    parser.add_argument("model_prefix", help="output prefix, e.g. ckpt/spiece -> ckpt/spiece.model")
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--character-coverage", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--soft-vocab-limit", action="store_true",
                        help="allow fewer pieces than --vocab-size on a small corpus")
    args = parser.parse_args(argv)
    path = train_spm(args.input, args.model_prefix, vocab_size=args.vocab_size,
                     character_coverage=args.character_coverage, seed=args.seed,
                     hard_vocab_limit=not args.soft_vocab_limit)
    print(path)


if __name__ == "__main__":
    main()
