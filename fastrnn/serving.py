"""The model behind ``fastrnn serve``: requests checked field by field, and batched decoding.

numpy only (the HTTP side is :mod:`fastrnn.server`). :class:`Decoder` runs one thread that steps every
sampling request in flight together, one batched step of :class:`fastrnn.streams.Stepper` per character
for all of them: a request joins the batch as it comes and leaves it when its text is drawn or its client
goes away. A row's arithmetic does not depend on the batch, and each request draws from its own
``numpy.random.default_rng(seed)`` exactly as ``fastrnn sample`` does, so a request with a ``seed`` gets
the text ``fastrnn sample`` prints with the same flags, however many others it was stepped with.
"""
from __future__ import annotations

import codecs
import math
import threading
from dataclasses import dataclass, field

import numpy as np

from . import kernels
from ._validate import inverse_temperature
from .charmodel import CharModel
from .streams import Stepper
from .vocab import UnknownSymbolsError

SAMPLE_FIELDS = {"prime": "", "length": 200, "temperature": 1.0, "top_k": None, "top_p": None, "seed": None,
                 "stream": False}
SCORE_FIELDS = {"text": None, "per_char": False}
VISUALIZE_FIELDS = {"text": None}


class RequestError(ValueError):
    """A request the server refuses (HTTP 4xx): ``status`` and the message for ``{"error": ...}``."""

    def __init__(self, message, status=400):
        super().__init__(message)
        self.status = status


def _fields(body, known: dict) -> dict:
    if not isinstance(body, dict):
        raise RequestError(f"the body must be a JSON object, got {type(body).__name__}")
    unknown = sorted(set(body) - set(known))
    if unknown:
        raise RequestError(f"unknown field{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
                           f"known: {', '.join(known)}")
    return {**known, **body}


def _integer(value, name, low, high=None, allow_none=False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(f"{name} must be an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        raise RequestError(f"{name} must be in [{low}, {high}], got {value}" if high is not None
                           else f"{name} must be at least {low}, got {value}")
    return value


def _number(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RequestError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _text(value, name, model: CharModel, minimum=0, maximum=None):
    if not isinstance(value, str):
        raise RequestError(f"{name} must be a string, got {value!r}" if value is not None else f"{name} is required")
    if len(value) < minimum:
        raise RequestError(f"{name} must have at least {minimum} characters, got {len(value)}")
    if maximum is not None and len(value) > maximum:
        raise RequestError(f"{name} has {len(value):,} characters, over the {maximum:,} this server takes", 413)
    try:
        model.encode(value)
    except UnknownSymbolsError as e:
        raise RequestError(f"{name} has {e}") from None
    return value


@dataclass
class SampleRequest:
    prime: str
    length: int
    temperature: float
    top_k: int | None
    top_p: float | None
    seed: int | None
    stream: bool


def sample_request(body, model: CharModel, max_length: int) -> SampleRequest:
    """``POST /v1/sample``'s body checked; a :class:`RequestError` names the first problem."""
    f = _fields(body, SAMPLE_FIELDS)
    prime = _text(f["prime"], "prime", model, maximum=max_length)
    length = _integer(f["length"], "length", 1)
    if length > max_length:
        raise RequestError(f"length {length:,} is over this server's --max-length {max_length:,}", 413)
    temperature = _number(f["temperature"], "temperature")
    if temperature <= 0:
        raise RequestError(f"temperature must be positive, got {temperature}")
    top_k = _integer(f["top_k"], "top_k", 1, allow_none=True)
    top_p = None if f["top_p"] is None else _number(f["top_p"], "top_p")
    if top_p is not None and not 0 < top_p <= 1:
        raise RequestError(f"top_p must be in (0, 1], got {top_p}")
    seed = _integer(f["seed"], "seed", 0, 2 ** 63 - 1, allow_none=True)
    if not isinstance(f["stream"], bool):
        raise RequestError(f"stream must be true or false, got {f['stream']!r}")
    return SampleRequest(prime, length, temperature, top_k, top_p, seed, f["stream"])


def score_request(body, model: CharModel, max_chars: int) -> tuple:
    """``POST /v1/score``'s body checked: ``(text, per_char)``."""
    f = _fields(body, SCORE_FIELDS)
    if not isinstance(f["per_char"], bool):
        raise RequestError(f"per_char must be true or false, got {f['per_char']!r}")
    return _text(f["text"], "text", model, minimum=2, maximum=max_chars), f["per_char"]


def visualize_request(body, model: CharModel, max_chars: int) -> str:
    """``POST /v1/visualize``'s body checked: the text."""
    return _text(_fields(body, VISUALIZE_FIELDS)["text"], "text", model, minimum=2, maximum=max_chars)


@dataclass(eq=False)
class Job:
    """One sampling request in the decoder: what it draws with, and what it has drawn but not yet taken.

    ``notify`` (given by the consumer; called from the decoder thread) is called once after :meth:`take`
    found nothing new, when something new comes (with ``streamed``; else only when the end comes).
    """

    rng: np.random.Generator
    state: tuple | None  # (L, 1, H) arrays after the prime, or None: zeros
    first_id: int
    length: int
    inv_temperature: float
    top_k: int
    top_p: float
    notify: object = None
    streamed: bool = True  # the consumer takes the ids as they come (else only at the end)
    drawn: list = field(default_factory=list)  # ids not yet taken
    count: int = 0  # ids drawn so far
    done: bool = False
    cancelled: bool = False
    error: str | None = None
    waiting: bool = False  # the consumer found nothing new and waits for ``notify``
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self) -> tuple:
        """``(ids drawn since the last take, done)``; with nothing new and not done, the next news notifies."""
        with self.lock:
            ids, self.drawn = self.drawn, []
            self.waiting = not ids and not self.done
            return ids, self.done

    def cancel(self):
        """The client went away: the decoder drops the job at its next step."""
        self.cancelled = True

    def _news(self, ids=(), done=False, error=None):
        """Decoder side: hand on ``ids`` (and the end); notify a waiting consumer."""
        with self.lock:
            self.drawn.extend(ids)
            self.count += len(ids)
            self.done = self.done or done
            self.error = self.error or error
            wake = self.waiting and (self.streamed or self.done)
            self.waiting = self.waiting and not wake
        if wake and self.notify is not None:
            self.notify()


class Decoder:
    """One thread stepping every :class:`Job` in flight together (at most ``max_batch`` at once; the rest
    wait their turn in arrival order)."""

    def __init__(self, model: CharModel, max_batch=64):
        self.model, self.max_batch = model, int(max_batch)
        self.stepper = Stepper(model.params)
        self._waiting, self._active, self._cond = [], [], threading.Condition()
        self._stop = False
        self.largest_batch = 0
        self.thread = threading.Thread(target=self._run, name="fastrnn-decoder", daemon=True)
        self.thread.start()

    @property
    def in_flight(self) -> int:
        return len(self._waiting) + len(self._active)

    def job(self, request: SampleRequest) -> Job:
        """A job for ``request`` (its prime run here, on the caller's thread), not yet submitted."""
        rng, state, first_id, temperature, length = self.model.sample_start(
            request.length, request.prime, request.temperature, request.seed)
        return Job(rng, state, first_id, length, inverse_temperature(temperature, self.model.params.dtype),
                   request.top_k or 0, 1.0 if request.top_p is None else request.top_p)

    def submit(self, job: Job):
        if job.length == 0:
            job._news(done=True)
            return
        with self._cond:
            if self._stop:
                job._news(done=True, error="the server is shutting down")
                return
            self._waiting.append(job)
            self._cond.notify()

    def close(self):
        """Stop the thread; jobs not finished end with an error."""
        with self._cond:
            self._stop = True
            self._cond.notify()
        self.thread.join(timeout=10)

    def _run(self):
        spec, dtype, stepper = self.stepper.spec, self.model.params.dtype, self.stepper
        state, ids = stepper.zero_state(0), np.zeros(0, np.int64)
        logits = options = None
        while True:
            with self._cond:
                while not self._stop and not self._active and not self._waiting:
                    self._cond.wait()
                if self._stop:
                    break
                joining = self._waiting[:max(0, self.max_batch - len(self._active))]
                del self._waiting[:len(joining)]
            active = self._active
            keep = [i for i, job in enumerate(active) if not (job.cancelled or job.done)]
            if joining or len(keep) < len(active):  # the batch changes: gather its rows again
                starts = [job.state if job.state is not None else stepper.zero_state(1) for job in joining]
                state = tuple(np.ascontiguousarray(np.concatenate([s[:, keep]] + [start[k] for start in starts],
                                                                  axis=1))
                              for k, s in enumerate(state))
                ids = np.concatenate([ids[keep], np.array([job.first_id for job in joining], np.int64)])
                active = self._active = [active[i] for i in keep] + joining
                options = (np.array([job.inv_temperature for job in active], dtype), np.zeros(len(active), bool),
                           np.array([job.top_k for job in active], np.int64),
                           np.array([job.top_p for job in active], np.float64))
                logits = np.empty((len(active), spec.vocab_size), dtype)
                self.largest_batch = max(self.largest_batch, len(active))
            if not active:
                continue
            try:
                stepper.step(logits, ids, state)
                uniforms = np.array([job.rng.random() for job in active])
                kernels.draw_rows(ids, logits, uniforms, *options)
            except Exception as e:  # a bug: end these requests with it rather than leave them waiting forever
                for job in active:
                    job._news(done=True, error=f"internal error: {type(e).__name__}: {e}")
                continue
            for job, ix in zip(active, ids.tolist()):
                job._news((ix,), done=job.count + 1 >= job.length)
        for job in self._active + self._waiting:
            job._news(done=True, error="the server is shutting down")


class TextDecoder:
    """Ids to text a piece at a time; a bytes model's bytes decoded as UTF-8 across pieces (invalid bytes
    replaced), so a character split between two pieces comes out whole."""

    def __init__(self, vocab):
        self.vocab = vocab
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace") if vocab.bytes_mode else None

    def __call__(self, ids, final=False) -> str:
        text = self.vocab.decode(np.asarray(ids, np.int64)) if len(ids) else (b"" if self._utf8 else "")
        return self._utf8.decode(text, final) if self._utf8 is not None else text
