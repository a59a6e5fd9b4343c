"""The synthetic long-document task the demo PEGASUS-X is trained on (a tool, not part of the runtime).

A document is a long town chronicle of ordinary filler prose. Scattered through it, in random places
and far apart, are 3-5 *key sentences* in one recognisable frame:

    According to the town ledger, Mirela carried 47 lanterns to Ostbridge.

The summary restates exactly those facts, in document order, without the frame:

    Mirela carried 47 lanterns to Ostbridge. Tobias sold 12 barrels to Kellin. ...

Why this task:
- The frame ("According to the ... ledger,") makes key sentences recognisable by content, so a tiny
  model learns *where* to look fast; the slots (name, verb, number, object, place) are drawn fresh
  for every fact, so it must *copy* them from wherever they are, thousands of tokens away.
- Filler sentences also mention names, places and objects ("Locals say Mirela once lived near
  Ostbridge."), so copying "any name" is wrong: the model has to read the frame around it.
- Document order forces the decoder to keep track of which key sentences it has already used.

Everything is a pure function of a `random.Random`, so a seed fixes every document.
Lengths are asked for in *tokens* of the demo tokenizer and approximated through
TOKENS_PER_WORD (measured on the trained sentencepiece model; the eval reports real token counts).
"""

from __future__ import annotations

import random

# Measured with the demo spiece.model on generated text (tools/train_demo.py prints it again): every word is
# one piece (train_demo.add_word_pieces); punctuation adds the rest.
TOKENS_PER_WORD = 1.11

NAMES = """Mirela Tobias Anika Bertram Corin Dalia Emeric Fenna Gideon Halvard Ilse Joran Katrin Leopold
Marit Nils Odile Perrin Quilla Rasmus Saskia Tamsin Ulric Verena Wendel Xenia Yorick Zelda Albin Brisa
Casimir Dorota Elian Frida Gustav Hedda Ivo Jessa Konrad Lenka Matthis Nadia Oskar Pia Roswitha Stellan
Teodor Una Valter Wilma""".split()

PLACES = """Ostbridge Kellin Marrow Dunhaven Felsby Greywater Hollin Ironmere Juniper Kestrel Lowmoor Millbrook
Northam Oakridge Pellworth Quarry Redfern Saltmarsh Thornbury Umberley Valemont Westfold Yarrow Ashcombe
Brackwater Coldharbour Deepdale Elmstead Foxley Gallowgate Heathfield Ivybridge""".split()

# Every verb reads "<verb> <number> <objects> to <place>"; the summary keeps it verbatim, so the task
# is pure selection and copying.
VERBS = "carried sold delivered sent brought shipped lent returned".split()

OBJECTS = """lanterns barrels bells ropes saddles kettles ladders anchors lamps baskets candles blankets
hammers wheels mirrors chairs boots drums flags maps clocks jars nets ploughs""".split()

LEDGERS = "town harbour guild temple mill market".split()

# --------------------------------------------------------------------------------------- filler prose
_ADJ = """old quiet narrow broad grey green muddy bright cold warm long steep busy empty crooked wooden
stone windy dusty gentle heavy distant early late small large""".split()
_NOUN = """river road bridge square field orchard chapel harbour market meadow hill wall tower gate
well lane forest garden barn quay school inn pond valley""".split()
_PEOPLE = """farmers fishermen children merchants travellers weavers bakers shepherds sailors elders
carpenters masons pilgrims students neighbours""".split()
_VERB_P = """gathered walked rested waited talked worked sang argued laughed listened traded wandered
prayed danced""".split()
_TIMES = ["in the morning", "at dusk", "before the harvest", "after the storm", "during the winter",
          "on market days", "every spring", "in the evening", "at midday", "before dawn",
          "through the summer", "after the festival", "for many years", "in those days"]
_WEATHER = ["rain", "fog", "snow", "wind", "sunshine", "frost", "thunder", "mist"]
_TOPICS = ["bread", "fish", "wool", "timber", "salt", "grain", "cider", "honey", "cloth", "cheese"]


def _filler_sentence(rng: random.Random) -> str:
    """One sentence of ordinary chronicle prose (never in the key-sentence frame)."""
    a, a2 = rng.choice(_ADJ), rng.choice(_ADJ)
    n, n2 = rng.choice(_NOUN), rng.choice(_NOUN)
    p, v, t = rng.choice(_PEOPLE), rng.choice(_VERB_P), rng.choice(_TIMES)
    k = rng.randrange(14)
    if k == 0:
        return f"The {a} {n} led past the {a2} {n2}, where the {p} {v} {t}."
    if k == 1:
        return f"{t.capitalize()}, the {p} {v} near the {a} {n}."
    if k == 2:
        return f"Nobody remembers who built the {a} {n}, but the {p} still speak of it {t}."
    if k == 3:
        return f"The {rng.choice(_WEATHER)} came {t} and covered the {a} {n} and the {n2} beyond it."
    if k == 4:
        return f"Prices of {rng.choice(_TOPICS)} and {rng.choice(_TOPICS)} rose and fell as they always had."
    if k == 5:
        return f"Some of the {p} {v} by the {n} while others {rng.choice(_VERB_P)} at the {a2} {n2}."
    if k == 6:
        return f"It was said that the {a} {n} had once been {a2}, long before anyone now living."
    if k == 7:
        return f"The {p} of the {n} kept to themselves and {v} {t}."
    if k == 8:
        return f"A {a} path ran from the {n} up to the {n2}, and it was {a2} {t}."
    if k == 9:
        return f"{t.capitalize()} the air smelled of {rng.choice(_TOPICS)} and {rng.choice(_WEATHER)}."
    # Distractors: the same kinds of names, places, numbers and objects, outside the key frame.
    if k == 10:
        return f"Locals say {rng.choice(NAMES)} once lived near {rng.choice(PLACES)}."
    if k == 11:
        return f"The road to {rng.choice(PLACES)} was {a} and {a2} {t}."
    if k == 12:
        return f"Old {rng.choice(NAMES)} kept {rng.choice(OBJECTS)} in the {a} {n}."
    return f"About {rng.randint(2, 99)} {p} {v} at the {n} {t}."


def make_fact(rng: random.Random) -> tuple[str, str]:
    """A key fact: (sentence in the document's frame, sentence in the summary)."""
    fact = (f"{rng.choice(NAMES)} {rng.choice(VERBS)} {rng.randint(2, 99)} "
            f"{rng.choice(OBJECTS)} to {rng.choice(PLACES)}.")
    key = f"According to the {rng.choice(LEDGERS)} ledger, {fact}"
    return key, fact


def make_example(rng: random.Random, n_tokens: int, n_facts: int | None = None) -> tuple[str, str]:
    """A (document, summary) pair; the document has about `n_tokens` tokens of the demo tokenizer.

    Key sentences go to random, sorted, distinct sentence slots spread over the whole document,
    never the first one (so position 0 is never a shortcut). Paragraphs are 4-9 sentences.
    """
    if n_facts is None:
        n_facts = rng.randint(3, 5)
    n_words = max(60, int(n_tokens / TOKENS_PER_WORD))
    sentences, words = [], 0
    while words < n_words or len(sentences) < n_facts + 2:
        s = _filler_sentence(rng)
        sentences.append(s)
        words += len(s.split())
    facts = [make_fact(rng) for _ in range(n_facts)]
    # Replace filler slots by key sentences (keeps the length), in order of position.
    slots = sorted(rng.sample(range(1, len(sentences)), n_facts))
    for slot, (key, _) in zip(slots, facts):
        sentences[slot] = key
    paragraphs, i = [], 0
    while i < len(sentences):
        k = rng.randint(4, 9)
        paragraphs.append(" ".join(sentences[i:i + k]))
        i += k
    document = "\n\n".join(paragraphs)
    summary = " ".join(fact for _, fact in facts)
    return document, summary


def make_dataset(seed: int, n: int, min_tokens: int, max_tokens: int) -> list[tuple[str, str]]:
    """`n` examples with lengths uniform in [min_tokens, max_tokens], all fixed by `seed`."""
    rng = random.Random(seed)
    return [make_example(rng, rng.randint(min_tokens, max_tokens)) for _ in range(n)]


if __name__ == "__main__":
    doc, summ = make_example(random.Random(0), 400)
    print(doc, "\n\nSUMMARY:", summ)
