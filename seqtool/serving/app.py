"""The HTTP JSON API of `seqtool serve`: a Starlette app run by uvicorn.

    POST /translate  {"sentences": [...], "beam": 5, "n_best": 2, ...}
                     -> {"translations": [{"text", "score", "nbest": [{"text", "score"}]}]}
    GET  /health     -> {"status": "ok", "waiting": requests not yet decoding, "running": sentences decoding}
    GET  /info       -> the model, recipe, tokenizer, decode defaults and the server's limits

Besides "sentences", a request's keys are decode options (`decode` keys of the recipe, as in the
Python API); the settings that bound the server's memory and time (SERVER_OWNED) are the operator's.
Every error is JSON {"error": message}: 400 for a body that is not UTF-8, not JSON or not a valid
request, 413 for a body over the byte limit or too many sentences, 429 when the queue is full, 500
when decoding fails (the server stays up).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from seqtool.api import LoadedModel, Translation
from seqtool.decoding.alignment import pharaoh
from seqtool.errors import SeqtoolError, first_line
from seqtool.serving.batcher import Batcher, QueueFull

_log = logging.getLogger("seqtool.serve")

# Decode keys a request may not set: they bound the server's memory per batch and per sentence.
SERVER_OWNED = frozenset({"batch_tokens", "batch_sentences", "max_src_len", "max_output", "precision"})
GONE = 499  # the status answered to a client that went away (nobody reads it; nginx names it so)


@dataclass(frozen=True)
class Limits:
    max_body: int = 1 << 20  # bytes of one request body
    max_sentences: int = 256  # sentences of one request
    max_queue: int = 64  # requests waiting for a batch
    micro_batch_tokens: int = 4096  # source tokens a micro-batch gathers
    max_wait_ms: float = 5.0  # how long a micro-batch waits for more requests


class TranslateBody(BaseModel):
    """A request: the sentences, the features beyond DecodeSpec, and decode options (the extra keys)."""

    model_config = ConfigDict(extra="allow")
    sentences: list[str] = Field(min_length=1)
    alignment: bool = False
    constraints: list[list[str]] | None = None


def create_app(model: LoadedModel, limits: Limits, on_ready: Callable[[], None] = lambda: None) -> Starlette:
    batcher = Batcher(model, batch_tokens=limits.micro_batch_tokens, max_wait=limits.max_wait_ms / 1000,
                      max_queue=limits.max_queue)

    async def translate(request: Request) -> Response:
        try:
            body = _parse(await _read_body(request, limits.max_body))
        except ClientDisconnect:
            return Response(status_code=GONE)
        if len(body.sentences) > limits.max_sentences:
            raise HTTPException(413, f"{len(body.sentences)} sentences; at most {limits.max_sentences} a request")
        options = body.model_extra or {}
        owned = sorted(SERVER_OWNED & options.keys())
        if owned:
            raise HTTPException(400, f"{owned[0]}: set by the server, not per request")
        try:
            decode = model.request(body.sentences, alignment=body.alignment, constraints=body.constraints, **options)
            done = batcher.submit(decode)
        except SeqtoolError as err:
            raise HTTPException(400, str(err)) from None
        except QueueFull:
            raise HTTPException(429, "the queue is full; retry later", {"Retry-After": "1"}) from None
        if not await _unless_gone(request, done):
            return Response(status_code=GONE)
        try:
            translations = done.result()
        except Exception as err:
            _log.exception("decoding failed")
            raise HTTPException(500, f"decoding failed: {first_line(err)}") from None
        return JSONResponse({"translations": [_translation_json(t) for t in translations]})

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "waiting": batcher.waiting, "running": batcher.running})

    async def info(request: Request) -> Response:
        return JSONResponse({**model.info(), "server": asdict(limits)})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        worker = asyncio.create_task(batcher.work())
        on_ready()
        yield
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker

    routes = [Route("/translate", translate, methods=["POST"]), Route("/health", health), Route("/info", info)]
    return Starlette(routes=routes, lifespan=lifespan, exception_handlers={HTTPException: _json_error})


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, read in chunks and refused (413) as soon as it passes `limit` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"request body of {declared} bytes; at most {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"request body over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _parse(body: bytes) -> TranslateBody:
    try:
        payload = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise HTTPException(400, f"request body is not UTF-8 (byte {err.start})") from None
    except json.JSONDecodeError as err:
        raise HTTPException(400, f"request body is not JSON: {err.msg} at line {err.lineno} column {err.colno}") \
            from None
    try:
        return TranslateBody.model_validate(payload)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(map(str, first["loc"])) or "request"
        raise HTTPException(400, f"{where}: {first['msg']}") from None


async def _unless_gone(request: Request, done: asyncio.Future) -> bool:
    """Wait for `done`; False (and `done` cancelled) if the client disconnects first."""
    gone = asyncio.ensure_future(_disconnect(request))
    await asyncio.wait({done, gone}, return_when=asyncio.FIRST_COMPLETED)
    gone.cancel()
    if done.done():
        return True
    done.cancel()
    return False


async def _disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _translation_json(t: Translation) -> dict:
    answer = {"text": t.text, "score": t.nbest[0][1], "nbest": [{"text": text, "score": s} for text, s in t.nbest]}
    if t.alignment is not None:
        answer["alignment"] = pharaoh(t.alignment)
    return answer


async def _json_error(request: Request, exc: HTTPException) -> Response:
    return JSONResponse({"error": exc.detail}, exc.status_code, headers=exc.headers)
