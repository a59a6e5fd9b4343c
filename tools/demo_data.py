"""The synthetic long-document task the demo PEGASUS-X is trained on (a tool, not part of the runtime).

A document is a long town chronicle of ordinary filler prose. In its first 40% the chronicle introduces
its cast: 4-8 *introductions*, each giving a person a role,

    In those days the miller Mirela lived near the orchard.

and in the remaining 60% are 3-5 *key sentences* (ledger entries) that name their subject only by role:

    According to the town ledger, the miller carried 47 lanterns to Ostbridge.

The summary restates the ledger entries, in document order, each with its role *and* the person who held it:

    The miller Mirela carried 47 lanterns to Ostbridge. The ferryman Tobias sold 12 barrels to Kellin. ...

Why this task:
- The name is *not* in the key sentence: it sits in an introduction usually thousands of tokens and many
  64-token blocks earlier, so information has to travel between blocks (through the encoder's global
  tokens and staggered blocks, or through the decoder's cross-attention in two hops: role, then the
  introduction with that role).
- The summary writes the role before the name, as the introduction does, so a decoder that has just
  written "The miller" can look up the name that follows "miller" in the introduction. Two easier-looking
  drafts stalled: summaries with the name only ("Mirela carried ...") and introductions in two forms
  ("At that time the miller was Mirela." / "Mirela worked as the miller back then.") left names at
  chance (~20%, the cast's size) after 300-400 steps of the recipe's first stage, while with this form
  names were right 93% of the time after 300 (tools/train_demo.py, roles-tiny).
- 1-3 introduced people never appear in the ledger, and filler mentions names too ("Locals say Mirela
  once lived near Ostbridge."), so "copy a name from an introduction" or "any name" is wrong: the role
  must be matched.
- The other slots (verb, number, object, place) are drawn fresh per fact and copied from wherever the
  key sentence is; document order makes the decoder track which entries it has used.

The first demo model's task, where key sentences name their subject directly (`make_named_example`),
is kept: the recipe's first phase trains on it (tools/train_demo.py).

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

# Roles a person is introduced with and then referred to by (one token each in the demo tokenizer).
ROLES = """miller smith baker brewer tanner cooper potter ferryman butcher cobbler tailor chandler
thatcher fletcher gardener innkeeper""".split()
INTRO_SHARE = 0.4               # introductions in the first 40% of the sentences, ledger entries after

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


def make_named_example(rng: random.Random, n_tokens: int, n_facts: int | None = None) -> tuple[str, str]:
    """The first demo task's (document, summary): key sentences name their subject (no introductions).

    Key sentences go to random, sorted, distinct sentence slots spread over the whole document,
    never the first one (so position 0 is never a shortcut). Paragraphs are 4-9 sentences.
    """
    if n_facts is None:
        n_facts = rng.randint(3, 5)
    sentences = _filler(rng, n_tokens, n_facts + 2)
    facts = [make_fact(rng) for _ in range(n_facts)]
    # Replace filler slots by key sentences (keeps the length), in order of position.
    slots = sorted(rng.sample(range(1, len(sentences)), n_facts))
    for slot, (key, _) in zip(slots, facts):
        sentences[slot] = key
    return _paragraphs(rng, sentences), " ".join(fact for _, fact in facts)


def _filler(rng: random.Random, n_tokens: int, min_sentences: int) -> list[str]:
    """Filler sentences of about `n_tokens` tokens in all (at least `min_sentences` of them)."""
    n_words = max(60, int(n_tokens / TOKENS_PER_WORD))
    sentences, words = [], 0
    while words < n_words or len(sentences) < min_sentences:
        s = _filler_sentence(rng)
        sentences.append(s)
        words += len(s.split())
    return sentences


def _paragraphs(rng: random.Random, sentences: list[str]) -> str:
    """Sentences joined into paragraphs of 4-9 sentences."""
    paragraphs, i = [], 0
    while i < len(sentences):
        k = rng.randint(4, 9)
        paragraphs.append(" ".join(sentences[i:i + k]))
        i += k
    return "\n\n".join(paragraphs)


def make_intro(rng: random.Random, name: str, role: str) -> str:
    """The sentence that introduces `name` as the `role` (the role right before the name, as in the summary)."""
    return f"In those days the {role} {name} lived near the {rng.choice(_NOUN)}."


def make_example(rng: random.Random, n_tokens: int, n_facts: int | None = None) -> tuple[str, str]:
    """A (document, summary) pair; the document has about `n_tokens` tokens of the demo tokenizer.

    The cast (n_facts + 1..3 people, distinct names and roles) is introduced at random, distinct sentence
    slots in the first INTRO_SHARE of the document, never the first slot; the ledger entries, one per
    fact, each about a different member of the cast, go to random sorted slots after that. The summary
    lists the facts in the order of the entries, each with its person's name.
    """
    if n_facts is None:
        n_facts = rng.randint(3, 5)
    n_cast = n_facts + rng.randint(1, 3)
    sentences = _filler(rng, n_tokens, n_cast + n_facts + 2)
    names, roles = rng.sample(NAMES, n_cast), rng.sample(ROLES, n_cast)
    split = max(n_cast + 1, int(INTRO_SHARE * len(sentences)))
    for slot, name, role in zip(rng.sample(range(1, split), n_cast), names, roles):
        sentences[slot] = make_intro(rng, name, role)
    summary = []
    for slot, k in zip(sorted(rng.sample(range(split, len(sentences)), n_facts)), rng.sample(range(n_cast), n_facts)):
        key, fact = make_fact(rng)
        # make_fact drew a name; the entry names the role instead, the summary the cast member's name.
        head, rest = key.split(", ", 1)
        sentences[slot] = f"{head}, the {roles[k]} {rest.split(' ', 1)[1]}"
        summary.append(f"The {roles[k]} {names[k]} {fact.split(' ', 1)[1]}")
    return _paragraphs(rng, sentences), " ".join(summary)


def make_dataset(seed: int, n: int, min_tokens: int, max_tokens: int, make=None) -> list[tuple[str, str]]:
    """`n` examples (of `make`, default make_example) with lengths uniform in [min_tokens, max_tokens], fixed by `seed`."""
    make = make or make_example
    rng = random.Random(seed)
    return [make(rng, rng.randint(min_tokens, max_tokens)) for _ in range(n)]


if __name__ == "__main__":
    doc, summ = make_example(random.Random(0), 400)
    print(doc, "\n\nSUMMARY:", summ)
