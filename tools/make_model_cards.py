"""Write the model card (README.md, with the Hugging Face Hub's metadata block) and the tokenizer.json of
every bundled model.

    python -m tools.make_model_cards          # rewrites minipegx/data/*/README.md and */tokenizer.json

tokenizer.json (what AutoTokenizer and PegasusTokenizerFast load) is built from the folder's spiece.model
by minipegx.checkpoint.tokenizer_files, as every folder minipegx saves gets it.

Every number in a card comes from the folder's committed files: the evaluation table and the Hub's
model-index from eval_results.json, steps and training time from training_state.json, sizes from
config.json. The prose (what the model is, its limits) is written here, once per model.
tests/test_bundled_models.py checks each card's table against eval_results.json, so a retrained
model whose card was not rewritten fails the suite.
"""

from __future__ import annotations

import json
import os
import sys

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "minipegx", "data")

CARDS = {
    "demo": {
        "variant": "short",
        "title": "minipegx demo (short): a 4 MB PEGASUS-X trained on 1,000-4,000-token chronicles",
        "what": (
            "The first small PEGASUS-X trained for the minipegx project (`demo_model_path(\"short\")`): a real "
            "`PegasusXForConditionalGeneration` (block-local attention with staggered blocks, global tokens, "
            "ReLU, tied head, sinusoidal positions) that learned one synthetic long-document task. A document is a "
            "town chronicle of filler prose with 3-5 key sentences (\"According to the market ledger, Wendel "
            "returned 87 blankets to Ironmere.\") at random places; the summary lists them in order. Notebooks "
            "01-05 and the course exercises use it."),
        "training": (
            "`python -m tools.train_demo` phase 1 (tools/train_demo.py has the recipe): a sentencepiece "
            "vocabulary trained on the task's text, then a curriculum of growing document lengths."),
        "limits": (
            "It knows one synthetic task and nothing else: on real text its summaries are meaningless. It was "
            "trained on documents of 1,000-4,000 tokens; past them (the `long` band) exact match falls, as the "
            "table shows. Its vocabulary (784 ids) is the task's own, not Pegasus'. It exists to be read, "
            "stepped through and compared with transformers, not to summarize."),
        "docs": "docs/demo_model.md",
    },
    "demo_long": {
        "variant": "long",
        "title": "minipegx demo (long, the default): a 4 MB PEGASUS-X trained up to 16,384 tokens",
        "what": (
            "The default bundled model of minipegx (`demo_model_path(\"long\")`, what `from_pretrained(None)`, "
            "`summarize` and `minipegx demo` load). Same shape as the short demo model, trained further on a task "
            "whose summaries need information from different 64-token blocks: a chronicle introduces its cast "
            "early (\"the miller Mirela ...\"), and ledger entries thousands of tokens later name people only by "
            "role (\"the miller carried 47 lanterns to Ostbridge\"); the summary must put the name back."),
        "training": (
            "`python -m tools.train_demo --out minipegx/data/demo_long`: phase 1 is the short demo model's "
            "recipe, phase 2 switches to the roles task and grows the length to 16,384 tokens, phase 3 adds "
            "eight cycles of mixed lengths and a wide polish stage (docs/demo_long.md has every stage)."),
        "limits": (
            "One synthetic task only; meaningless on real text. Exact match falls with length (the table): "
            "entries get mixed up, often the right person with the rest of another true entry "
            "(docs/demo_long.md, \"What limits it\"). 3 encoder layers of d_model 128: the 16 global tokens "
            "carry most of what crosses blocks. Vocabulary of 800 ids of its own, not Pegasus'."),
        "docs": "docs/demo_long.md",
    },
    "demo_long_nostagger": {
        "variant": "long_nostagger",
        "title": "minipegx demo ablation: the long demo model's recipe without staggered blocks",
        "what": (
            "An ablation sibling of the long demo model (`demo_model_path(\"long_nostagger\")`): the same "
            "recipe and budget through phase 2 with one change, `stagger_local_blocks: false`, so no encoder "
            "layer shifts its blocks by half a block. Compare it with `demo_long_noglobal` and with the main "
            "model after the same stages (docs/demo_long.md, \"Siblings\")."),
        "training": (
            "`python -m tools.train_demo --variant nostagger --stop-stage 9`: phase 1 and phase 2 of the long "
            "model's recipe, not phase 3 (the shipped long model trained 9,200 steps further)."),
        "limits": (
            "Trained with a smaller budget than the shipped long model, so compare it with the main model's "
            "checkpoint at the same budget, not with `demo_long`. Greedy decoding on 50 documents per band: "
            "wide intervals. One synthetic task only."),
        "docs": "docs/demo_long.md",
    },
    "demo_long_noglobal": {
        "variant": "long_noglobal",
        "title": "minipegx demo ablation: the long demo model's recipe without global tokens",
        "what": (
            "An ablation sibling of the long demo model (`demo_model_path(\"long_noglobal\")`): the same recipe "
            "and budget through phase 2 with one change, `num_global_tokens: 0`, so information moves between "
            "blocks only through the staggered layers. Compare it with `demo_long_nostagger` and with the main "
            "model after the same stages (docs/demo_long.md, \"Siblings\")."),
        "training": (
            "`python -m tools.train_demo --variant noglobal --stop-stage 9`: phase 1 and phase 2 of the long "
            "model's recipe, not phase 3."),
        "limits": (
            "Trained with a smaller budget than the shipped long model; greedy decoding on 50 documents per "
            "band: wide intervals. One synthetic task only."),
        "docs": "docs/demo_long.md",
    },
}


def percent(x: float) -> str:
    return f"{100 * x:.1f}%"


def eval_rows(results: list) -> list[list[str]]:
    """One table row per evaluated band: band, decoding, documents, token range, exact match with its 95%
    interval, fact recall, ROUGE-1 / 2 / L."""
    rows = []
    for r in results:
        lo, hi = r["exact_match_ci95"]
        rows.append([r["band"], r["decoding"], str(r["n"]),
                     f"{r['tokens_min']:,} / {r['tokens_median']:,} / {r['tokens_max']:,}",
                     f"{percent(r['exact_match'])} ({100 * lo:.1f}-{100 * hi:.1f})", percent(r["fact_recall"]),
                     f"{r['rouge1']:.3f} / {r['rouge2']:.3f} / {r['rougeL']:.3f}"])
    return rows


HEADER = ["band", "decoding", "documents", "tokens min / median / max", "exact match (95% interval)",
          "fact recall", "ROUGE-1 / 2 / L"]


def markdown_table(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def yaml_str(s: str) -> str:
    return json.dumps(s)        # a JSON string is a valid YAML scalar


def metadata(name: str, card: dict, results: list) -> str:
    """The Hub's metadata block: license, library, pipeline, tags and a model-index of the evaluation."""
    lines = ["---", "language: en", "license: apache-2.0", "library_name: transformers",
             "pipeline_tag: summarization",
             "tags: [pegasus_x, summarization, long-context, synthetic-data, minipegx]",
             "model-index:", f"- name: {yaml_str('minipegx ' + name)}", "  results:",
             "  - task: {type: summarization, name: Summarization}",
             "    dataset: {type: synthetic, name: "
             + yaml_str("minipegx chronicle task (tools/demo_data.py), held-out seed 987654321") + "}",
             "    metrics:"]
    for r in results:
        where = f"{r['band']} tokens, {r['decoding']}"
        lines += [f"    - {{type: exact_match, value: {round(100 * r['exact_match'], 1)}, "
                  f"name: {yaml_str('exact match, ' + where)}}}",
                  f"    - {{type: rouge, value: {round(r['rougeL'], 3)}, name: {yaml_str('ROUGE-L, ' + where)}}}"]
    return "\n".join(lines + ["---"])


def card_text(name: str) -> str:
    folder = os.path.join(DATA, name)
    card = CARDS[name]

    def load(file):
        with open(os.path.join(folder, file), encoding="utf-8") as f:
            return json.load(f)

    ev, state, cfg = load("eval_results.json"), load("training_state.json"), load("config.json")
    results = ev["results"]
    minutes = state.get("train_seconds_total", sum(state.get("stage_seconds", {}).values())) / 60
    shape = (f"d_model {cfg['d_model']}, {cfg['encoder_layers']} encoder layers (blocks of {cfg['block_size']}, "
             f"{cfg['num_global_tokens']} global tokens, staggered: {str(cfg['stagger_local_blocks']).lower()}), "
             f"{cfg['decoder_layers']} decoder layers, vocabulary {cfg['vocab_size']}")
    return f"""{metadata(name, card, results)}

# {card['title']}

{card['what']}

Shape: {shape}. Load it with minipegx or with transformers:

```python
import minipegx
model = minipegx.from_pretrained(minipegx.demo_model_path({yaml_str(card['variant'])}))
tok = minipegx.Tokenizer.from_pretrained(minipegx.demo_model_path({yaml_str(card['variant'])}))

from transformers import AutoModelForSeq2SeqLM, AutoTokenizer   # the same folder
hf_model = AutoModelForSeq2SeqLM.from_pretrained(minipegx.demo_model_path({yaml_str(card['variant'])}))
hf_tok = AutoTokenizer.from_pretrained(minipegx.demo_model_path({yaml_str(card['variant'])}))
```

## Training

{card['training']} Final stage `{state['stage']}`, step {state['step']:,}, smoothed loss
{state['ema_loss']:.3f}; the stages training_state.json lists ({", ".join(state.get("stage_seconds", {}))})
took {minutes:.1f} minutes of training on CPU. Details: {card['docs']}.

## Evaluation

From eval_results.json (`tools/eval_demo.py`, transformers `generate()` on held-out documents that no
training batch contained). Exact match: the generated summary equals the true one after whitespace
normalisation, with its 95% Wilson interval; fact recall: share of true fact sentences reproduced
verbatim; ROUGE: rouge-score F1 with stemming, mean over documents. Tokens are this model's own.

{markdown_table(eval_rows(results))}

## Limits

{card['limits']}

This card is written by `python -m tools.make_model_cards` from the files beside it.
"""


def tokenizer_json(name: str) -> str:
    """The tokenizer.json of a bundled folder, built from its spiece.model."""
    from minipegx.checkpoint.tokenizer_files import backend_tokenizer, load_spiece

    spiece = os.path.join(DATA, name, "spiece.model")
    return backend_tokenizer(load_spiece(spiece)[0], spiece).to_str(pretty=True) + "\n"


def main(argv=None) -> int:
    for name in CARDS:
        for file, text in (("README.md", card_text(name)), ("tokenizer.json", tokenizer_json(name))):
            with open(os.path.join(DATA, name, file), "w", encoding="utf-8") as f:
                f.write(text)
            print("wrote", os.path.join("minipegx", "data", name, file))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
