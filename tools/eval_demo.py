"""Held-out evaluation of the demo PEGASUS-X models and their ablations (a tool, not the runtime).

    python -m tools.eval_demo --model minipegx/data/demo_long --out eval_demo.json
    python -m tools.eval_demo --model minipegx/data/demo_long --ablation globals_cut --docs 50 --decoding greedy
    python -m tools.eval_demo --model minipegx/data/demo --task named      # the first (short) demo model's task

Documents come from tools/demo_data.py with EVAL_SEED, a seed stream disjoint from training's
(training draws step i from SEED * 1_000_003 + i, see tools/train_demo.py), so no evaluated document
was ever trained on. Bands (lengths in demo-tokenizer tokens, as asked of the generator; the JSON
reports the real token counts): 300-1,000, 1,000-4,000, 4,000-8,000, 8,000-12,000, 12,000-16,300
(the top just under max_position_embeddings 16,384, since real counts run a little over or under).

Metrics per band: exact match (generated summary string == true summary, after whitespace
normalisation), fact recall (share of true fact sentences reproduced verbatim, anywhere), and
ROUGE-1/2/L F1 (rouge-score, stemming on) averaged over documents. Generation runs through
transformers' `generate` with the checkpoint's generation_config.json (beam search), and greedily.

Fast on CPUs: documents are sorted by length and packed into batches of about 16,384 tokens (little
padding), and the batches, longest first, go to --procs worker processes of one torch thread each.
--ablation runs an inference-time ablation of the same weights (tools/ablate.py).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import time

from tools import ablate, demo_data

EVAL_SEED = 987_654_321
HOW = ("tools/eval_demo.py: held-out documents from tools/demo_data.py with eval seed 987654321 (training draws "
       "batch i from Random(1234*1000003 + i); no evaluated document was trained on), one seed stream per band, so "
       "the first N documents of a band are the same in any run. Lengths in demo-tokenizer tokens incl. </s>. "
       "exact_match: generated summary == true summary after whitespace normalisation, with its 95% Wilson "
       "interval; fact_recall: share of true fact sentences reproduced verbatim; ROUGE-1/2/L: rouge-score F1 with "
       "stemming, mean over documents; slot_error_rate: per slot, over facts aligned by position; "
       "fact_count_correct: share of summaries with the right number of facts. transformers generate(), torch "
       "CPU, --procs worker processes of 1 thread each. Per-document predictions: --predictions PATH.")
BANDS = [("300-1k", 300, 1000, 200), ("1k-4k", 1000, 4000, 200), ("4k-8k", 4000, 8000, 200),
         ("8k-12k", 8000, 12000, 200), ("12k-16k", 12000, 16300, 200)]
QUICK_BANDS = [("300-1k", 300, 1000, 16), ("1k-4k", 1000, 4000, 16)]


def norm(s: str) -> str:
    return " ".join(s.split())


def wilson_interval(successes: int, n: int, z: float = 1.96) -> list[float]:
    """95% Wilson score interval of a proportion (sound near 0 and 1, unlike p +- 1.96 se)."""
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * (p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5 / (1 + z * z / n)
    return [round(centre - half, 4), round(centre + half, 4)]


def facts(s: str) -> list[str]:
    return [f.strip() for f in re.split(r"(?<=\.)\s+", norm(s)) if f.strip()]


TASKS = {"roles": demo_data.make_example, "named": demo_data.make_named_example}
# Which words of a fact are which slot: "The <role> <name> <verb> <number> <objects> to <place>." (roles; the
# name is the one slot from another block) and "<name> <verb> <number> <objects> to <place>." (named).
SLOTS = {"roles": {"role": 1, "name": 2, "verb": 3, "number": 4, "object": 5, "place": 7},
         "named": {"name": 0, "verb": 1, "number": 2, "object": 3, "place": 5}}


def band_examples(band, task: str = "roles", seed: int = EVAL_SEED):
    """The band's held-out (document, summary) pairs: its own seed stream, so the first N are always the same.
    Another `seed` gives another set (a validation set to choose between checkpoints, apart from the reported one)."""
    name, lo, hi, n = band
    rng = random.Random(seed + 7919 * lo + hi)
    return [TASKS[task](rng, rng.randint(lo, hi)) for _ in range(n)]


def length_batches(lengths, batch_tokens: int) -> list[list[int]]:
    """Indices sorted by length, longest first, packed so each batch's padded size is <= batch_tokens."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches, i = [], 0
    while i < len(order):
        size = max(1, batch_tokens // lengths[order[i]])          # the first is the batch's longest
        batches.append(order[i:i + size])
        i += size
    return batches


_WORKER = {}


def _init_worker(model_dir: str, ablation: str):
    import torch
    from transformers import PegasusTokenizer, PegasusXForConditionalGeneration
    torch.set_num_threads(1)
    model = PegasusXForConditionalGeneration.from_pretrained(model_dir).eval()
    _WORKER.update(tok=PegasusTokenizer.from_pretrained(model_dir), ablation=ablation,
                   model=model if ablation == "none" else ablate.ablated(model, ablation))


def _generate_batch(job):
    """Worker: summaries of one batch of documents, [(index, text)]."""
    import torch
    indices, docs, decoding = job
    tok, model = _WORKER["tok"], _WORKER["model"]
    enc = tok(docs, padding=True, return_tensors="pt")
    if _WORKER["ablation"] == "full":
        ablate.full_attention_for(model, enc.input_ids.shape[1])
    with torch.no_grad():
        out = model.generate(**enc, **decoding)
    return list(zip(indices, tok.batch_decode(out, skip_special_tokens=True)))


def generate_all(model_dir: str, docs, lengths, decoding: dict, procs: int = 2, batch_tokens: int = 16384,
                 ablation: str = "none") -> list[str]:
    """Summaries of `docs`, in order, from `procs` worker processes (spawned, one torch thread each)."""
    import multiprocessing
    jobs = [(idx, [docs[i] for i in idx], decoding) for idx in length_batches(lengths, batch_tokens)]
    preds = [None] * len(docs)
    if procs <= 1:
        _init_worker(model_dir, ablation)
        parts = map(_generate_batch, jobs)
        for part in parts:
            for i, text in part:
                preds[i] = text
        return preds
    with multiprocessing.get_context("spawn").Pool(procs, _init_worker, (model_dir, ablation)) as pool:
        for part in pool.imap_unordered(_generate_batch, jobs):
            for i, text in part:
                preds[i] = text
    return preds


def evaluate(model_dir, tok, band, decoding: dict, procs: int = 2, rouge=None, ablation: str = "none",
             task: str = "roles", seed: int = EVAL_SEED):
    name, lo, hi, n = band
    pairs = band_examples(band, task, seed)
    lengths = [len(tok(d).input_ids) for d, _ in pairs]
    preds = generate_all(model_dir, [d for d, _ in pairs], lengths, decoding, procs, ablation=ablation)
    n_exact = sum(norm(p) == norm(t) for p, (_, t) in zip(preds, pairs))
    true_facts = sum(len(facts(t)) for _, t in pairs)
    hit = sum(sum(f in facts(p) for f in facts(t)) for p, (_, t) in zip(preds, pairs))
    res = {"band": name, "requested_tokens": [lo, hi], "n": n,
           "tokens_min": min(lengths), "tokens_median": sorted(lengths)[n // 2], "tokens_max": max(lengths),
           "exact_match": n_exact / n, "exact_match_ci95": wilson_interval(n_exact, n),
           "fact_recall": hit / true_facts}
    if rouge is not None:
        scores = [rouge.score(t, p) for p, (_, t) in zip(preds, pairs)]
        for k in ("rouge1", "rouge2", "rougeL"):
            res[k] = sum(s[k].fmeasure for s in scores) / n
    # Which slot goes wrong, over true facts whose position in the summary the prediction also has.
    slots = SLOTS[task]
    slot_err = dict.fromkeys(slots, 0)
    aligned = 0
    for p, (_, t) in zip(preds, pairs):
        for fp, ft in zip(facts(p), facts(t)):
            wp, wt = fp.rstrip(".").split(), ft.rstrip(".").split()
            if len(wp) != len(wt) or len(wt) != max(slots.values()) + 1:
                continue
            aligned += 1
            for k, i in slots.items():
                slot_err[k] += wp[i] != wt[i]
    res["slot_error_rate"] = {k: v / max(1, aligned) for k, v in slot_err.items()}
    res["fact_count_correct"] = sum(len(facts(p)) == len(facts(t)) for p, (_, t) in zip(preds, pairs)) / n
    wrong = [(p, t) for p, (_, t) in zip(preds, pairs) if norm(p) != norm(t)][:3]
    res["examples_wrong"] = [{"pred": p, "true": t} for p, t in wrong]
    res["predictions"] = [{"tokens": L, "pred": p, "true": t} for L, p, (_, t) in zip(lengths, preds, pairs)]
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="minipegx/data/demo_long", help="default: the default (long) demo model, "
                    "whose task --task roles is")
    ap.add_argument("--out", default="eval_demo.json")
    ap.add_argument("--quick", action="store_true", help="16 documents per band, greedy only")
    ap.add_argument("--decoding", choices=["both", "beam", "greedy"], default="both")
    ap.add_argument("--bands", help="comma-separated subset of: " + ",".join(b[0] for b in BANDS))
    ap.add_argument("--limit", type=int, help="first N documents of each band (the same documents as the full run)")
    ap.add_argument("--predictions", help="also write every document's prediction and truth here (JSON)")
    ap.add_argument("--docs", type=int, help="N documents per band instead of the band's default (the first ones "
                                             "are the default run's documents: one seed stream per band)")
    ap.add_argument("--task", choices=sorted(TASKS), default="roles",
                    help="roles: demo_data.make_example (the long models); named: make_named_example (the first, "
                         "short demo model's task)")
    ap.add_argument("--procs", type=int, default=2, help="worker processes (one torch thread each)")
    ap.add_argument("--ablation", choices=ablate.ABLATIONS, default="none",
                    help="an inference-time ablation of the same weights (tools/ablate.py)")
    ap.add_argument("--seed", type=int, default=EVAL_SEED,
                    help="document seed stream (default: the reported held-out set); another seed is a validation set "
                         "for choosing between checkpoints without looking at the reported one")
    args = ap.parse_args(argv)

    from transformers import GenerationConfig, PegasusTokenizer
    tok = PegasusTokenizer.from_pretrained(args.model)
    gen = GenerationConfig.from_pretrained(args.model)
    try:
        from rouge_score import rouge_scorer
        rouge = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    except ImportError:
        rouge = None
        print("rouge-score not installed: ROUGE skipped (pip install rouge-score)")

    decodings = {"beam": {"num_beams": gen.num_beams, "length_penalty": gen.length_penalty,
                          "max_length": gen.max_length, "early_stopping": gen.early_stopping},
                 "greedy": {"num_beams": 1, "do_sample": False, "max_length": gen.max_length}}
    if args.quick:
        chosen, bands = ["greedy"], QUICK_BANDS
    else:
        chosen = ["beam", "greedy"] if args.decoding == "both" else [args.decoding]
        bands = [b for b in BANDS if not args.bands or b[0] in args.bands.split(",")]
    if args.docs:
        bands = [(name, lo, hi, args.docs) for name, lo, hi, _ in bands]
    if args.limit:
        bands = [(name, lo, hi, min(n, args.limit)) for name, lo, hi, n in bands]
    results = {"model": args.model, "task": args.task, "ablation": args.ablation, "how": HOW, "eval_seed": args.seed,
               "procs": args.procs, "torch_threads_per_proc": 1, "results": []}
    predictions = []
    for dname in chosen:
        for band in bands:
            t0 = time.time()
            r = evaluate(args.model, tok, band, decodings[dname], args.procs, rouge, args.ablation, args.task,
                         args.seed)
            r.update(decoding=dname, decoding_args=decodings[dname], seconds=round(time.time() - t0, 1))
            predictions.append({"band": r["band"], "decoding": dname, "predictions": r.pop("predictions")})
            results["results"].append(r)
            print(json.dumps({k: v for k, v in r.items() if k != "examples_wrong"}), flush=True)
            for w in r["examples_wrong"][:1]:
                print("  wrong:", w, flush=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)
    if args.predictions:
        with open(args.predictions, "w") as f:
            json.dump(predictions, f)
    return results


if __name__ == "__main__":
    main()
