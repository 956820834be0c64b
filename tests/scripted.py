"""Scripted answers for testing the reasoner without a trained policy: a random tiny VLM never writes a
valid answer, so these tests put a policy double that returns fixed completions in front of the real
segmenter of the tiny bundle. Coordinates are in the tiny bundle's frame (pixels-112) and converted to
the original image by hand (docs/protocol.md §2)."""

import numpy as np

from engine.honesty import MaskGuard
from engine.policy.types import Completion, PolicyTimings

W, H = 224, 184  # original image; the tiny bundle's frame is pixels-112
FRAME = 112

# The tiny bundle's SAM has random weights and paints nearly the whole image for any prompt; the tests that
# compose it with scripted answers keep every mask (the guards have their own tests, test_honesty.py).
RANDOM_SAM = {"mask_guard": MaskGuard.off()}

RED = ("red square", (15, 10, 45, 35), (30, 22))  # frame pixels
BLUE = ("blue circle", (55, 40, 100, 95), (78, 68))


def answer(*objects) -> str:
    body = ", ".join(f'{{"label": "{lb}", "bbox_2d": [{b[0]},{b[1]},{b[2]},{b[3]}], "point_2d": [{p[0]},{p[1]}]}}'
                     for lb, b, p in objects)
    return f"<think> looking </think> <answer>[{body}]</answer>"


def to_original(values) -> list[int]:
    """docs/protocol.md §2 by hand: x * W / 112, y * H / 112, rounded half up."""
    return [int(v * (W if i % 2 == 0 else H) / FRAME + 0.5) for i, v in enumerate(values)]


def scene() -> np.ndarray:
    from export.verify import probe_image

    return np.ascontiguousarray(probe_image(H)[:, :W])


class ReplayPolicy:
    """Returns the given completions, streaming them token by token (one token = one character)."""

    def __init__(self, texts):
        self.texts = texts
        self.timings = PolicyTimings()

    def sample(self, image, query, n, sampling, *, on_token=None, cancel=None):
        assert n == len(self.texts)
        for i, text in enumerate(self.texts):
            for ch in text:
                if on_token:
                    on_token(i, ch)
        return [Completion(i, t, [], "stop") for i, t in enumerate(self.texts)]


class ScriptedPolicy:
    """Fixed completions per query; records (query, seed) of every call; cancels the run from inside the
    decode of `cancel_on` (as the app's Stop button or Ctrl-C would)."""

    def __init__(self, script, cancel_on=None):
        self.script, self.cancel_on, self.calls = script, cancel_on, []
        self.timings = PolicyTimings()

    def sample(self, image, query, n, sampling, *, on_token=None, cancel=None):
        self.calls.append((query, sampling.seed))
        if query == self.cancel_on and cancel is not None:
            cancel.cancel()
            return [Completion(i, "<think> half", [], "cancelled") for i in range(n)]
        texts = self.script[query]
        assert len(texts) == n
        return [Completion(i, t, [], "stop") for i, t in enumerate(texts)]
