"""``fastrnn serve``'s HTTP side: a Starlette app over one loaded model and its :class:`~fastrnn.serving.Decoder`.

Routes (bodies and answers are JSON; every error is ``{"error": "..."}`` with a 4xx status):

- ``GET /``: the interactive page (:data:`PAGE`): sampling with streamed output, and the visualisation of
  ``fastrnn visualize`` for any text typed in.
- ``POST /v1/sample``: ``prime``, ``length``, ``temperature``, ``top_k``, ``top_p``, ``seed``, ``stream``
  (:func:`~fastrnn.serving.sample_request`): ``{"text": prime + the drawn text, "length": n}``; with
  ``stream: true`` server-sent events, each ``data: {"text": piece}`` (the prime first), then ``event: done``
  with ``data: {"length": n}`` (or ``event: error`` with ``data: {"error": ...}``).
- ``POST /v1/score``: ``text``, ``per_char``: ``nats``, ``count``, ``nats_per_char``, ``bits_per_char``
  (and ``log_probs``, the natural-log probability of each character after the first).
- ``POST /v1/visualize``: ``text``: the data of ``fastrnn visualize``'s page for it.
- ``GET /v1/model``: what ``fastrnn info --json`` says of the checkpoint, and the server's limits.
- ``GET /healthz``: ``{"status": "ok", "in_flight": requests being sampled or waiting, "largest_batch": the
  most requests sampled together so far}``.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, StreamingResponse
from starlette.routing import Route

from .charmodel import LN2, CharModel
from .serving import (Decoder, RequestError, TextDecoder, sample_request, score_request, visualize_request)
from .visualize import inline_assets, page_data

PAGE = Path(__file__).resolve().parent / "web" / "serve.html"
MAX_BODY_BYTES = 8 << 20
MAX_SCORE_CHARS = 1_000_000
MAX_VISUALIZE_CHARS = 20_000
DISCONNECT_POLL_S = 0.5  # how often a JSON request checks that its client is still there
STREAM_INTERVAL_S = 0.02  # a stream's events at most this often: the characters drawn meanwhile come in one


def error(message, status=400) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def json_body(request: Request):
    """The request's JSON body; a :class:`RequestError` for one too large (said by its header before it is read,
    or once read) or not JSON."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise RequestError(f"the body has {int(declared):,} bytes, over the {MAX_BODY_BYTES:,} this server takes", 413)
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        raise RequestError(f"the body has {len(body):,} bytes, over the {MAX_BODY_BYTES:,} this server takes", 413)
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RequestError(f"malformed JSON: {e}") from None
    except RecursionError:
        raise RequestError("malformed JSON: nested too deeply") from None


def create_app(model: CharModel, info: dict, max_length=10_000, max_batch=64) -> Starlette:
    """The app serving ``model``; ``info``: its summary for ``GET /v1/model``. The decoder thread starts with
    the app's lifespan and stops with it."""
    state = {}
    limits = {"max_length": max_length, "max_batch": max_batch, "max_score_chars": MAX_SCORE_CHARS,
              "max_visualize_chars": MAX_VISUALIZE_CHARS}

    async def sample(request: Request):
        req = sample_request(await json_body(request), model, max_length)
        decoder: Decoder = state["decoder"]
        job = await run_in_threadpool(decoder.job, req)  # the prime's forward pass, off the event loop
        loop, news = asyncio.get_running_loop(), asyncio.Event()
        job.notify = lambda: loop.call_soon_threadsafe(news.set)
        job.streamed = req.stream  # a JSON answer wakes this coroutine once, at the end
        decoder.submit(job)
        text = TextDecoder(model.vocab)

        async def next_ids():
            """The ids drawn since the last call (waiting for some), and whether the job is done."""
            while True:
                news.clear()
                ids, done = job.take()
                if ids or done:
                    return ids, done
                await news.wait()

        if req.stream:
            async def events():
                done = False
                try:
                    yield f"data: {json.dumps({'text': req.prime})}\n\n"
                    while not done:
                        ids, done = await next_ids()
                        if ids:
                            yield f"data: {json.dumps({'text': text(ids, final=done)})}\n\n"
                            await asyncio.sleep(STREAM_INTERVAL_S)  # the next event gathers what comes meanwhile
                    if job.error:
                        yield f"event: error\ndata: {json.dumps({'error': job.error})}\n\n"
                    else:
                        yield f"event: done\ndata: {json.dumps({'length': job.count})}\n\n"
                finally:
                    if not done:
                        job.cancel()  # the client went away: its row leaves the batch

            return StreamingResponse(events(), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        pieces, done = [], False
        try:
            while not done:
                try:
                    ids, done = await asyncio.wait_for(next_ids(), DISCONNECT_POLL_S)
                except asyncio.TimeoutError:
                    if await request.is_disconnected():
                        return error("the client went away", 499)
                    continue
                pieces.append(text(ids, final=done))
        finally:
            if not done:
                job.cancel()
        if job.error:
            return error(job.error, 503)
        return JSONResponse({"text": req.prime + "".join(pieces), "length": job.count})

    async def score(request: Request):
        text, per_char = score_request(await json_body(request), model, MAX_SCORE_CHARS)
        result = await run_in_threadpool(model.score, text, per_char)
        body = {"nats": result.nats, "count": result.count, "nats_per_char": result.nats_per_char,
                "bits_per_char": result.nats_per_char / LN2}
        if per_char:
            body["log_probs"] = result.log_probs.tolist()
        return JSONResponse(body)

    async def visualize(request: Request):
        text = visualize_request(await json_body(request), model, MAX_VISUALIZE_CHARS)
        data = await run_in_threadpool(page_data, model, text, info["file"], "the text sent")
        return JSONResponse(data)

    async def describe(request: Request):
        return JSONResponse({**info, "server": limits})

    async def health(request: Request):
        decoder = state["decoder"]
        return JSONResponse({"status": "ok", "in_flight": decoder.in_flight, "largest_batch": decoder.largest_batch})

    page_html = inline_assets(PAGE.read_text(encoding="utf-8"))

    async def page(request: Request):
        return HTMLResponse(page_html)

    async def request_error(request: Request, exc: RequestError):
        return error(str(exc), exc.status)

    async def http_error(request: Request, exc: HTTPException):
        what = {404: f"no such path: {request.url.path}", 405: f"{request.method} is not allowed on "
                                                                f"{request.url.path}"}.get(exc.status_code, exc.detail)
        return error(what, exc.status_code)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        state["decoder"] = Decoder(model, max_batch=max_batch)
        try:
            yield
        finally:
            state["decoder"].close()

    routes = [Route("/", page), Route("/v1/sample", sample, methods=["POST"]),
              Route("/v1/score", score, methods=["POST"]), Route("/v1/visualize", visualize, methods=["POST"]),
              Route("/v1/model", describe), Route("/healthz", health)]
    return Starlette(routes=routes, lifespan=lifespan,
                     exception_handlers={RequestError: request_error, HTTPException: http_error})
