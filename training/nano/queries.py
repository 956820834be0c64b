"""Queries over a nano scene, in StAR's four reasoning types (plus plain referring queries for the
curriculum), with their targets and a short reasoning trace for the supervised warm-up.

A family returns None when its query would be ambiguous in the scene (e.g. "the largest object"
when two objects are nearly the same size), so every query has one defensible answer set.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .shapes import KINDS
from .world import Scene, SceneObject

PURPOSE = "purpose/functional"
COMMONSENSE = "commonsense/knowledge-intensive"
COMPARATIVE = "comparative/relational"
COMPOSITIONAL = "compositional/multi-hop"
REFERRING = "referring"
REASONING_TYPES = (PURPOSE, COMMONSENSE, COMPARATIVE, COMPOSITIONAL)


@dataclass
class Query:
    text: str
    reasoning_type: str
    targets: list[int]  # object ids; empty = no such object in the scene
    steps: list[str]  # the reasoning, one sentence each
    # The listed trace (dataset.TRACES) writes every object's size before `steps` when the answer is a
    # comparison of sizes: the comparison is then made over numbers in the text, not in one step.
    sizes: bool = False


AFFORDANCE_QUERIES = {
    "eat": ("something you could eat", "what could I have as a snack", "the food in this picture"),
    "drink": ("something to drink from", "what would you pour tea into"),
    "roll": ("something that could roll", "what would roll down a hill"),
    "drive": ("something you could drive", "what could take me to work"),
    "live": ("where could a family live", "a place to live"),
    "shade": ("something that gives shade on a sunny day",),
    "play": ("something to play with in the park",),
    "grow": ("something that grows",),
}
AFFORDANCE_FACT = {  # "<kinds> are ..."
    "eat": "food", "drink": "things you drink from", "roll": "round enough to roll", "drive": "vehicles",
    "live": "homes", "shade": "tall and leafy", "play": "toys", "grow": "living things",
}
COLOUR_FACTS = {
    "yellow": "a ripe banana", "green": "grass", "blue": "the sky on a clear day", "white": "snow", "black": "coal",
    "brown": "chocolate", "red": "a fire truck", "orange": "a pumpkin", "purple": "lavender", "pink": "a flamingo",
}
KIND_FACTS = {
    "apple": "the fruit that keeps the doctor away", "banana": "a monkey's favourite fruit", "hexagon": "the shape of a honeycomb cell",
    "triangle": "the shape of a slice of pizza", "star": "the shape that twinkles in the night sky", "circle": "the shape of a coin",
    "square": "the shape of a chessboard square", "tree": "the thing birds build nests in", "cup": "what coffee is served in",
}
NUMBER_WORDS = {0: "zero", 1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six"}


def _plural(kind: str) -> str:
    return kind + "es" if kind.endswith("ch") else kind + "s"


def with_article(label: str) -> str:
    return ("an " if label[0] in "aeiou" else "a ") + label


def _describe(objs: list[SceneObject]) -> str:
    if not objs:
        return "I see nothing like that in the image"
    names = [with_article(o.label) for o in objs]
    return "I see " + (names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1])


def _unique_label(scene: Scene, rng) -> SceneObject | None:
    counts = {}
    for o in scene.objects:
        counts[o.label] = counts.get(o.label, 0) + 1
    unique = [o for o in scene.objects if counts[o.label] == 1]
    return unique[rng.integers(len(unique))] if unique else None


# ---- families: (scene, rng, want_empty) -> Query | None ----------------------------------------


def referring(scene, rng, want_empty):
    present = {o.label for o in scene.objects}
    if want_empty:
        kind = list(KINDS)[rng.integers(len(KINDS))]
        colour = KINDS[kind].colours[rng.integers(len(KINDS[kind].colours))]
        if f"{colour} {kind}" in present:
            return None
        label = f"{colour} {kind}"
    else:
        label = scene.objects[rng.integers(len(scene.objects))].label
    targets = [o for o in scene.objects if o.label == label]
    text = f"the {label}" if len(targets) <= 1 else f"all the {_plural(label)}"
    return Query(text, REFERRING, [o.id for o in targets], [f"The query names a {label}", _describe(targets)])


def purpose(scene, rng, want_empty):
    afford = list(AFFORDANCE_QUERIES)[rng.integers(len(AFFORDANCE_QUERIES))]
    targets = [o for o in scene.objects if afford in KINDS[o.kind].affordances]
    if bool(targets) == want_empty:
        return None
    phrasings = AFFORDANCE_QUERIES[afford]
    text = phrasings[rng.integers(len(phrasings))]
    names = [_plural(k) for k in sorted(k for k, d in KINDS.items() if afford in d.affordances)]
    fact = (names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]) + f" are {AFFORDANCE_FACT[afford]}"
    fact = fact[0].upper() + fact[1:]
    return Query(text, PURPOSE, [o.id for o in targets], [f'The query is "{text}"', fact, _describe(targets)])


def commonsense(scene, rng, want_empty):
    if rng.random() < 0.5:
        colour = list(COLOUR_FACTS)[rng.integers(len(COLOUR_FACTS))]
        targets = [o for o in scene.objects if o.colour == colour]
        text = ("the object with the colour of " if rng.random() < 0.5 else "something coloured like ") + COLOUR_FACTS[colour]
        fact = f"{COLOUR_FACTS[colour][0].upper()}{COLOUR_FACTS[colour][1:]} is {colour}"
    else:
        kind = list(KIND_FACTS)[rng.integers(len(KIND_FACTS))]
        targets = [o for o in scene.objects if o.kind == kind]
        text = KIND_FACTS[kind]
        fact = f"That describes a {kind}"
    if bool(targets) == want_empty:
        return None
    return Query(text, COMMONSENSE, [o.id for o in targets], [f'The query is "{text}"', fact, _describe(targets)])


def _extreme(scene, key: Callable[[SceneObject], float], margin: float):
    ranked = sorted(scene.objects, key=key, reverse=True)
    if len(ranked) >= 2 and key(ranked[0]) - key(ranked[1]) < margin:
        return None  # too close to call
    return ranked[0]


def comparative(scene, rng, want_empty):
    if want_empty or len(scene.objects) < 2:
        return relational(scene, rng, want_empty)
    size = scene.size[0]
    choice = rng.integers(6)
    if choice == 0:
        obj, text, why = _extreme(scene, lambda o: np.log(o.area), np.log(1.3)), "the largest object", "covers the most area"
    elif choice == 1:
        obj, text, why = _extreme(scene, lambda o: -np.log(o.area), np.log(1.3)), "the smallest object", "covers the least area"
    elif choice == 2:
        obj, text, why = _extreme(scene, lambda o: -o.centroid[0], 0.08 * size), "the leftmost object", "is furthest to the left"
    elif choice == 3:
        obj, text, why = _extreme(scene, lambda o: o.centroid[0], 0.08 * size), "the rightmost object", "is furthest to the right"
    elif choice == 4:
        obj, text, why = _extreme(scene, lambda o: -o.centroid[1], 0.08 * scene.size[1]), "the object nearest the top", "is highest in the image"
    else:
        return relational(scene, rng, want_empty)
    if obj is None:
        return None
    return Query(text, COMPARATIVE, [obj.id], [f"The query compares the objects: {text}", f"The {obj.label} {why}"],
                 sizes=choice < 2)


RELATIONS = {
    "left of": lambda a, r, m: a.centroid[0] < r.centroid[0] - m,
    "right of": lambda a, r, m: a.centroid[0] > r.centroid[0] + m,
    "above": lambda a, r, m: a.centroid[1] < r.centroid[1] - m,
    "below": lambda a, r, m: a.centroid[1] > r.centroid[1] + m,
}


def relational(scene, rng, want_empty):
    ref = _unique_label(scene, rng)
    if ref is None:
        return None
    rel = list(RELATIONS)[rng.integers(len(RELATIONS))]
    margin = 0.06 * scene.size[0 if "of" in rel else 1]
    # Objects within the margin would make the answer debatable: skip such scenes.
    if any(abs(o.centroid[0 if "of" in rel else 1] - ref.centroid[0 if "of" in rel else 1]) <= margin for o in scene.objects if o is not ref):
        return None
    targets = [o for o in scene.objects if o is not ref and RELATIONS[rel](o, ref, margin)]
    if bool(targets) == want_empty:
        return None
    text = f"everything {rel} the {ref.label}" if len(targets) > 1 else f"the object {rel} the {ref.label}"
    return Query(text, COMPARATIVE, [o.id for o in targets], [f"First I find the {ref.label}", f"Then I look {rel} it", _describe(targets)])


def compositional(scene, rng, want_empty):
    choice = rng.integers(3)
    if choice == 0:  # count one kind, then match corners
        counted = ("circle", "star", "apple", "tree", "car")[rng.integers(5)]
        n = sum(o.kind == counted for o in scene.objects)
        if n == 0:
            return None
        targets = [o for o in scene.objects if KINDS[o.kind].corners == n and o.kind != counted]
        text = f"the shape with as many corners as there are {_plural(counted)}"
        steps = [f"There {'is' if n == 1 else 'are'} {NUMBER_WORDS.get(n, str(n))} {counted if n == 1 else _plural(counted)}",
                 f"So I need a shape with {NUMBER_WORDS.get(n, str(n))} corners", _describe(targets)]
    elif choice == 1:  # same colour as a reference
        ref = _unique_label(scene, rng)
        if ref is None:
            return None
        targets = [o for o in scene.objects if o is not ref and o.colour == ref.colour]
        text = f"the other object with the same colour as the {ref.label}"
        steps = [f"The {ref.label} is {ref.colour}", f"Other {ref.colour} objects are the answer", _describe(targets)]
    else:  # affordance + superlative
        afford = ("eat", "roll", "grow")[rng.integers(3)]
        able = [o for o in scene.objects if afford in KINDS[o.kind].affordances]
        if not able:
            targets, text = [], f"the largest thing that could {'be eaten' if afford == 'eat' else afford}"
        else:
            best = max(able, key=lambda o: o.area)
            if any(o is not best and o.area * 1.3 > best.area for o in able):
                return None
            targets, text = [best], f"the largest thing that could {'be eaten' if afford == 'eat' else afford}"
        steps = [f"Things that {'can be eaten' if afford == 'eat' else 'can ' + afford} are candidates", "Among them I pick the largest", _describe(targets)]
    if bool(targets) == want_empty:
        return None
    return Query(text, COMPOSITIONAL, [o.id for o in targets], steps, sizes=choice == 2)


FAMILIES: dict[str, tuple[Callable, ...]] = {
    PURPOSE: (purpose,),
    COMMONSENSE: (commonsense,),
    COMPARATIVE: (comparative, relational),
    COMPOSITIONAL: (compositional,),
    REFERRING: (referring,),
}


def make_query(scene: Scene, rng: np.random.Generator, types: tuple[str, ...] = REASONING_TYPES, empty_rate: float = 0.1,
               attempts: int = 40) -> Query | None:
    """A query of one of `types` (chosen uniformly) with one defensible answer set; about `empty_rate`
    of them have no target in the scene. None if no family fits this scene."""
    want_empty = bool(rng.random() < empty_rate)
    order = [types[i] for i in rng.permutation(len(types))]
    for rtype in order:  # the first type is the uniform choice; others only if it cannot fit this scene
        families = FAMILIES[rtype]
        for _ in range(attempts):
            query = families[rng.integers(len(families))](scene, rng, want_empty)
            if query is not None:
                return query
    return None
