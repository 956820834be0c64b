"""A reasoner that runs on a `star serve` server: the same `run(image, query, n, ...)` as a local one,
with the reasoning streamed as it is decoded, Stop (closing the stream cancels the server's work) and
the full result (every sample, the vote, the masks) when the server sends it (`return_result`)."""

from __future__ import annotations

import io

import numpy as np

from ..pipeline import Event, Result, SampleResult, Timings
from ..policy.types import CancelToken, SamplingParams
from .client import ServeClient, StreamCancelled


class RemoteReasoner:
    """A `engine.pipeline.Reasoner` whose models run on a server: `run` returns the Result the server
    computed (rebuilt from the JSON it crossed the network as, `engine.results.result_from_dict`)."""

    policy = None

    def __init__(self, url: str, *, api_key: str | None = None, model: str | None = None, timeout: float = 3600.0):
        self.client = ServeClient(url, api_key=api_key, model=model, timeout=timeout)
        model_id = self.client.model_id()
        info = self.client.models()[model_id]
        self.bundle = {**(info.get("bundle") or {}), "server": url, "model": model_id}
        # The server's bundle recommendations (the server decodes under its own grammar setting).
        self.vote_temperature = float(info.get("vote_temperature", 1.0))
        self.answer_grammar = bool(info.get("answer_grammar", False))
        self.segmenter = type("RemoteSegmenter", (), {"name": f"on {url}"})()

    def temperature(self, requested: float | None) -> float:
        return self.vote_temperature if requested is None else float(requested)

    def run(self, image, query: str, n: int = 1, *, sampling: SamplingParams | None = None, vote=None,
            on_event=None, cancel: CancelToken | None = None) -> Result:
        from PIL import Image

        from ..results import result_from_dict

        rgb = np.asarray(image)
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, "PNG")
        params = {"n": n, "return_result": True}
        if sampling is not None:
            params.update(seed=sampling.seed, max_new_tokens=sampling.max_new_tokens)
            if n > 1 and sampling.temperature:
                params["temperature"] = sampling.temperature
        emit = on_event or (lambda e: None)
        texts: dict[int, str] = {}

        def relay(kind: str, data: dict) -> None:
            if kind == "token":
                texts[data["sample"]] = texts.get(data["sample"], "") + data["text"]
                emit(Event("token", data["sample"], data["text"]))
            elif kind == "stage":
                emit(Event("stage", text=data["text"]))
            elif kind == "progress":
                emit(Event("progress", text=data["text"], data=(data["done"], data["total"])))
            elif kind == "sample":
                emit(Event("sample", data["sample"], data=_sample(data["sample"], texts.get(data["sample"], ""),
                                                                  data["status"], data["finish_reason"])))

        try:
            data = self.client.stream(buf.getvalue(), query, params, on_event=relay,
                                      should_stop=(lambda: cancel.cancelled) if cancel else None)
        except StreamCancelled:
            h, w = rgb.shape[:2]
            samples = [_sample(i, texts.get(i, ""), "failed", "cancelled") for i in range(n)]
            return Result(query=query, image_size=(w, h), mask=np.zeros((h, w), bool), no_object=False,
                          samples=samples, object_masks=np.zeros((0, h, w), bool), vote=None, timings=Timings(),
                          bundle=self.bundle, cancelled=True)
        return result_from_dict({**data["star"]["result"], "bundle": self.bundle})

    def close(self) -> None:
        pass


def _sample(index: int, text: str, status: str, finish_reason: str) -> SampleResult:
    return SampleResult(index, text, status, "", None, "", finish_reason, [])
