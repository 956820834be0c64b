"""Referring queries made from class names, for annotation folders that carry no written query: "the cup"
for one object of a label, "all the cups" for several, rephrased by a seeded hash of the image and label
(the same sample gets the same words on every run, and a dataset gets a spread of phrasings)."""

from __future__ import annotations

import hashlib
import re

ONE = ("the {label}", "{label}", "the {label} in the picture", "where is the {label}?", "segment the {label}")
SEVERAL = ("all the {plural}", "every {label}", "the {plural}", "all {plural} in the picture", "segment the {plural}")
# Labels that name nothing: no query is made from them (this project's default label among them).
GENERIC_LABELS = {"object", "objects", "thing", "item", "_background_", "background", "__ignore__"}


def plain_label(label: str) -> str:
    """A class name as words: underscores and hyphens to spaces, camelCase split, lower case."""
    words = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", str(label)).replace("_", " ").replace("-", " ")
    return " ".join(words.split()).lower()


def plural(noun: str) -> str:
    """English plural of the last word (cup -> cups, box -> boxes, berry -> berries); an irregular noun gets
    the regular form, still a readable query."""
    head, _, last = noun.rpartition(" ")
    if re.search(r"(s|x|z|ch|sh)$", last):
        last += "es"
    elif re.search(r"[^aeiou]y$", last):
        last = last[:-1] + "ies"
    else:
        last += "s"
    return f"{head} {last}".strip()


def label_query(label: str, count: int, key: str, seed: int = 0) -> str:
    """The query for `count` objects labelled `label`; `key` (the image's id) and `seed` pick the phrasing."""
    words = plain_label(label)
    templates = ONE if count == 1 else SEVERAL
    digest = hashlib.sha256(f"{seed}|{key}|{label}".encode()).digest()
    return templates[digest[0] % len(templates)].format(label=words, plural=plural(words))


def usable_label(label: str) -> bool:
    """Whether a label can become a query: a name, not a placeholder or an ignore region."""
    words = plain_label(label)
    return bool(words) and words not in GENERIC_LABELS and "ignore" not in words
