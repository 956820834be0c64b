"""A client of `star serve` (or any X-AnyLabeling-Server) on the standard library alone, for `star label
--server` and the desktop app: predict, the server-sent-events stream, and the protocol's errors as
`ServerError` with their codes."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator

from ..errors import StarError


class ServerError(StarError):
    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}" if code else message)
        self.code = code


class StreamCancelled(StarError):
    """`should_stop` said stop: the stream was closed (the server cancels the work)."""


class ServeClient:
    def __init__(self, url: str, *, api_key: str | None = None, model: str | None = None, timeout: float = 600.0,
                 api_key_header: str = "Token"):
        if not url.startswith(("http://", "https://")):
            raise ServerError("", f"--server {url!r} is not an http:// or https:// URL")
        self.url = url.rstrip("/")
        self.headers = {"Content-Type": "application/json"}
        if api_key:
            self.headers[api_key_header] = api_key
        self.timeout = timeout
        self.model = model

    def _request(self, method: str, path: str, body: dict | None = None, *, stream: bool = False):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=self.headers)
        try:
            return urllib.request.urlopen(req, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            try:
                err = json.loads(exc.read()).get("error", {})
            except (ValueError, AttributeError):
                err = {}
            raise ServerError(err.get("code", f"HTTP {exc.code}"), err.get("message", exc.reason)) from None
        except (urllib.error.URLError, OSError) as exc:
            raise ServerError("", f"cannot reach {self.url}: {getattr(exc, 'reason', exc)}") from None

    def _json(self, method: str, path: str, body: dict | None = None) -> dict:
        with self._request(method, path, body) as resp:
            payload = json.loads(resp.read())
        if isinstance(payload, dict) and payload.get("success") is False:
            err = payload.get("error", {})
            raise ServerError(err.get("code", ""), err.get("message", "the server refused the request"))
        return payload

    def health(self) -> dict:
        return self._json("GET", "/health")

    def models(self) -> dict:
        return self._json("GET", "/v1/models")["data"]

    def model_id(self) -> str:
        if self.model:
            return self.model
        names = list(self.models())
        if len(names) != 1:
            raise ServerError("MODEL_NOT_FOUND", f"the server has {len(names)} models ({', '.join(names)}); "
                                                 "choose one with --model")
        self.model = names[0]
        return self.model

    def _body(self, image: bytes, query: str, params: dict | None) -> dict:
        return {"model": self.model_id(), "image": base64.b64encode(image).decode(),
                "params": {"text_prompt": query, **(params or {})}}

    def predict(self, image: bytes, query: str, params: dict | None = None) -> dict:
        """The protocol's `data` ({"shapes", "description", "star"}) for an encoded image file's bytes."""
        return self._json("POST", "/v1/predict", self._body(image, query, params))["data"]

    def stream(self, image: bytes, query: str, params: dict | None = None,
               on_event: Callable[[str, dict], None] | None = None,
               should_stop: Callable[[], bool] | None = None) -> dict:
        """Like predict, through /v1/predict/stream: `on_event(kind, data)` for each stage / token /
        sample / progress event as the server sends it; returns the result's data. When `should_stop()`
        turns true the stream is closed (the server then cancels the work) and StreamCancelled raised."""
        with self._request("POST", "/v1/predict/stream", self._body(image, query, params)) as resp:
            for kind, data in _events(resp):
                if should_stop is not None and should_stop():
                    raise StreamCancelled("stopped")
                if kind == "result":
                    return data["data"]
                if kind == "error":
                    err = data.get("error", {})
                    raise ServerError(err.get("code", ""), err.get("message", "the server failed"))
                if on_event:
                    on_event(kind, data)
        raise ServerError("", "the stream ended without a result")


def _events(resp) -> Iterator[tuple[str, dict]]:
    kind, data = "message", []
    for raw in resp:
        line = raw.decode().rstrip("\r\n")
        if not line:
            if data:
                yield kind, json.loads("\n".join(data))
            kind, data = "message", []
        elif line.startswith("event:"):
            kind = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
