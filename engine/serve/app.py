"""The HTTP face of `star serve`: X-AnyLabeling-Server's REST protocol (health, models, predict) and a
server-sent-events stream of the reasoning trace, on FastAPI.

FastAPI + uvicorn because X-AnyLabeling-Server itself is built on them (the same request handling and
error shapes its clients already meet), they stream server-sent events without extra parts, and uvicorn
shuts down gracefully on SIGINT / SIGTERM. Errors follow the protocol: HTTP 200 with
{"success": false, "error": {"code", "message"}}, except a full queue (503, QUEUE_FULL), a body over the
limit (413, REQUEST_TOO_LARGE) and a missing or wrong API key (401, UNAUTHORIZED). The server never opens a path a client
names: images arrive as base64 bytes and nothing else.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.requests import ClientDisconnect

from ..policy.types import MAX_SAMPLES
from .requests import PredictParams, RequestError, build_job
from .worker import ModelWorker, QueueFull, ShuttingDown, TimedOut

log = logging.getLogger("star.serve")


@dataclass
class ServeSettings:
    api_key: str | None = None
    api_key_header: str = "Token"           # X-AnyLabeling-Server's default header name
    max_body_bytes: int = 64 * 2**20        # a 64 MB request body (a large PNG, base64-encoded)
    max_pixels: int | None = None           # None: the engine's image limit (star serve --max-pixels sets it)
    timeout_s: float = 300.0                # per request, from the moment it starts running
    disconnect_poll_s: float = 0.1


def error(code: str, message: str) -> dict:
    return {"success": False, "error": {"code": code, "message": message}}


def decode_image(text) -> bytes:
    """Raw base64 or a data: URL -> the image's bytes (a path or URL is refused: nothing is opened)."""
    if not isinstance(text, str) or not text:
        raise RequestError("INVALID_IMAGE", "image must be a base64 string or a data:image/...;base64, URL")
    if text.startswith("data:"):
        head, _, text = text.partition(",")
        if not head.endswith(";base64"):
            raise RequestError("INVALID_IMAGE", "a data URL image must be base64-encoded")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError("INVALID_IMAGE", "image is not valid base64 (the server reads no paths or URLs)") from None


@dataclass
class Served:
    """What the routes serve: the loaded models (id -> worker) and the settings (on `app.state.served`)."""
    workers: dict[str, ModelWorker]
    settings: ServeSettings


def served(request: Request) -> Served:
    return request.app.state.served


def require_key(request: Request, state: Served = Depends(served)) -> None:
    """The API key check of every route but /health (X-AnyLabeling-Server's header, `Token` by default)."""
    s = state.settings
    if s.api_key is not None and request.headers.get(s.api_key_header) != s.api_key:
        raise RequestError("UNAUTHORIZED", f"missing or wrong API key (header {s.api_key_header})", 401)


public = APIRouter()
router = APIRouter(dependencies=[Depends(require_key)])


@public.get("/health")
async def health(state: Served = Depends(served)):
    return {"status": "healthy", "models_loaded": len(state.workers),
            "timestamp": datetime.now(timezone.utc).isoformat()}


@router.get("/v1/models")
async def models(state: Served = Depends(served)):
    return {"success": True, "data": {name: w.info for name, w in state.workers.items()}}


@router.get("/v1/models/{model_id}/info")
async def describe_model(model_id: str, state: Served = Depends(served)):
    if model_id not in state.workers:
        return error("MODEL_NOT_FOUND", f"no model {model_id!r}; loaded: {', '.join(state.workers)}")
    return {"success": True, "data": {"model_id": model_id, **state.workers[model_id].info}}


async def read_request(request: Request, state: Served):
    """(worker, image bytes, checked params) of a predict request; RequestError for what is wrong with it."""
    settings, workers = state.settings, state.workers
    body = bytearray()
    async for chunk in request.stream():  # counted as it arrives: a missing Content-Length cannot get past
        body += chunk
        if len(body) > settings.max_body_bytes:
            raise RequestError("REQUEST_TOO_LARGE", f"the request body is over {settings.max_body_bytes} bytes", 413)
    try:
        data = json.loads(body)
    except ValueError:
        raise RequestError("INVALID_REQUEST", "the body is not JSON") from None
    if not isinstance(data, dict):
        raise RequestError("INVALID_REQUEST", "the body must be a JSON object")
    name = data.get("model")
    if name not in workers:
        raise RequestError("MODEL_NOT_FOUND", f"no model {name!r}; loaded: {', '.join(workers)}")
    worker = workers[name]
    limit = getattr(getattr(worker.reasoner, "policy", None), "max_samples", MAX_SAMPLES)
    params = PredictParams.parse(data.get("params") or {}, worker.info.get("params", {}), max_samples=limit)
    return worker, decode_image(data.get("image")), params


def failure(exc: BaseException) -> JSONResponse:
    """The protocol's error envelope for what stopped a request."""
    if isinstance(exc, RequestError):
        return JSONResponse(error(exc.code, exc.message), status_code=exc.status)
    if isinstance(exc, ClientDisconnect):  # the upload stopped part-way: nothing failed on our side
        log.info("client went away during the upload; nothing was run")
        return JSONResponse(error("INVALID_REQUEST", "the client disconnected during the upload"), status_code=400)
    if isinstance(exc, (QueueFull, ShuttingDown)):
        return JSONResponse(error("QUEUE_FULL", str(exc)), status_code=503)
    if isinstance(exc, TimedOut):
        return JSONResponse(error("INFERENCE_ERROR", str(exc)))
    log.exception("inference failed")
    return JSONResponse(error("INFERENCE_ERROR", f"{exc.__class__.__name__}: {exc}"))


@router.post("/v1/predict")
async def predict(request: Request, state: Served = Depends(served)):
    try:
        worker, image, params = await read_request(request, state)
        job = worker.submit(build_job(image, params, state.settings))
    except Exception as exc:
        return failure(exc)
    waiting = asyncio.wrap_future(job.future)
    while not waiting.done():
        await asyncio.wait({waiting}, timeout=state.settings.disconnect_poll_s)
        if not waiting.done() and await request.is_disconnected():
            worker.cancel(job)  # a waiting job leaves the queue at once; a running one stops between steps
            log.info("client went away; request cancelled")
            return JSONResponse(error("INFERENCE_ERROR", "cancelled: the client disconnected"))
    if waiting.cancelled():
        return JSONResponse(error("INFERENCE_ERROR", "cancelled"))
    if waiting.exception() is not None:
        return failure(waiting.exception())
    return {"success": True, "data": waiting.result()}


@router.post("/v1/predict/stream")
async def predict_stream(request: Request, state: Served = Depends(served)):
    """Server-sent events: `stage`, `token` (sample, text) as the policy decodes, `sample` as each one
    ends, `progress` while SAM segments, then one `result`
    (the /v1/predict data) or `error` event; a client that closes the stream cancels the work."""
    try:
        worker, image, params = await read_request(request, state)
    except Exception as exc:
        return failure(exc)
    loop = asyncio.get_running_loop()
    events: asyncio.Queue = asyncio.Queue()
    job = build_job(image, params, state.settings)
    job.listeners.append(lambda e: loop.call_soon_threadsafe(events.put_nowait, e))
    try:
        worker.submit(job)
    except Exception as exc:
        return failure(exc)
    return StreamingResponse(_events(worker, job, events), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache"})


async def _events(worker: ModelWorker, job, events: asyncio.Queue):
    waiting = asyncio.wrap_future(job.future)
    try:
        while True:
            getter = asyncio.ensure_future(events.get())
            await asyncio.wait({getter, waiting}, return_when=asyncio.FIRST_COMPLETED)
            if getter.done():
                event = getter.result()
                if event.kind in ("token", "stage", "progress", "sample"):
                    data = {"sample": event.sample, "text": event.text}
                    if event.kind == "progress":
                        data["done"], data["total"] = event.data
                    elif event.kind == "sample":  # a sample finished decoding
                        data.update(status=event.data.status, finish_reason=event.data.finish_reason)
                    yield f"event: {event.kind}\ndata: {json.dumps(data)}\n\n"
                continue
            getter.cancel()
            if waiting.cancelled():
                yield f"event: error\ndata: {json.dumps(error('INFERENCE_ERROR', 'cancelled'))}\n\n"
            elif waiting.exception() is not None:
                body = json.loads(failure(waiting.exception()).body)
                yield f"event: error\ndata: {json.dumps(body)}\n\n"
            else:
                yield f"event: result\ndata: {json.dumps({'success': True, 'data': waiting.result()})}\n\n"
            return
    finally:  # the client closed the stream (or it ended): stop work nobody will read
        worker.cancel(job)


def create_app(workers: dict[str, ModelWorker], settings: ServeSettings = ServeSettings()):
    """The ASGI application serving `workers` (model id -> worker): the routes above, the protocol's error
    envelope for every refusal, and the body-size guard."""
    app = FastAPI(title="StAR Desktop server", description="Reasoning segmentation in X-AnyLabeling-Server's protocol")
    app.state.served = Served(workers, settings)
    app.include_router(public)
    app.include_router(router)

    @app.exception_handler(RequestError)
    async def request_error(_request, exc: RequestError):
        return JSONResponse(error(exc.code, exc.message), status_code=exc.status)

    app.add_middleware(Guard, settings=settings)
    return app


class Guard:
    """The body-size limit (from Content-Length, before the route runs) and one log line per request, as
    plain ASGI middleware (FastAPI's `@app.middleware("http")` would wrap `receive` and hide a client's
    disconnect from the handlers). The API key is the routes' dependency (`require_key`)."""

    def __init__(self, app, settings: ServeSettings):
        self.app, self.settings = app, settings

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status, note = time.perf_counter(), [500], ""
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        s = self.settings
        refusal = None
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > s.max_body_bytes):
            refusal, note = JSONResponse(error("REQUEST_TOO_LARGE", f"the request body is over {s.max_body_bytes} bytes"),
                                         status_code=413), "body too large"

        async def send_status(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            if refusal is not None:
                await refusal(scope, receive, send_status)
            else:
                await self.app(scope, receive, send_status)
        finally:
            log.info("%s %s %s %.0f ms %s", scope.get("method", ""), scope["path"], status[0],
                     (time.perf_counter() - start) * 1e3, note)


def model_info(name: str, reasoner, params: dict) -> dict:
    """What /v1/models says about one model: its name, the X-AnyLabeling widgets a text-prompted model
    shows, and its default parameters."""
    widgets = [{"name": "edit_text", "value": None}, {"name": "button_send", "value": None},
               {"name": "toggle_preserve_existing_annotations", "value": False}]
    # The bundle's identity without its folder: where the models lie on this machine is not a client's business.
    bundle = {k: v for k, v in reasoner.bundle.items() if k != "root"}
    return {"display_name": f"StAR reasoning segmentation ({name})", "widgets": widgets, "params": params,
            "bundle": bundle, "vote_temperature": reasoner.vote_temperature,
            "answer_grammar": reasoner.answer_grammar}
