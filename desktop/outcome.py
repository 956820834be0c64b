"""A result as the app shows it: built from the engine's JSON form (engine.results.result_to_dict), so a
live result and one restored from autosave are the same object. Masks decode lazily (a vote over 32
samples holds up to a few hundred object masks; the UI looks at a handful)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from engine.rle import decode, union


@dataclass
class Outcome:
    data: dict  # engine.results.result_to_dict output
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def query(self) -> str:
        return self.data["query"]

    @property
    def size(self) -> tuple[int, int]:
        w, h = self.data["image_size"]
        return int(w), int(h)

    @property
    def samples(self) -> list[dict]:
        return self.data["samples"]

    @property
    def clusters(self) -> list[dict]:
        return self.data.get("clusters") or []

    @property
    def vote(self) -> dict | None:
        return self.data.get("vote")

    @property
    def temperature(self) -> float | None:
        """The samples' sampling temperature (0 = greedy); None for results saved before it was recorded."""
        sampling = self.data.get("sampling")
        return None if sampling is None else float(sampling["temperature"])

    @cached_property
    def mask(self) -> np.ndarray:
        return decode(self.data["mask"])

    def target_mask(self, sample: int, obj: int) -> np.ndarray:
        key = (sample, obj)
        if key not in self._cache:
            target = self.samples[sample]["targets"][obj]
            self._cache[key] = decode(target["mask"]) if "mask" in target else self._empty()
        return self._cache[key]

    def sample_mask(self, sample: int) -> np.ndarray:
        """What this sample alone answers: the union of its objects' masks."""
        return self._union([(sample, j) for j in range(len(self.samples[sample]["targets"]))])

    def cluster_mask(self, cluster_id: int) -> np.ndarray:
        cluster = next(c for c in self.clusters if c["id"] == cluster_id)
        return self._union([(m["sample"], m["object"]) for m in cluster["members"]])

    def _union(self, members: list[tuple[int, int]]) -> np.ndarray:
        # Merged as RLE and decoded once: decoding each of a cluster's 24 MP masks took 0.13 s apiece.
        rles = [t["mask"] for t in (self.samples[s]["targets"][o] for s, o in members) if "mask" in t]
        return union(rles) if rles else self._empty()

    def prepare(self, should_stop=None) -> Outcome:
        """Decode what the window shows first (the final mask and its objects), so the work happens on the
        thread that calls this (the worker, the image loader) rather than on the UI thread. `should_stop` (a
        callable) is asked between objects: the app quitting does not wait for the rest."""
        if not self.stopped and "answer_objects" not in self._cache:
            parts = self._answer_objects(should_stop)
            if parts is not None:
                self._cache["answer_objects"] = parts
        return self

    def answer_objects(self) -> list[tuple[str, np.ndarray, dict | None]]:
        """The final mask split into its objects: (label, mask, the answer target behind it: box, point).
        The union of the masks is exactly the final mask (pixels no object claims form one last "(rest)"
        part, with no target). Computed once."""
        if "answer_objects" not in self._cache:
            self._cache["answer_objects"] = self._answer_objects()
        return self._cache["answer_objects"]

    def _answer_objects(self, should_stop=None) -> list[tuple[str, np.ndarray, dict | None]] | None:
        final = self.mask
        if self.vote is None:
            parts = [(t.get("label") or "object", self.target_mask(0, j) & final, t)
                     for j, t in enumerate(self.samples[0]["targets"])] if self.samples else []
        else:
            chosen = {(m["sample"], m["object"]) for m in self.vote.get("chosen") or []}
            parts = []
            for c in self.clusters:
                if not c["selected"]:
                    continue
                if should_stop is not None and should_stop():
                    return None
                # "best" mode: the member the vote kept; "consensus": the cluster's best-scoring member
                member = next((m for m in c["members"] if (m["sample"], m["object"]) in chosen), None) \
                    or max(c["members"], key=lambda m: m["score"])
                target = self.samples[member["sample"]]["targets"][member["object"]]
                parts.append((c["label"] or "object", self.cluster_mask(c["id"]) & final, target))
        parts = [p for p in parts if p[1].any()]
        covered = self._empty()
        for p in parts:
            covered |= p[1]
        if (final & ~covered).any():
            parts.append(("(rest)", final & ~covered, None))
        return parts

    def final_objects(self) -> list[tuple[str, np.ndarray]]:
        """(label, mask) of each object of the final mask (see answer_objects)."""
        return [(label, mask) for label, mask, _ in self.answer_objects()]

    @property
    def stopped(self) -> bool:
        """Stopped by the user: not an answer (nothing was segmented or voted after Stop)."""
        return bool(self.data.get("cancelled"))

    def sample_status(self, index: int) -> str:
        """ok / empty / failed as the engine parsed it, or "stopped" for a sample cut short by Stop."""
        s = self.samples[index]
        return "stopped" if s.get("finish_reason") == "cancelled" else s["status"]

    def headline(self) -> str:
        """One line: what the system decided, and for the unhappy outcomes, why."""
        n = len(self.samples)
        if self.stopped:
            return self.stop_summary()
        failed = [s for s in self.samples if s["status"] == "failed"]
        if n and len(failed) == n:
            reason = failed[0]["reason"] or "no valid answer"
            return (f"Could not parse the model's answer ({reason}). The model did not follow the answer format; "
                    "try rephrasing the query or more samples.")
        if self.data["no_object"] or not self.data["area"]:
            if self.data.get("notes"):  # the engine's guards took a full-frame or featureless mask as nothing found
                return f"No object: {self.data['notes'][-1]}."
            if self.vote is not None:
                v = self.vote
                why = v["reason"] or f"{v['no_object_votes']} of {v['valid_runs']} valid samples said there is none"
                return f"No object: the vote found nothing to segment ({why})."
            s = self.samples[0] if self.samples else {}
            if s.get("reason") and "no such object" not in s["reason"]:
                return f"No object: the model gave no usable answer ({s['reason']}); try rephrasing the query."
            return "No object: the model says nothing in the image matches the query."
        w, h = self.size
        area = self.data["area"]
        objects = len(self.final_objects())
        text = f"{objects} object{'s' if objects != 1 else ''}, {area} pixels ({100 * area / (w * h):.1f}% of the image)"
        if self.vote is not None:
            v = self.vote
            votes = sum(c["votes"] for c in self.clusters if c["selected"])
            text += (f"; {votes} vote{'s' if votes != 1 else ''} of {n} samples for the chosen "
                     f"object{'s' if v['k'] != 1 else ''} ({v['valid_runs']} valid, K={v['k']}, "
                     f"{len(self.clusters)} clusters)")
        return text

    def stop_summary(self) -> str:
        """Where a stopped run was: reasoning (how many samples had finished) or segmenting (all had)."""
        n = len(self.samples)
        finished = sum(self.sample_status(i) != "stopped" for i in range(n))
        if finished < n or not n:
            return f"Stopped while reasoning: {finished} of {n} sample{'s' if n != 1 else ''} had finished."
        return (f"Stopped while segmenting: all {n} sample{'s' if n != 1 else ''} had answered; the masks made "
                "so far were not kept.")

    def sample_summary(self, index: int) -> str:
        s = self.samples[index]
        labels = ", ".join(t.get("label") or "object" for t in s["targets"])
        if self.sample_status(index) == "stopped":
            return f"#{index}: stopped before it finished"
        if s["status"] == "ok":
            return f"#{index}: {len(s['targets'])} object(s): {labels}"
        if s["status"] == "empty":
            return f"#{index}: says no object"
        return f"#{index}: could not parse ({s['reason'] or 'no answer'})"

    def _empty(self) -> np.ndarray:
        w, h = self.size
        return np.zeros((h, w), dtype=bool)
