"""Train the small demo PEGASUS-X models that ship with minipegx (a tool, not the runtime).

    python -m tools.train_demo --out minipegx/data/demo --stop-stage 4     # phase 1: the first (short) model
                                                                           # (~43 min on 2 idle CPU cores)
    python -m tools.train_demo --out minipegx/data/demo_long --start-stage 4 --resume-from COPY_OF_DEMO
                                                                           # phases 2 and 3: the long, default model
                                                                           # (38 + 99 min on 2 shared cores)
    python -m tools.train_demo --variant nostagger --out minipegx/data/demo_long_nostagger \
        --start-stage 4 --stop-stage 9 --resume-from COPY_OF_DEMO         # an ablation sibling (also noglobal)
    python -m tools.train_demo --out /tmp/pilot --pilot                    # a 2-3 minute check that loss falls

Phase 1 trains on demo_data.make_named_example up to 4,000 tokens; phase 2 on demo_data.make_example (names
introduced thousands of tokens before the entries that use them) up to 16,384 tokens; phase 3 is eight more cycles
of mixed lengths up to 16,384 and a last stage of two documents per step (docs/demo_long.md). Each stage's end is
kept in WORK/after_<stage>, where a run resumes (--start-stage, --resume-from).

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
EXAMPLE_LONG_SEED = 2026        # the long model's bundled example (roles task), a stream of its own
EXAMPLE_LONG_TOKENS = 12000
NOTEBOOK_SEED = 2025            # notebook 06's documents (another stream neither training nor eval uses)
NOTEBOOK_TOKENS = (1500, 3000)  # 4 documents of each length: long enough that facts cross many blocks,
                                # short enough for six encoders x 8 documents in well under a minute
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
# Phase 1 ("named" task, demo_data.make_named_example: key sentences name their subject) is the first demo
# model's recipe, up to 4,000 tokens. Phase 2 ("roles" task, demo_data.make_example: entries name a role
# introduced thousands of tokens earlier) grows the vocabulary by the new words and takes the length up to
# 16,384 tokens, short documents first. Stages: (name, task, steps, min_tokens, max_tokens, tokens_per_batch,
# lr, warmup).
PHASE1 = [
    ("bootstrap", "named", 600, 40, 160, 3000, 2e-3, 100),
    ("medium", "named", 600, 300, 1200, 6000, 1.5e-3, 50),
    ("long", "named", 7000, 500, 4000, 8000, 1e-3, 100),
    ("polish", "named", 1400, 300, 4000, 8000, 3e-4, 50),   # added after "long" gave 85% exact match
]
PHASE2 = [
    ("roles-tiny", "roles", 600, 40, 200, 3000, 2e-3, 50),
    ("roles-short", "roles", 300, 200, 1000, 8000, 1e-3, 30),
    ("roles-4k", "roles", 150, 1000, 4000, 12000, 1e-3, 30),
    ("roles-16k", "roles", 500, 2000, 16300, 16384, 7e-4, 30),
    ("roles-polish", "roles", 150, 300, 16300, 16384, 2e-4, 20),
    # added to the shipped model only, after roles-polish gave 53% exact match at 300-1,000 tokens: the 16k
    # stage had cost the short lengths their accuracy (roles-short ended at loss 0.018). The siblings stop
    # before it (--stop-stage 9), so the ablation compares three models of the same recipe and budget.
    ("roles-mix", "roles", 400, 300, 16300, 16384, 3e-4, 20),
]
# Phase 3 (added in a later session, main model only): roles-mix left the model at 59.5% exact match at 300-1,000
# tokens and 32.5% at 12,000-16,300 (docs/demo_long.md), with ~800 documents of 8k+ tokens seen in all. Phase 3
# is more of the same mixed-length training in cosine cycles of falling peak lr, so that every stage's end is an
# annealed, usable checkpoint and the recipe can stop after any of them. Two widths were run side by side
# (--phase3): "narrow", one 16k-token document per step, and "wide", two per step at half the steps (the same
# documents seen, a less noisy gradient).
PHASE3 = {
    "narrow": [(f"roles-cycle{i + 1}", "roles", 1000, 300, 16300, 16384, lr, 30)
               for i, lr in enumerate([5e-4, 4e-4, 3e-4, 2.5e-4, 2e-4, 1.5e-4, 1.5e-4, 1e-4])],
    "wide": [(f"roles-wide{i + 1}", "roles", 500, 300, 16300, 32768, lr, 20)
             for i, lr in enumerate([5e-4, 4e-4, 3e-4, 2.5e-4, 2e-4, 1.5e-4])],
}
# After one cycle each, narrow and wide were alike on 50 held-out documents per band (greedy: 84/78/54/52/28% and
# 76/68/50/54/28%), the long bands far behind. "long" branches off narrow after its first cycle: cycles of
# 2,000-16,300-token documents only (a 16k batch is one document, so uniform lengths give the long bands few
# documents), then one uniform cycle to keep the short lengths.
PHASE3["long"] = PHASE3["narrow"][:1] + [
    (f"roles-longcycle{i + 2}", "roles", 1000, 2000, 16300, 16384, lr, 30)
    for i, lr in enumerate([4e-4, 3e-4, 2.5e-4, 2e-4])
] + [("roles-longmix", "roles", 1000, 300, 16300, 16384, 1.5e-4, 30)]
# It was stopped after its first long-only cycle: 62/66/58/56/38% (greedy, 50 documents per band) against narrow's
# second cycle at the same step, 72/80/70/60/44%. Long documents only is worse at every length, the long ones
# included: a step of one 16k document carries one summary, a step of short documents dozens.
# A ninth stage after cycle 8: two documents per step at a low learning rate, for a less noisy gradient at the end
# of training. Shipped because it validated better: on a validation set (tools/eval_demo.py --seed 55555, greedy,
# 80 documents per band, none of them the reported documents) 93.8/82.5/80.0/82.5/75.0% against cycle 8's
# 93.8/83.8/73.8/80.0/72.5% (a mean 2 points higher; small against the noise of 400 documents).
PHASE3["narrow+wide"] = PHASE3["narrow"] + [("roles-widepolish", "roles", 800, 300, 16300, 32768, 1e-4, 20)]
SHIPPED_PHASE3 = "narrow+wide"  # the recipe of the shipped long model: PHASE1 + PHASE2 + PHASE3[SHIPPED_PHASE3]
PILOT_STAGES = [("bootstrap", "named", 150, 40, 160, 3000, 2e-3, 100)]
TASKS = {"named": demo_data.make_named_example, "roles": demo_data.make_example}
# The ablation siblings: the same recipe and budget with one architectural change each. They branch off after
# phase 1 (the shared start: phase 1 is 42.5 minutes of the 2-core budget) and run phase 2 with the change.
VARIANTS = {"main": {}, "nostagger": {"stagger_local_blocks": False}, "noglobal": {"num_global_tokens": 0}}
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


def task_texts(task: str) -> list[str]:
    """The paragraphs and summaries of SPM_TEXT_DOCS generated documents of `task` (seed SEED + 1)."""
    texts = []
    for doc, summ in demo_data.make_dataset(SEED + 1, SPM_TEXT_DOCS, 300, 2000, make=TASKS[task]):
        texts += doc.split("\n\n") + [summ]
    return texts


def train_sentencepiece(out_dir: str, phase: int = 2) -> str:
    """spiece.model in Pegasus' layout, through the project's tokenizer recipe (tools/train_spm.py): trained on
    the phase-1 task; for phase 2, the roles task's new words are appended as pieces (ids after phase 1's), so a
    phase-1 checkpoint keeps its ids and only grows new embedding rows."""
    texts = task_texts("named")
    prefix = os.path.join(out_dir, "spiece")
    train_spm(texts, prefix, vocab_size=SPM_VOCAB)
    for ext in (".vocab",):
        if os.path.exists(prefix + ext):
            os.unlink(prefix + ext)
    if WORD_PIECES:
        add_word_pieces(prefix + ".model", texts)
        if phase == 2:
            add_word_pieces(prefix + ".model", task_texts("roles"))
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


def make_batch(tok, step: int, min_tokens: int, max_tokens: int, tokens_per_batch: int, task: str = "roles"):
    """The batch of training step `step`: a pure function of (SEED, step, task)."""
    rng = random.Random(SEED * 1_000_003 + step)
    target = rng.randint(min_tokens, max_tokens)
    n = max(1, tokens_per_batch // target)
    pairs = [TASKS[task](rng, rng.randint(int(target * 0.85), target)) for _ in range(n)]
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


def write_example_files(data_dir: str, stem: str, doc: str, summ: str) -> None:
    """STEM_document.txt and STEM_summary.txt, the names minipegx.example_path reads."""
    for kind, text in (("document", doc), ("summary", summ)):
        with open(os.path.join(data_dir, f"{stem}_{kind}.txt"), "w") as f:
            f.write(text + "\n")


def write_example(data_dir: str) -> None:
    """minipegx/data/example_document.txt and its true summary: a held-out document of ~2,500 tokens of the
    first (short) demo model's task (phase 1's; example_document("short"), the notebooks' document)."""
    doc, summ = demo_data.make_named_example(random.Random(EXAMPLE_SEED), EXAMPLE_TOKENS, n_facts=4)
    write_example_files(data_dir, "example", doc, summ)


def write_long_example(data_dir: str) -> None:
    """minipegx/data/example_long_document.txt and its true summary: a held-out document of ~12,000 tokens of
    the long (default) demo model's roles task (`minipegx demo` summarizes it)."""
    doc, summ = demo_data.make_example(random.Random(EXAMPLE_LONG_SEED), EXAMPLE_LONG_TOKENS)
    write_example_files(data_dir, "example_long", doc, summ)


def enter_phase2(model, tok, variant: str):
    """The phase-1 model as the start of phase 2: the variant's architecture change, and embedding rows for
    the words the roles task adds (drawn like phase 1's, std EMBED_INIT_STD). The other weights carry over
    (for num_global_tokens 0 the global-token embeddings are dropped)."""
    import torch
    from transformers import PegasusXConfig, PegasusXForConditionalGeneration
    old = model.state_dict()
    fields = {k: getattr(model.config, k) for k in MODEL}
    config = PegasusXConfig(vocab_size=len(tok), **{**fields, **VARIANTS[variant]})
    torch.manual_seed(SEED + 2)
    new = PegasusXForConditionalGeneration(config)
    state = new.state_dict()
    for key, value in old.items():
        if key in state and state[key].shape == value.shape:
            state[key] = value
        elif key in state and key.endswith(("shared.weight", "embed_tokens.weight", "lm_head.weight")):
            rows = torch.empty_like(state[key]).normal_(std=EMBED_INIT_STD)
            rows[:value.shape[0]] = value
            state[key] = rows
    new.load_state_dict(state)
    new.tie_weights()
    return new


def write_notebook_documents(data_dir: str) -> None:
    """minipegx/data/notebook_documents.json: held-out documents and summaries for notebook 06."""
    rng = random.Random(NOTEBOOK_SEED)
    docs = [demo_data.make_example(rng, n) for n in NOTEBOOK_TOKENS for _ in range(4)]
    with open(os.path.join(data_dir, "notebook_documents.json"), "w") as f:
        json.dump([{"document": d, "summary": s} for d, s in docs], f, indent=0)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="minipegx/data/demo")
    ap.add_argument("--pilot", action="store_true", help="a short run that only checks the loss falls")
    ap.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "minipegx_demo_work"),
                    help="scratch folder: spiece.model while training, eval.json")
    ap.add_argument("--threads", type=int, default=THREADS,
                    help="torch threads; 1 is faster than 2 when the two cores are shared with other work")
    ap.add_argument("--variant", choices=sorted(VARIANTS), default="main",
                    help="main, or an ablation sibling: phase 2 without staggered blocks / without global tokens")
    ap.add_argument("--start-stage", type=int, default=0, help="resume: index of the first stage to run")
    ap.add_argument("--resume-from", help="resume: the checkpoint written at the end of the previous stage "
                                          "(WORK/after_<stage>; the phase-1 result is the first demo model)")
    ap.add_argument("--stop-stage", type=int, help="stop before this stage index (run the recipe in parts)")
    ap.add_argument("--skip-eval", action="store_true")
    ap.add_argument("--phase3", choices=sorted(PHASE3), default=SHIPPED_PHASE3,
                    help="which phase 3 to run (stages from index %d on; the others are the runs that were "
                         "stopped or not shipped)" % (len(PHASE1) + len(PHASE2)))
    args = ap.parse_args()

    import torch
    from transformers import PegasusXConfig, PegasusXForConditionalGeneration
    torch.set_num_threads(args.threads)
    torch.manual_seed(SEED)
    random.seed(SEED)

    work = args.work
    toks, spieces = {}, {}
    for phase in (1, 2):
        folder = os.path.join(work, f"tokenizer_phase{phase}")
        os.makedirs(folder, exist_ok=True)
        spieces[phase] = train_sentencepiece(folder, phase)
        toks[phase] = load_tokenizer(folder)
    tok = toks[2]
    sample = [demo_data.make_example(random.Random(SEED + 2 + i), 2000)[0] for i in range(5)]
    ratio = sum(len(tok(d).input_ids) for d in sample) / sum(len(d.split()) for d in sample)
    print(f"vocab {len(toks[1])} in phase 1, {len(tok)} in phase 2 (sentencepiece + 103); tokens/word {ratio:.3f} "
          f"(demo_data.TOKENS_PER_WORD = {demo_data.TOKENS_PER_WORD})", flush=True)

    if args.variant == "main":
        write_example(os.path.dirname(os.path.abspath(args.out)))
        write_long_example(os.path.dirname(os.path.abspath(args.out)))
        write_notebook_documents(os.path.dirname(os.path.abspath(args.out)))
    config = PegasusXConfig(vocab_size=len(toks[1]), **MODEL)
    model = PegasusXForConditionalGeneration(config)
    torch.nn.init.normal_(model.model.shared.weight, std=EMBED_INIT_STD)  # tied: encoder, decoder, lm_head

    stages = PILOT_STAGES if args.pilot else PHASE1 + PHASE2 + PHASE3[args.phase3]
    stop = len(stages) if args.stop_stage is None else args.stop_stage
    first_step = sum(st[2] for st in stages[:args.start_stage])
    if args.start_stage:
        # Resume at a stage boundary: identical to an uninterrupted run, because every stage starts a fresh
        # optimizer, batches depend only on the global step, and nothing random (no dropout) runs in training.
        model = PegasusXForConditionalGeneration.from_pretrained(args.resume_from)
        print(f"resumed from {args.resume_from} at stage {args.start_stage}, step {first_step}", flush=True)
    total = sum(st[2] for st in stages)
    t0, step, ema = time.time(), first_step, None
    seconds = {}
    for name, task, n_steps, lo, hi, tpb, lr, warmup in stages[args.start_stage:stop]:
        phase = 1 if task == "named" else 2
        if phase == 2 and model.config.vocab_size != len(tok):
            model = enter_phase2(model, tok, args.variant)
            print(f"phase 2 ({args.variant}): vocab {model.config.vocab_size}, "
                  f"stagger {model.config.stagger_local_blocks}, globals {model.config.num_global_tokens}",
                  flush=True)
        print(f"parameters {sum(p.numel() for p in model.parameters()):,}", flush=True)
        t_stage = time.time()
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
            ids, mask, labels = make_batch(toks[phase], step, lo, hi, tpb, task)
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
                seconds[name] = round(time.time() - t_stage)
                save_checkpoint(model, args.out, spieces[phase], {
                    "step": step, "of": total, "stage": name, "variant": args.variant, "ema_loss": ema,
                    "train_seconds_this_process": round(time.time() - t0), "stage_seconds": seconds,
                    "threads": args.threads})
                model.train()
                print(f"saved {args.out} at step {step}", flush=True)
                if i == n_steps - 1:
                    stage_dir = os.path.join(work, f"after_{name}")
                    shutil.rmtree(stage_dir, ignore_errors=True)
                    shutil.copytree(args.out, stage_dir)
    print(f"trained steps {first_step}..{total} in {time.time() - t0:.0f}s", flush=True)

    if not args.skip_eval:
        from tools import eval_demo
        # Beam (the shipped default) and greedy on every band (the tables in docs/demo_model.md, docs/demo_long.md).
        task = "named" if stages[min(stop, len(stages)) - 1][1] == "named" else "roles"
        eval_demo.main(["--model", args.out, "--task", task, "--decoding", "greedy" if args.pilot else "both",
                        "--out", os.path.join(work if args.pilot else args.out, "eval_results.json")]
                       + (["--quick"] if args.pilot else []))


if __name__ == "__main__":
    main()
