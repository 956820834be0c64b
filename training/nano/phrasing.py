"""How people phrase a query: the wider world rewrites a query's noun phrase as a command, a question or
a bare phrase, with synonyms, capitals, a trailing mark, a dropped article and the odd typo.

Two wording sets: TRAIN for the training streams, SHIFT (disjoint templates and synonyms, more typos) for the
shift split, so that split measures phrasings training never saw. Capitals and the trailing mark change
nothing the model sees (the prompt lower-cases the query and strips `."?!`, docs/protocol.md §3); they are
kept so that the rows look like what people type.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

import numpy as np

from .queries import REFERRING, Query

QUESTION_WORDS = ("what", "where", "which", "who", "how", "is ", "are ", "can ", "could ")


@dataclass(frozen=True)
class Wording:
    commands: tuple[str, ...]  # templates with {q}: the noun phrase inside
    synonyms: dict[str, tuple[str, ...]]  # whole words -> what may replace them
    typo_rate: float  # chance that one word of the query has two letters swapped or one dropped
    bare_rate: float = 0.3  # chance the noun phrase stays as it is


TRAIN = Wording(
    commands=("segment {q}", "show me {q}", "find {q}", "where is {q}", "which one is {q}", "highlight {q}",
              "can you find {q}", "select {q}", "mask {q}"),
    synonyms={"object": ("thing", "item"), "largest": ("biggest",), "big": ("large",), "small": ("little",)},
    typo_rate=0.08,
)
SHIFT = Wording(
    commands=("please segment {q}", "i am looking for {q}", "point out {q}", "could you show me {q}", "locate {q}",
              "give me a mask of {q}", "outline {q}"),
    synonyms={"object": ("one", "piece"), "largest": ("hugest",), "big": ("huge",), "small": ("tiny",)},
    typo_rate=0.2,
    bare_rate=0.15,
)


def _typo(text: str, rng: np.random.Generator) -> str:
    words = text.split(" ")
    long = [i for i, w in enumerate(words) if len(w) >= 5 and w.isalpha()]
    if not long:
        return text
    i = long[rng.integers(len(long))]
    w = words[i]
    k = int(rng.integers(1, len(w) - 2))
    words[i] = w[:k] + w[k + 1] + w[k] + w[k + 2:] if rng.random() < 0.5 else w[:k] + w[k + 1:]
    return " ".join(words)


def rephrase(text: str, rng: np.random.Generator, wording: Wording = TRAIN, *, noun_phrase: bool = True) -> str:
    """`text` as a person might type it, drawn from `wording`. `noun_phrase`: the text names objects
    ("the red circle"), so its article may go; a description ("the shape of a coin") keeps it."""
    for word, options in wording.synonyms.items():
        if re.search(rf"\b{word}\b", text) and rng.random() < 0.5:
            text = re.sub(rf"\b{word}\b", options[rng.integers(len(options))], text)
    is_question = text.startswith(QUESTION_WORDS)
    if not is_question and rng.random() >= wording.bare_rate:
        if noun_phrase and text.startswith("the ") and rng.random() < 0.2:
            text = text[4:]  # "segment red circle"
        template = wording.commands[rng.integers(len(wording.commands))]
        text = template.format(q=text)
        is_question = text.startswith(QUESTION_WORDS)
    elif noun_phrase and text.startswith("the ") and rng.random() < 0.2:
        text = text[4:]  # a bare "red circle"
    if rng.random() < wording.typo_rate:
        text = _typo(text, rng)
    roll = rng.random()
    if roll < 0.3:
        text = text[0].upper() + text[1:]
    elif roll < 0.35:
        text = text.upper()
    if is_question and rng.random() < 0.7:
        text += "?"
    elif rng.random() < 0.1:
        text += "."
    return text


def rephrased(query: Query, rng: np.random.Generator, wording: Wording = TRAIN) -> Query:
    """The query with its text rephrased; a step that quotes the text quotes the new one (as the prompt
    shows it: lower case, end marks stripped)."""
    text = rephrase(query.text, rng, wording, noun_phrase=query.reasoning_type == REFERRING)
    shown = text.lower().strip('."?!')
    steps = [s.replace(f'"{query.text}"', f'"{shown}"') for s in query.steps]
    return dataclasses.replace(query, text=text, steps=steps)
