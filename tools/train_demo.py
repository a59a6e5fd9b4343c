"""Train the small demo PEGASUS-X that ships as minipegx's default model (a tool, not the runtime).

    python -m tools.train_demo --out minipegx/data/demo            # the full recipe (~43 min on 2 idle CPU cores)
    python -m tools.train_demo --out /tmp/pilot --pilot            # a 2-3 minute check that loss falls

Steps, all seeded (see docs/demo_model.md):
  1. generate text with tools/demo_data.py and train a sentencepiece vocabulary in Pegasus' layout
     (<pad>=0, </s>=1, <unk>=2; transformers' PegasusTokenizer adds its 103 offset on top);
  2. build a PegasusXForConditionalGeneration with every config field explicit (relu, tied head,
     block-local + staggered + global-token encoder attention);
  3. train it on fresh documents per step with a length curriculum (short documents first), AdamW,
     linear warmup then cosine decay, writing a usable checkpoint every few hundred steps;
  4. evaluate on held-out documents with tools/eval_demo.py.

Uses torch + transformers + sentencepiece (+ protobuf, for add_word_pieces); none is needed to *run* the shipped model.
Determinism: the data of step i depends only on (SEED, i), and torch is seeded, so a rerun on the
same machine gives the same checkpoint; torch CPU kernels do not promise the same bits elsewhere.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import tempfile
import time

from tools import demo_data
from tools.train_spm import train_spm

SEED = 1234
EXAMPLE_SEED = 2024             # the bundled example document (a stream neither training nor eval uses)
EXAMPLE_TOKENS = 2500
SPM_VOCAB = 400                 # pieces sentencepiece trains (it cannot train more on this corpus, see below)
SPM_TEXT_DOCS = 400             # generated documents the vocabulary is trained on
WORD_PIECES = True              # then add every word of the corpus as one piece (add_word_pieces)

MODEL = dict(
    d_model=128,
    encoder_layers=3,
    decoder_layers=2,
    encoder_attention_heads=4,
    decoder_attention_heads=4,
    encoder_ffn_dim=256,
    decoder_ffn_dim=512,
    num_global_tokens=16,
    block_size=64,
    stagger_local_blocks=True,
    activation_function="relu",
    dropout=0.0,                # every training document is fresh and seen once: nothing to regularise
    attention_dropout=0.0,
    activation_dropout=0.0,
    encoder_layerdrop=0.0,
    decoder_layerdrop=0.0,
    init_std=0.05,              # ~1/sqrt(2 d_model); the library default 0.02 is sized for d_model 768-1024
    scale_embedding=True,
    tie_word_embeddings=True,
    max_position_embeddings=16384,
    pad_token_id=0,
    eos_token_id=1,
    forced_eos_token_id=1,
    decoder_start_token_id=0,
    use_cache=True,
    is_encoder_decoder=True,
)

# Curriculum: stages of (name, steps, min_tokens, max_tokens, tokens_per_batch, lr, warmup). Each stage
# starts a fresh AdamW with linear warmup then cosine decay to 5% of its lr. Each batch draws one target
# length and fills up to tokens_per_batch with documents of about that length (little padding).
# The "bootstrap" stage is what makes the task learnable in minutes: with 100-160-token documents the
# key sentences are a large share of the input, and copying (attend to the slot, emit its token)
# appears within ~300 steps; at 300-1,000 tokens from scratch the loss sat on the "guess the slots
# from their priors" plateau (~1.18 nats/token) for 1,200+ steps.
STAGES = [
    ("bootstrap", 600, 40, 160, 3000, 2e-3, 100),
    ("medium", 600, 300, 1200, 6000, 1.5e-3, 50),
    ("long", 7000, 500, 4000, 8000, 1e-3, 100),
    ("polish", 1400, 300, 4000, 8000, 3e-4, 50),   # added after "long" gave 85% exact match (greedy, held out)
]
PILOT_STAGES = [("bootstrap", 150, 40, 160, 3000, 2e-3, 100)]
EMBED_INIT_STD = 0.1            # token embeddings (x sqrt(d_model) = 11.3): norm ~12.8 against the sinusoidal
                                # positions' 8, so token identity is not drowned by position at the start;
                                # with the library's 0.02 (norm 2.6) copying had not appeared after 1,200 steps
WEIGHT_DECAY = 0.01
CLIP = 1.0
SAVE_EVERY = 100
THREADS = 2                     # measured on an idle 2-core machine: 2 threads 1.8x faster than 1; but when other
                                # jobs share the cores, use --threads 1 (OpenMP barrier stalls made 2 threads ~5x
                                # slower than 1 there). The thread count is part of bitwise determinism.

GENERATION = dict(
    num_beams=4,
    length_penalty=1.0,         # neutral: the number of facts is set by the document, not a preference
    max_length=128,             # 5 facts x ~12 tokens + </s> fits with room to spare
    early_stopping=True,
    no_repeat_ngram_size=0,     # facts may legitimately repeat words ("carried 12 ... carried 40 ...")
)


def train_sentencepiece(out_dir: str) -> str:
    """spiece.model in Pegasus' layout, through the project's tokenizer recipe (tools/train_spm.py)."""
    texts = []
    for doc, summ in demo_data.make_dataset(SEED + 1, SPM_TEXT_DOCS, 300, 2000):
        texts += doc.split("\n\n") + [summ]
    prefix = os.path.join(out_dir, "spiece")
    train_spm(texts, prefix, vocab_size=SPM_VOCAB)
    for ext in (".vocab",):
        if os.path.exists(prefix + ext):
            os.unlink(prefix + ext)
    if WORD_PIECES:
        add_word_pieces(prefix + ".model", texts)
    return prefix + ".model"


def add_word_pieces(model_path: str, texts) -> int:
    """Give every word of the corpus its own piece, so a name, a number or a place is one token.

    sentencepiece's unigram trainer stops at 424 pieces on this corpus (whatever vocab_size asks; its
    pruning keeps "▁to" + "wn" over "▁town"), which split names into up to 5 pieces; a slot copied piece
    by piece is a slot half-copied ("7" for "70"). Each missing word "▁w" is appended as a NORMAL piece
    scored log(count / total count), its unigram log-probability, which beats the sum of its parts', so
    the model stays a plain unigram spiece.model: sentencepiece and transformers' PegasusTokenizer
    segment with the same scores and give the same ids (load_tokenizer checks). Returns the pieces added."""
    import collections
    import math
    import re

    from sentencepiece import sentencepiece_model_pb2 as pb
    model = pb.ModelProto()
    with open(model_path, "rb") as f:
        model.ParseFromString(f.read())
    have = {p.piece for p in model.pieces}
    counts = collections.Counter(w for t in texts for w in re.findall(r"[A-Za-z0-9]+", t))
    total = sum(counts.values())
    added = 0
    for word, count in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):   # deterministic order
        if "\u2581" + word not in have:
            piece = model.pieces.add()
            piece.piece, piece.score, piece.type = "\u2581" + word, math.log(count / total), piece.NORMAL
            added += 1
    with open(model_path, "wb") as f:
        f.write(model.SerializeToString())
    return added


def load_tokenizer(model_dir: str):
    from transformers import PegasusTokenizer
    tok = PegasusTokenizer.from_pretrained(model_dir)
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=os.path.join(model_dir, "spiece.model"))
    # Pegasus' layout: sp ids 0 pad, 1 eos, 2 unk; the tokenizer keeps pad/eos and shifts the rest by 103.
    assert (sp.pad_id(), sp.eos_id(), sp.unk_id(), sp.bos_id()) == (0, 1, 2, -1)
    assert len(tok) == sp.get_piece_size() + 103, (len(tok), sp.get_piece_size())
    assert (tok.pad_token_id, tok.eos_token_id) == (0, 1)
    probes = ["According to the town ledger, Mirela carried 47 lanterns to Ostbridge."]
    probes += [text for i in range(5) for text in demo_data.make_example(random.Random(SEED + 7 + i), 1500)]
    for probe in probes:
        assert tok(probe).input_ids == [i + 103 for i in sp.encode(probe)] + [1], probe[:80]
    return tok


def make_batch(tok, step: int, min_tokens: int, max_tokens: int, tokens_per_batch: int):
    """The batch of training step `step`: a pure function of (SEED, step)."""
    rng = random.Random(SEED * 1_000_003 + step)
    target = rng.randint(min_tokens, max_tokens)
    n = max(1, tokens_per_batch // target)
    pairs = [demo_data.make_example(rng, rng.randint(int(target * 0.85), target)) for _ in range(n)]
    enc = tok([d for d, _ in pairs], padding=True, return_tensors="pt")
    lab = tok([s for _, s in pairs], padding=True, return_tensors="pt").input_ids
    lab[lab == tok.pad_token_id] = -100
    return enc.input_ids, enc.attention_mask, lab


def save_checkpoint(model, out_dir: str, spiece: str, note: dict):
    from transformers import GenerationConfig
    tmp = out_dir.rstrip("/") + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    shutil.copy(spiece, os.path.join(tmp, "spiece.model"))
    cfg = model.config
    GenerationConfig(decoder_start_token_id=cfg.decoder_start_token_id, bos_token_id=0,
                     pad_token_id=cfg.pad_token_id, eos_token_id=cfg.eos_token_id,
                     forced_eos_token_id=cfg.forced_eos_token_id, **GENERATION).save_pretrained(tmp)
    with open(os.path.join(tmp, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "PegasusTokenizer", "pad_token": "<pad>", "eos_token": "</s>",
                   "unk_token": "<unk>", "mask_token": "<mask_2>", "mask_token_sent": "<mask_1>",
                   "offset": 103, "model_max_length": 16384}, f, indent=2)
    with open(os.path.join(tmp, "training_state.json"), "w") as f:
        json.dump(note, f, indent=2)
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp, out_dir)


def write_example(data_dir: str) -> None:
    """minipegx/data/example_document.txt and its true summary: a held-out document of ~2,500 tokens."""
    doc, summ = demo_data.make_example(random.Random(EXAMPLE_SEED), EXAMPLE_TOKENS, n_facts=4)
    with open(os.path.join(data_dir, "example_document.txt"), "w") as f:
        f.write(doc + "\n")
    with open(os.path.join(data_dir, "example_summary.txt"), "w") as f:
        f.write(summ + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="minipegx/data/demo")
    ap.add_argument("--pilot", action="store_true", help="a short run that only checks the loss falls")
    ap.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "minipegx_demo_work"),
                    help="scratch folder: spiece.model while training, eval.json")
    ap.add_argument("--threads", type=int, default=THREADS,
                    help="torch threads; 1 is faster than 2 when the two cores are shared with other work")
    ap.add_argument("--start-stage", type=int, default=0, help="resume: index of the first stage to run")
    ap.add_argument("--resume-from", help="resume: the checkpoint written at the end of the previous stage "
                                          "(WORK/after_<stage>)")
    ap.add_argument("--skip-eval", action="store_true")
    args = ap.parse_args()

    import torch
    from transformers import PegasusXConfig, PegasusXForConditionalGeneration
    torch.set_num_threads(args.threads)
    torch.manual_seed(SEED)
    random.seed(SEED)

    work = args.work
    os.makedirs(work, exist_ok=True)
    spiece = train_sentencepiece(work)
    tok = load_tokenizer(work)
    sample = [demo_data.make_example(random.Random(SEED + 2 + i), 2000)[0] for i in range(5)]
    ratio = sum(len(tok(d).input_ids) for d in sample) / sum(len(d.split()) for d in sample)
    print(f"vocab {len(tok)} (sentencepiece {len(tok) - 103} + 103); tokens/word {ratio:.3f} "
          f"(demo_data.TOKENS_PER_WORD = {demo_data.TOKENS_PER_WORD})", flush=True)

    write_example(os.path.dirname(os.path.abspath(args.out)))
    config = PegasusXConfig(vocab_size=len(tok), **MODEL)
    model = PegasusXForConditionalGeneration(config)
    torch.nn.init.normal_(model.model.shared.weight, std=EMBED_INIT_STD)  # tied: encoder, decoder, lm_head
    n_params = sum(p.numel() for p in model.parameters())
    print(f"parameters {n_params:,}", flush=True)

    stages = PILOT_STAGES if args.pilot else STAGES
    first_step = sum(st[1] for st in stages[:args.start_stage])
    if args.start_stage:
        # Resume at a stage boundary: identical to an uninterrupted run, because every stage starts a fresh
        # optimizer, batches depend only on the global step, and nothing random (no dropout) runs in training.
        model = PegasusXForConditionalGeneration.from_pretrained(args.resume_from)
        print(f"resumed from {args.resume_from} at stage {args.start_stage}, step {first_step}", flush=True)
    total = sum(st[1] for st in stages)
    t0, step, ema = time.time(), first_step, None
    for name, n_steps, lo, hi, tpb, lr, warmup in stages[args.start_stage:]:
        decay, no_decay = [], []
        for pname, p in model.named_parameters():
            (no_decay if p.ndim < 2 or "norm" in pname else decay).append(p)
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY},
                                 {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.98))

        def lr_at(i):
            if i < warmup:
                return lr * (i + 1) / warmup
            return lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * (i - warmup) / max(1, n_steps - warmup))))

        model.train()
        for i in range(n_steps):
            ids, mask, labels = make_batch(tok, step, lo, hi, tpb)
            for g in opt.param_groups:
                g["lr"] = lr_at(i)
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
            opt.step()
            ema = loss.item() if ema is None else 0.95 * ema + 0.05 * loss.item()
            step += 1
            if step % 10 == 0:
                print(f"step {step}/{total} {name} len {lo}-{hi} batch {ids.shape[0]}x{ids.shape[1]} "
                      f"loss {loss.item():.4f} ema {ema:.4f} lr {lr_at(i):.2e} "
                      f"elapsed {time.time() - t0:.0f}s", flush=True)
            if step % SAVE_EVERY == 0 or i == n_steps - 1:
                model.eval()
                save_checkpoint(model, args.out, spiece, {"step": step, "of": total, "stage": name,
                                                          "ema_loss": ema, "train_seconds": time.time() - t0})
                model.train()
                print(f"saved {args.out} at step {step}", flush=True)
                if i == n_steps - 1:
                    stage_dir = os.path.join(work, f"after_{name}")
                    shutil.rmtree(stage_dir, ignore_errors=True)
                    shutil.copytree(args.out, stage_dir)
    print(f"trained steps {first_step}..{total} in {time.time() - t0:.0f}s", flush=True)

    if not args.skip_eval:
        import eval_demo
        # Beam (the shipped default) and greedy on every band: ~6.5 min on 2 cores (the table in docs/demo_model.md).
        eval_demo.main(["--model", args.out, "--decoding", "greedy" if args.pilot else "both",
                        "--out", os.path.join(work if args.pilot else args.out, "eval_results.json")]
                       + (["--quick"] if args.pilot else []))


if __name__ == "__main__":
    main()
