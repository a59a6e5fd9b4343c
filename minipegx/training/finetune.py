"""`minipegx finetune`: fine-tune a PEGASUS-X checkpoint on JSON-lines pairs, resumably, with NumPy or CuPy.

    minipegx finetune --train train.jsonl --valid valid.jsonl --out my-model --steps 500 --lr 1e-4
    minipegx.training.finetune("train.jsonl", "my-model", valid="valid.jsonl", steps=500, lr=1e-4)

One run: read and tokenize the pairs (data.py), pack them into batches of about one length, then `steps` times
train_step (loss_and_grads, clipping at --max-grad-norm, AdamW with decay on weight matrices only, linear warmup
then cosine decay), printing the loss and tokens/s; every --eval-every steps the validation loss (mean cross
entropy per summary token) and ROUGE-1/2/L of greedy summaries of the first --eval-docs validation documents
(rouge-score, the 'eval' extra; skipped with a note when it is missing); every --save-every steps a checkpoint
(export.py). At the end OUT holds the fine-tuned model (config.json, model.safetensors in float32, the tokenizer's
files, ...; written by the model's save_pretrained, like every checkpoint), train_log.jsonl (one line per step and
per evaluation) and checkpoints/.

Running the same command again resumes from the newest checkpoint and takes the same steps with the same
losses: the batch of step i depends only on (data, seed, i), the optimizer's moments are saved, and nothing
random runs in a step (minipegx has no dropout: fine-tuning runs as if dropout were 0). The settings that
decide the numbers are kept in OUT/finetune.json; a rerun with other settings is refused. The input model
directory is never written: OUT may not be it, lie inside it or contain it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field

from ..errors import CheckpointError, InputError, MissingDependencyError
from . import data as D
from .export import list_checkpoints, load_checkpoint, save_checkpoint
from .optim import AdamW, decay_matrices_only
from .schedule import KINDS, Schedule
from .step import Batch, train_step

SETTINGS_FILE = "finetune.json"
# What decides the numbers of a run: a rerun into the same OUT must give the same ones to resume.
NUMERIC_SETTINGS = ("model", "train_sha256", "valid_sha256", "text_field", "summary_field", "steps", "lr",
                    "batch_tokens", "warmup", "schedule", "weight_decay", "max_grad_norm", "label_smoothing",
                    "max_input_length", "max_target_length", "seed", "dtype", "skip_malformed")


@dataclass
class FinetuneResult:
    out: str
    steps_done: int
    resumed_from: int            # the step the run resumed at (0: a fresh run)
    history: list = field(default_factory=list)   # one dict per step ("loss", ...) and per evaluation ("valid_loss")
    seconds: float = 0.0


def finetune(train, out, valid=None, model=None, *, steps=1000, lr=1e-4, batch_tokens=8192, text_field="text",
             summary_field="summary", warmup=None, schedule="cosine", weight_decay=0.01, max_grad_norm=1.0,
             label_smoothing=0.0, max_input_length=None, max_target_length=256, eval_every=None, eval_docs=16,
             save_every=None, keep_checkpoints=2, log_every=10, seed=0, backend="numpy", dtype="float32",
             recompute=False, stop_at=None, skip_malformed=False, quiet=False) -> FinetuneResult:
    """Fine-tune `model` (a checkpoint directory; None: the bundled demo model) on `train` into `out`.

    warmup: steps of linear warmup (None: 10% of steps, at most 100). eval_every / save_every: None means
    steps // 5 (at least 1); the last step is always evaluated and saved. stop_at: stop (after a checkpoint)
    once this step is done, to run a long job in parts. See the module docstring for the rest."""
    from .. import demo_model_path
    from ..backend import get_backend

    t_start = time.perf_counter()
    say = (lambda *a: None) if quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    model_dir = os.path.abspath(demo_model_path() if model is None else os.fspath(model))
    out = os.path.abspath(os.fspath(out))
    warmup = min(100, steps // 10) if warmup is None and _is_int(steps) else warmup
    eval_every = max(1, steps // 5) if eval_every is None and _is_int(steps) else eval_every
    save_every = eval_every if save_every is None else save_every
    check_arguments(locals())
    get_backend(backend)                                          # BackendError now, before any reading
    check_directories(model_dir, out)

    settings = {"model": model_dir, "train": os.path.abspath(train), "train_sha256": _sha256(train),
                "valid": os.path.abspath(valid) if valid else None, "valid_sha256": _sha256(valid) if valid else None,
                "text_field": text_field, "summary_field": summary_field, "steps": steps, "lr": lr,
                "batch_tokens": batch_tokens, "warmup": warmup, "schedule": schedule, "weight_decay": weight_decay,
                "max_grad_norm": max_grad_norm, "label_smoothing": label_smoothing,
                "max_input_length": max_input_length, "max_target_length": max_target_length, "seed": seed,
                "dtype": dtype, "skip_malformed": skip_malformed}
    checkpoints = os.path.join(out, "checkpoints")
    resume = prepare_out(out, settings)
    lock = lock_out(out)                                          # one run per OUT at a time
    try:
        source = os.path.join(checkpoints, resume) if resume else model_dir
        if not resume:       # OUT keeps the tokenizer that every checkpoint and the export save (checkpoints get
            save_tokenizer(model_dir, out)          # rotated away, the input folder may change: OUT stays)
        from ..tokenizer import Tokenizer
        tok = Tokenizer.from_pretrained(out)
        net = load_trainable(source, backend, dtype)
        limit = max_input_length or net.config.max_position_embeddings
        train_set = load_examples(tok, train, text_field, summary_field, limit, max_target_length, skip_malformed, say)
        D.check_fits(train_set, batch_tokens, train)
        batches = D.pack_by_length([len(e.input_ids) for e in train_set], batch_tokens)
        valid_set = load_examples(tok, valid, text_field, summary_field, limit, max_target_length, skip_malformed,
                                  say) if valid else None
        say(f"{len(train_set)} training pairs in {len(batches)} batches of up to {batch_tokens} padded tokens"
            + (f"; {len(valid_set)} validation pairs" if valid_set else ""))

        opt = AdamW(net, lr=lr, weight_decay=weight_decay, decay=decay_matrices_only)
        sched = Schedule(lr, warmup_steps=warmup, total_steps=steps, kind=schedule)
        history, start = [], 0
        if resume:
            state, opt_state = load_checkpoint(source)
            opt.load_state_dict(opt_state)
            history, start = state["history"], state["step"]
            say(f"resumed from {source} at step {start} of {steps}")
        log_path = os.path.join(out, "train_log.jsonl")
        _write_log(log_path, history)
        if start == 0 and valid_set:
            history.append(evaluate(net, tok, valid_set, batch_tokens, eval_docs, max_target_length, 0, say))
            _append_log(log_path, history[-1])

        stop = steps if stop_at is None else min(stop_at, steps)
        window_tokens, window_seconds = 0, 0.0
        for step in range(start, stop):
            ids, mask, labels = D.make_batch(train_set, D.batch_indices(batches, seed, step), tok.pad_token_id)
            # NumPy batches: checked and counted on the host, moved to the model's device inside loss_and_grads
            # (on a GPU a step then synchronises three times: the label count, the loss, the gradient norm)
            stats = train_step(net, opt, Batch(ids, mask, labels), schedule=sched, max_grad_norm=max_grad_norm,
                               label_smoothing=label_smoothing, recompute=recompute)
            done = step + 1
            window_tokens, window_seconds = window_tokens + stats.input_tokens, window_seconds + stats.seconds
            history.append({"step": done, "loss": stats.loss, "lr": stats.lr, "grad_norm": stats.grad_norm,
                            "input_tokens": stats.input_tokens, "label_tokens": stats.label_tokens,
                            "seconds": round(stats.seconds, 4)})
            _append_log(log_path, history[-1])
            if done % log_every == 0 or done == stop:
                say(f"step {done}/{steps}  loss {stats.loss:.4f}  lr {stats.lr:.2e}  grad norm {stats.grad_norm:.3f}  "
                    f"{window_tokens / max(window_seconds, 1e-9):,.0f} tokens/s")
                window_tokens, window_seconds = 0, 0.0
            if valid_set and (done % eval_every == 0 or done == steps):
                history.append(evaluate(net, tok, valid_set, batch_tokens, eval_docs, max_target_length, done, say))
                _append_log(log_path, history[-1])
            if done % save_every == 0 or done == stop:
                path = save_checkpoint(checkpoints, done, net, opt, tok, {"history": history, "settings": settings},
                                       keep=keep_checkpoints)
                say(f"saved {path}")
        if stop == steps:
            as_float32(net).save_pretrained(out, tokenizer=tok)
            say(f"the fine-tuned model is in {out} (load it with minipegx.from_pretrained or transformers)")
        else:
            say(f"stopped at step {stop} of {steps}; run the same command again without --stop-at to go on")
        return FinetuneResult(out, stop, start, history, time.perf_counter() - t_start)
    finally:
        os.close(lock)                                            # releases the lock


# ---------------------------------------------------------------------------------------------- pieces
def load_trainable(path, backend, dtype):
    """from_pretrained, with every parameter a writable array of its own (a safetensors file loads as
    read-only views of the file, which an in-place update may not touch)."""
    from ..model import from_pretrained
    from .optim import make_writable

    net = from_pretrained(path, backend=backend, dtype=dtype)
    make_writable(net)
    return net


def lock_out(out: str) -> int:
    """An exclusive flock on OUT/.lock (released by the kernel when the process dies, even by SIGKILL), so a
    second run into the same OUT fails at once instead of interleaving checkpoints. Returns the descriptor."""
    import fcntl

    fd = os.open(os.path.join(out, ".lock"), os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise InputError(f"--out {out} is being written by another finetune run (it holds OUT/.lock); wait for it "
                         "or choose another --out") from None
    return fd


def save_tokenizer(model_dir, out) -> None:
    """The input model's tokenizer, saved into OUT by Tokenizer.save_pretrained (the one writer of every save)."""
    from ..tokenizer import Tokenizer

    if not os.path.isfile(os.path.join(model_dir, "spiece.model")):
        raise CheckpointError(f"no spiece.model in {model_dir}: fine-tuning reads text, so the model directory "
                              "needs its tokenizer")
    Tokenizer.from_pretrained(model_dir).save_pretrained(out)


def as_float32(net):
    """The model with float32 parameters, the dtype of the exported model (float64 training included); the
    model itself when it already is float32 (no copy)."""
    from dataclasses import replace

    from ..tree import tree_map

    if net.dtype == "float32":
        return net
    def cast(a):
        return a.astype("float32") if a.dtype.kind == "f" else a

    return replace(net, params=tree_map(cast, net.params), dtype="float32")


def load_examples(tok, path, text_field, summary_field, max_input_length, max_target_length, skip_malformed, say):
    pairs, malformed = D.read_pairs(path, text_field, summary_field, "skip" if skip_malformed else "error")
    for line in malformed:
        say(f"skipped {line}")
    examples, cut_in, cut_out = D.tokenize_pairs(tok, pairs, max_input_length, max_target_length)
    if cut_in or cut_out:
        say(f"{path}: {cut_in} documents cut to {max_input_length} tokens, {cut_out} summaries to "
            f"{max_target_length} tokens")
    return examples


def evaluate(net, tok, examples, batch_tokens, eval_docs, max_target_length, step, say) -> dict:
    """Validation loss (mean cross entropy per summary token, every pair) and ROUGE of greedy summaries of the
    first eval_docs pairs."""
    from ..backend import to_numpy

    t0 = time.perf_counter()
    total, count = 0.0, 0
    for indices in D.pack_by_length([len(e.input_ids) for e in examples], batch_tokens):
        ids, mask, labels = D.make_batch(examples, indices, tok.pad_token_id)
        n = int((labels != -100).sum())
        xp = net.xp
        loss = net(input_ids=xp.asarray(ids), attention_mask=xp.asarray(mask), labels=xp.asarray(labels)).loss
        total, count = total + float(to_numpy(loss)) * n, count + n
    row = {"step": step, "valid_loss": total / count}
    if eval_docs:
        chosen = examples[:eval_docs]
        try:
            row.update(rouge_of(net, tok, chosen, max_target_length))
        except MissingDependencyError:
            say("ROUGE skipped: it needs rouge-score (pip install 'minipegx[eval]')")
    row["eval_seconds"] = round(time.perf_counter() - t0, 2)
    scores = "  ".join(f"{k} {row[k]:.4f}" for k in ("rouge1", "rouge2", "rougeL") if k in row)
    say(f"eval at step {step}: valid loss {row['valid_loss']:.4f}  {scores}".rstrip())
    return row


def rouge_of(net, tok, examples, max_target_length) -> dict:
    """Mean ROUGE-1/2/L F1 (rouge-score, stemmed) of greedy summaries against the true ones, and one example."""
    import numpy as np

    from ..backend import to_numpy
    from ..corpus.evaluate import rouge_scores

    predictions = []
    for start in range(0, len(examples), 4):
        rows = list(range(start, min(start + 4, len(examples))))
        ids, mask, _ = D.make_batch(examples, rows, tok.pad_token_id)
        out = net.generate(net.xp.asarray(ids), net.xp.asarray(mask), num_beams=1,
                           max_new_tokens=max_target_length)
        predictions += tok.batch_decode(to_numpy(out).tolist(), skip_special_tokens=True)
    references = [tok.decode(e.labels, skip_special_tokens=True) for e in examples]
    scores = rouge_scores(predictions, references)
    return {**{k: float(np.mean(scores[k])) for k in ("rouge1", "rouge2", "rougeL")}, "example": predictions[0]}


def check_arguments(a: dict) -> None:
    """Every number and choice, named by its command-line flag."""
    def whole(name, lo, value=None):
        v = a[name] if value is None else value
        if not (_is_int(v) and v >= lo):
            raise InputError(f"--{name.replace('_', '-')} must be a whole number >= {lo}, got {v!r}")

    def real(name, lo, hi=math.inf, open_lo=False):
        v = a[name]
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and \
            (v > lo if open_lo else v >= lo) and v < hi
        if not ok:
            bound = f"> {lo}" if open_lo else f">= {lo}"
            raise InputError(f"--{name.replace('_', '-')} must be a number {bound}" +
                             (f" and < {hi}" if hi != math.inf else "") + f", got {v!r}")

    whole("steps", 1)
    real("lr", 0, open_lo=True)
    whole("batch_tokens", 2)
    whole("warmup", 0)
    if a["warmup"] > a["steps"]:
        raise InputError(f"--warmup {a['warmup']} is longer than --steps {a['steps']}")
    if a["schedule"] not in KINDS:
        raise InputError(f"--schedule must be one of {', '.join(KINDS)}, got {a['schedule']!r}")
    real("weight_decay", 0)
    real("max_grad_norm", 0)
    real("label_smoothing", 0, 1)
    if a["max_input_length"] is not None:
        whole("max_input_length", 2)
    whole("max_target_length", 2)
    for name in ("eval_every", "save_every", "log_every"):
        whole(name, 1)
    whole("eval_docs", 0)
    whole("keep_checkpoints", 1)
    whole("seed", 0)
    if a["stop_at"] is not None:
        whole("stop_at", 1)
    if a["dtype"] not in ("float32", "float64"):
        raise InputError(f"--dtype must be float32 or float64 for training, got {a['dtype']!r}")
    for name in ("text_field", "summary_field"):
        if not isinstance(a[name], str) or not a[name]:
            raise InputError(f"--{name.replace('_', '-')} must be a field name, got {a[name]!r}")
    for name in ("train", "valid"):
        if a[name] is not None and not os.path.isfile(a[name]):
            raise InputError(f"--{name} {a[name]}: no such file (a JSON-lines file of "
                             f"{{{a['text_field']!r}, {a['summary_field']!r}}} objects)")


def check_directories(model_dir: str, out: str) -> None:
    """The model directory exists; OUT is not it, not inside it, does not contain it, and is not a file."""
    if not os.path.isdir(model_dir):
        from ..errors import CheckpointNotFoundError
        raise CheckpointNotFoundError(f"--model {model_dir}: no such directory (a checkpoint directory with "
                                      "config.json, model.safetensors and spiece.model)")
    real_model, real_out = os.path.realpath(model_dir), os.path.realpath(out)
    if real_out == real_model or _inside(real_out, real_model) or _inside(real_model, real_out):
        raise InputError(f"--out {out} would write into the model being fine-tuned ({model_dir}); training never "
                         "overwrites its input: choose another --out")
    if os.path.exists(out) and not os.path.isdir(out):
        raise InputError(f"--out {out} is a file; --out names a directory (new, empty, or an earlier run's to "
                         "resume)")


def prepare_out(out: str, settings: dict) -> str | None:
    """Create OUT for a fresh run, or check that it holds this run (same settings); the newest checkpoint's name
    to resume from, or None."""
    path = os.path.join(out, SETTINGS_FILE)
    if os.path.isfile(path):
        from ..limits import read_json
        saved = read_json(path, SETTINGS_FILE, CheckpointError)
        differ = [k for k in NUMERIC_SETTINGS if saved.get(k) != settings[k]]
        if differ:
            k = differ[0]
            raise InputError(f"--out {out} holds a run with other settings ({k}: {saved.get(k)!r} there, "
                             f"{settings[k]!r} now); rerun with the same settings to resume it, or choose a "
                             "new --out")
        names = list_checkpoints(os.path.join(out, "checkpoints"))
        return names[-1] if names else None
    if os.path.isdir(out) and os.listdir(out):
        raise InputError(f"--out {out} exists and is not a minipegx finetune run (no {SETTINGS_FILE}); choose a new "
                         "or empty directory")
    os.makedirs(out, exist_ok=True)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(settings, f, indent=2)
    os.replace(path + ".tmp", path)
    return None


def _inside(path: str, folder: str) -> bool:
    return path.startswith(folder.rstrip(os.sep) + os.sep)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_log(path, history) -> None:
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        for row in history:
            f.write(json.dumps(row) + "\n")
    os.replace(path + ".tmp", path)


def _append_log(path, row) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")




def run_cli(args) -> int:
    """`minipegx finetune`: cli.py's parsed arguments to finetune()."""
    names = ("valid", "model", "steps", "lr", "batch_tokens", "text_field", "summary_field", "warmup", "schedule",
             "weight_decay", "max_grad_norm", "label_smoothing", "max_input_length", "max_target_length",
             "eval_every", "eval_docs", "save_every", "keep_checkpoints", "log_every", "seed", "backend", "dtype",
             "recompute", "stop_at", "skip_malformed", "quiet")
    result = finetune(args.train, args.out, **{n: getattr(args, n) for n in names})
    if not args.quiet:
        print(f"{result.steps_done - result.resumed_from} steps in {result.seconds:.1f} s", file=sys.stderr)
    return 0


__all__ = ["finetune", "FinetuneResult", "run_cli"]
