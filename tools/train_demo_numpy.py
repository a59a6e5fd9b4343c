"""Phase 1 of the demo recipe (the first, short demo model) trained by minipegx alone: no torch in the process.

    python -m tools.train_demo_numpy --out /tmp/demo_numpy                 # phase 1: 9,600 steps (hours on 2 cores)
    python -m tools.train_demo_numpy --out /tmp/demo_numpy --max-steps 3   # a check that every piece runs (seconds)
    python -m tools.eval_demo --model /tmp/demo_numpy --task named         # then evaluate it as the shipped one was

The same recipe as tools/train_demo.py's PHASE1, piece for piece, with the torch parts replaced:
  * tokenizer: the same spiece.model (train_demo.train_sentencepiece: sentencepiece + add_word_pieces), loaded by
    minipegx.Tokenizer, checked as train_demo.load_tokenizer checks it (ids = sentencepiece ids + 103, </s> last);
  * model: the same config (train_demo.MODEL, the phase-1 vocabulary), initialized as transformers initializes
    PegasusX (every matrix and embedding normal(0, init_std), biases 0, layer norms 1 and 0), then the token
    embedding redrawn with std EMBED_INIT_STD, as the recipe does; NumPy's generator (seed SEED) instead of
    torch's, so the starting weights are another draw from the same distribution;
  * batches: train_demo.make_batch's, a pure function of (SEED, step), tokenized by minipegx.Tokenizer;
  * each stage: a fresh minipegx.training.AdamW (betas 0.9/0.98, weight decay 0.01 on matrices only), train_demo's
    lr_at (linear warmup, cosine to 5%), clipping at 1.0, minipegx.training.loss_and_grads in float32;
  * checkpoints every SAVE_EVERY steps and at each stage's end (WORK/after_<stage>), written by the model's
    save_pretrained (with the recipe's tokenizer) plus training_state.json;
    --start-stage K --resume-from WORK/after_<stage K-1> resumes at a stage boundary, as train_demo does.

The process never imports torch or transformers (checked at the end: the run fails if either was loaded).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import sys
import tempfile
import time

from tools import demo_data
from tools import train_demo as recipe


def lr_at(i: int, n_steps: int, lr: float, warmup: int) -> float:
    """tools/train_demo.py's schedule: linear warmup from lr / warmup, then cosine decay to 5% of lr."""
    if i < warmup:
        return lr * (i + 1) / warmup
    return lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * (i - warmup) / max(1, n_steps - warmup))))


def load_tokenizer(folder: str):
    """minipegx.Tokenizer on the recipe's spiece.model, with train_demo.load_tokenizer's checks."""
    import sentencepiece as spm

    import minipegx

    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump(TOKENIZER_CONFIG, f, indent=2)
    tok = minipegx.Tokenizer.from_pretrained(folder)
    sp = spm.SentencePieceProcessor(model_file=os.path.join(folder, "spiece.model"))
    assert (sp.pad_id(), sp.eos_id(), sp.unk_id(), sp.bos_id()) == (0, 1, 2, -1)
    assert len(tok) == sp.get_piece_size() + 103, (len(tok), sp.get_piece_size())
    probes = ["According to the town ledger, Mirela carried 47 lanterns to Ostbridge."]
    probes += [text for i in range(5)
               for text in demo_data.make_named_example(random.Random(recipe.SEED + 7 + i), 1500)]
    for probe in probes:
        assert tok.encode(probe) == [i + 103 for i in sp.encode(probe)] + [1], probe[:80]
    return tok


TOKENIZER_CONFIG = {"tokenizer_class": "PegasusTokenizer", "pad_token": "<pad>", "eos_token": "</s>",
                    "unk_token": "<unk>", "mask_token": "<mask_2>", "mask_token_sent": "<mask_1>", "offset": 103,
                    "model_max_length": 16384}


def new_model(vocab_size: int, seed: int):
    """A PegasusX of the recipe's config with transformers' initialization (NumPy's generator)."""
    import numpy as np

    from minipegx.checkpoint import expected_shapes
    from minipegx.config import PegasusXConfig
    from minipegx.model import PegasusX
    from minipegx.tree import unflatten_params

    config = PegasusXConfig.from_dict({"model_type": "pegasus_x", **recipe.MODEL, "vocab_size": vocab_size})
    rng = np.random.default_rng(seed)
    flat = {}
    for name, dims in expected_shapes(config).items():     # a fixed order: one seed, one set of weights
        if name.endswith("layer_norm.weight"):
            flat[name] = np.ones(dims, np.float32)
        elif name.endswith(".bias"):
            flat[name] = np.zeros(dims, np.float32)
        else:
            std = recipe.EMBED_INIT_STD if name == "model.shared.weight" else config.init_std
            flat[name] = (rng.standard_normal(dims) * std).astype(np.float32)
    generation = {"decoder_start_token_id": config.decoder_start_token_id, "bos_token_id": 0,
                  "pad_token_id": config.pad_token_id, "eos_token_id": config.eos_token_id,
                  "forced_eos_token_id": config.forced_eos_token_id, **recipe.GENERATION}
    return PegasusX(config, unflatten_params(flat), "numpy", "float32", generation)


def make_batch(tok, step, lo, hi, tpb, task):
    """train_demo.make_batch with minipegx's tokenizer: the same documents, the same ids."""
    import numpy as np

    rng = random.Random(recipe.SEED * 1_000_003 + step)
    target = rng.randint(lo, hi)
    n = max(1, tpb // target)
    pairs = [recipe.TASKS[task](rng, rng.randint(int(target * 0.85), target)) for _ in range(n)]
    enc = tok([d for d, _ in pairs], padding=True, return_tensors="np")
    labels = tok([s for _, s in pairs], padding=True, return_tensors="np")["input_ids"]
    labels = np.where(labels == tok.pad_token_id, -100, labels)
    return enc["input_ids"], enc["attention_mask"], labels


def save(model, out_dir: str, tok, note: dict) -> None:
    tmp = out_dir.rstrip("/") + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, tokenizer=tok)
    with open(os.path.join(tmp, "training_state.json"), "w") as f:
        json.dump(note, f, indent=2)
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp, out_dir)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="where the model goes (never one of the bundled models)")
    ap.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "minipegx_demo_numpy_work"))
    ap.add_argument("--start-stage", type=int, default=0)
    ap.add_argument("--resume-from", help="WORK/after_<stage> of the previous stage")
    ap.add_argument("--stop-stage", type=int, help="stop before this stage index")
    ap.add_argument("--max-steps", type=int, help="stop after this many steps in all (a check that the tool runs)")
    args = ap.parse_args(argv)

    import minipegx

    bundled = os.path.realpath(os.path.join(os.path.dirname(minipegx.__file__), "data"))
    if os.path.realpath(args.out).startswith(bundled + os.sep):
        sys.exit("--out must not be inside minipegx/data: this tool does not replace the shipped models")
    from minipegx.training import AdamW, Batch, decay_matrices_only, train_step

    folder = os.path.join(args.work, "tokenizer_phase1")
    os.makedirs(folder, exist_ok=True)
    recipe.train_sentencepiece(folder, phase=1)
    tok = load_tokenizer(folder)
    print(f"vocab {len(tok)} (sentencepiece + 103)", flush=True)

    stages = recipe.PHASE1
    stop = len(stages) if args.stop_stage is None else args.stop_stage
    step = sum(st[2] for st in stages[:args.start_stage])
    if args.start_stage:
        model = minipegx.from_pretrained(args.resume_from)
        print(f"resumed from {args.resume_from} at stage {args.start_stage}, step {step}", flush=True)
    else:
        model = new_model(len(tok), recipe.SEED)
    total = sum(st[2] for st in stages)
    t0, ema, seconds, done = time.time(), None, {}, 0
    for name, task, n_steps, lo, hi, tpb, lr, warmup in stages[args.start_stage:stop]:
        t_stage = time.time()
        opt = AdamW(model, lr=lr, betas=(0.9, 0.98), weight_decay=recipe.WEIGHT_DECAY, decay=decay_matrices_only)
        for i in range(n_steps):
            ids, mask, labels = make_batch(tok, step, lo, hi, tpb, task)
            opt.lr = lr_at(i, n_steps, lr, warmup)
            stats = train_step(model, opt, Batch(ids, mask, labels), max_grad_norm=recipe.CLIP)
            ema = stats.loss if ema is None else 0.95 * ema + 0.05 * stats.loss
            step, done = step + 1, done + 1
            last = i == n_steps - 1 or done == args.max_steps
            if step % 10 == 0 or done <= 3:
                print(f"step {step}/{total} {name} len {lo}-{hi} batch {ids.shape[0]}x{ids.shape[1]} "
                      f"loss {stats.loss:.4f} ema {ema:.4f} lr {opt.lr:.2e} elapsed {time.time() - t0:.0f}s",
                      flush=True)
            if step % recipe.SAVE_EVERY == 0 or last:
                seconds[name] = round(time.time() - t_stage)
                save(model, args.out, tok, {"step": step, "of": total, "stage": name, "ema_loss": ema,
                                               "train_seconds_this_process": round(time.time() - t0),
                                               "stage_seconds": seconds, "trainer": "minipegx (NumPy), no torch"})
                print(f"saved {args.out} at step {step}", flush=True)
                if i == n_steps - 1:
                    stage_dir = os.path.join(args.work, f"after_{name}")
                    shutil.rmtree(stage_dir, ignore_errors=True)
                    shutil.copytree(args.out, stage_dir)
            if done == args.max_steps:
                break
        if done == args.max_steps:
            break
    loaded = [m for m in ("torch", "transformers") if m in sys.modules]
    if loaded:
        sys.exit(f"{' and '.join(loaded)} got imported during training: this run does not prove a torch-free trainer")
    print(f"trained steps up to {step} of {total} in {time.time() - t0:.0f}s; torch and transformers never loaded",
          flush=True)


if __name__ == "__main__":
    main()
