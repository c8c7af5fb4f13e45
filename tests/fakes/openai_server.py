"""A local, asynchronous OpenAI-compatible HTTP server for tests and benchmarks (no network).

It speaks enough of the wire protocol for the real `openai` client (sync and async) with
`base_url=http://127.0.0.1:<port>/v1`:

* `POST /v1/chat/completions` — a ChatCompletion whose text comes from a pluggable
  `responder(request_json) -> str` (sync or async); usage estimated from text length plus a
  fixed amount per image part; rate-limit headers from per-minute request/token budgets.
* Files (`/v1/files`, upload/retrieve/content/delete/list) and Batches (`/v1/batches`,
  create/retrieve/cancel/list) held in memory, with the API's 50,000-request / 200 MB limits.
* Fault injection (latency + jitter, 429 with Retry-After, 500/503, timeouts, malformed bodies,
  refusals), drawn deterministically from `random.Random(f"{seed}:{n}")` for the n-th request,
  plus "fail the first K attempts of each distinct request".
* Accounting per distinct request body (sha256 of the canonical JSON): `GET /_stats`,
  `POST /_reset`, `POST /_configure`, or the Python methods of the same names.

In-process use (tests)::

    with FakeOpenAI(latency=0.01, faults={"rate_limit": 0.1}) as fake:
        client = openai.OpenAI(base_url=fake.base_url, api_key="x", max_retries=0)
        ...
        assert fake.stats()["answered_twice"] == []

Standalone (benchmarks, other processes)::

    python -m tests.fakes.openai_server --port 8765 --latency 0.25 --fault-rate 0.2

It binds 127.0.0.1 only.
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import hashlib
import inspect
import json
import math
import random
import re
import signal
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Optional, Union

from aiohttp import web

HOST = "127.0.0.1"
FAULT_KINDS = ("rate_limit", "server_error", "timeout", "malformed", "refusal")
REFUSAL_TEXT = "I'm sorry, but I can't help with that."
FILE_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
BATCH_ENDPOINTS = ("/v1/chat/completions",)

Responder = Callable[[dict], Union[str, Awaitable[str]]]


class Fault(Exception):
    """Raise from a responder to force one fault kind for this particular request."""

    def __init__(self, kind: str):
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {FAULT_KINDS}")
        super().__init__(kind)
        self.kind = kind


# --------------------------------------------------------------------------- helpers


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def request_key(body: Any) -> str:
    """The accounting key of a request body: sha256 of its canonical JSON."""
    return hashlib.sha256(canonical_json(body).encode("utf-8")).hexdigest()


def _parts(content: Any) -> list:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if isinstance(content, list):
        return [p for p in content if isinstance(p, dict)]
    return []


def _texts(content: Any) -> list[str]:
    return [str(p.get("text", "")) for p in _parts(content) if p.get("type") in ("text", "input_text")]


def _n_images(content: Any) -> int:
    return sum(1 for p in _parts(content) if p.get("type") in ("image_url", "input_image"))


def estimate_tokens(text: Optional[str]) -> int:
    return max(1, math.ceil(len(text) / 4)) if text else 0


def estimate_prompt_tokens(body: dict, image_tokens: int) -> int:
    n = 3
    for m in body.get("messages") or []:
        if not isinstance(m, dict):
            continue
        n += 4 + sum(estimate_tokens(t) for t in _texts(m.get("content")))
        n += image_tokens * _n_images(m.get("content"))
    return n


_STANDARD = re.compile(r"^\s*Standard answer:\s*(.*?)\s*$", re.IGNORECASE | re.MULTILINE)
_VERDICT = re.compile(r"\bverdict\b", re.IGNORECASE)


def default_responder(body: dict) -> str:
    """Four stages whose conclusion is the last `Standard answer: X` line of the user messages
    (else "unknown"; a retry's follow-up message carries none, the first one does); "valid" for a
    judge request (system or user text mentions "verdict")."""
    messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    for m in messages:
        if m.get("role") in ("system", "developer", "user"):
            if any(_VERDICT.search(t) for t in _texts(m.get("content"))):
                return "valid"
    answer = "unknown"
    users = [m for m in messages if m.get("role") == "user"]
    for m in reversed(users):
        found = [x for t in _texts(m.get("content")) for x in _STANDARD.findall(t)]
        if found and found[-1]:
            answer = found[-1]
            break
    return (
        "<SUMMARY>I will look at the image, find the details the question asks about and work "
        "out the answer step by step.</SUMMARY>\n\n"
        "<CAPTION>The image shows the objects, labels and values the question refers to.</CAPTION>\n\n"
        "<REASONING>Reading the relevant details and combining them as the question requires "
        f"leads to the answer {answer}.</REASONING>\n\n"
        f"<CONCLUSION>{answer}</CONCLUSION>"
    )


def _duration(seconds: float) -> str:
    """Go-style durations as in OpenAI's x-ratelimit-reset-* headers: 20ms, 1.5s, 6m0s."""
    seconds = max(0.0, seconds)
    if seconds < 1:
        return f"{int(seconds * 1000)}ms"
    minutes, sec = divmod(seconds, 60)
    sec = round(sec, 3)
    return f"{int(minutes)}m{sec:g}s" if minutes else f"{sec:g}s"


def _error_body(message: str, type_: str, code: Optional[str] = None, param: Optional[str] = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _json_response(obj: Any, status: int = 200, headers: Optional[dict] = None) -> web.Response:
    return web.Response(
        body=json.dumps(obj).encode("utf-8"), status=status, content_type="application/json", headers=headers
    )


def _error(status: int, message: str, type_: str = "invalid_request_error", code: Optional[str] = None,
           param: Optional[str] = None, headers: Optional[dict] = None) -> web.Response:
    return _json_response(_error_body(message, type_, code, param), status=status, headers=headers)


def _new_id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:24]


class _Bucket:
    """A per-minute budget that refills continuously (how OpenAI describes its limits)."""

    def __init__(self, limit: int):
        self.limit = max(1, int(limit))
        self.level = float(self.limit)
        self.t = time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        self.level = min(self.limit, self.level + (now - self.t) * self.limit / 60.0)
        self.t = now

    def take(self, cost: float, enforce: bool) -> bool:
        self._refill()
        if enforce and self.level < cost:
            return False
        self.level = max(0.0, self.level - cost)
        return True

    def wait_for(self, cost: float) -> float:
        return max(0.0, (min(cost, self.limit) - self.level) * 60.0 / self.limit)

    def headers(self, name: str) -> dict:
        self._refill()
        return {
            f"x-ratelimit-limit-{name}": str(self.limit),
            f"x-ratelimit-remaining-{name}": str(int(self.level)),
            f"x-ratelimit-reset-{name}": _duration((self.limit - self.level) * 60.0 / self.limit),
        }


# --------------------------------------------------------------------------- configuration


@dataclass
class FakeConfig:
    seed: int = 0
    latency: float = 0.0                 # seconds added to every answered request
    jitter: float = 0.0                  # plus uniform [0, jitter) seconds
    faults: dict = field(default_factory=dict)   # kind -> probability per request
    retry_after: float = 1.0             # Retry-After (seconds) on injected 429s
    server_error_statuses: tuple = (500, 503)
    timeout_hold: float = 5.0            # how long a "timeout" request is held
    timeout_then: str = "drop"           # after the hold: "drop" the connection or "answer"
    malformed_mode: str = "mixed"        # "invalid_json" | "missing_choices" | "mixed"
    refusal_mode: str = "mixed"          # "content" | "field" | "both" | "mixed"
    fail_first: int = 0                  # fail the first K attempts of each distinct request ...
    fail_first_kind: str = "server_error"  # ... with this fault kind
    responder: Optional[Responder] = None  # None -> default_responder
    model: Optional[str] = None          # model named in replies; None echoes the request's
    rpm: int = 100_000                   # per-minute request budget (headers)
    tpm: int = 100_000_000               # per-minute token budget (headers)
    enforce_rate_limits: bool = False    # answer 429 when a budget is exhausted
    image_tokens: int = 765              # prompt tokens counted per image part
    api_key: Optional[str] = None        # if set, require "Authorization: Bearer <api_key>"
    batch_polls: int = 2                 # GETs until a batch is final (1st GET -> in_progress)
    batch_seconds: Optional[float] = None  # or: seconds after creation until final
    batch_fail_fraction: float = 0.0     # fraction of batch lines answered with a 500
    batch_expire_fraction: Optional[float] = None  # if set, batches expire with this fraction done
    max_batch_requests: int = 50_000
    max_batch_bytes: int = 200 * 1024 * 1024


_MODES = {
    "timeout_then": ("drop", "answer"),
    "malformed_mode": ("invalid_json", "missing_choices", "mixed"),
    "refusal_mode": ("content", "field", "both", "mixed"),
}


def _updated(cfg: FakeConfig, kw: dict) -> FakeConfig:
    kw = dict(kw)
    faults = dict(cfg.faults)
    if "faults" in kw:
        faults = dict(kw.pop("faults") or {})
    if "fault_rate" in kw:
        rate = float(kw.pop("fault_rate") or 0.0)
        kinds = tuple(kw.pop("fault_kinds", None) or FAULT_KINDS)
        faults = {k: rate / len(kinds) for k in kinds}
    elif "fault_kinds" in kw:
        raise TypeError("fault_kinds needs fault_rate")
    for kind in FAULT_KINDS:
        if kind in kw:
            faults[kind] = float(kw.pop(kind))
    names = {f.name for f in dataclasses.fields(FakeConfig)}
    unknown = sorted(set(kw) - names)
    if unknown:
        raise TypeError(f"unknown configuration: {', '.join(unknown)}")
    bad = sorted(set(faults) - set(FAULT_KINDS))
    if bad:
        raise ValueError(f"unknown fault kinds {bad}; expected {FAULT_KINDS}")
    if any(v < 0 for v in faults.values()) or sum(faults.values()) > 1 + 1e-9:
        raise ValueError(f"fault rates must be >= 0 and sum to <= 1: {faults}")
    if "server_error_statuses" in kw:
        kw["server_error_statuses"] = tuple(int(s) for s in kw["server_error_statuses"])
    new = dataclasses.replace(cfg, faults={k: v for k, v in faults.items() if v > 0}, **kw)
    for name, allowed in _MODES.items():
        if getattr(new, name) not in allowed:
            raise ValueError(f"{name} must be one of {allowed}")
    if new.fail_first_kind not in FAULT_KINDS:
        raise ValueError(f"fail_first_kind must be one of {FAULT_KINDS}")
    return new


# --------------------------------------------------------------------------- the server


@dataclass
class _Batch:
    id: str
    input_file_id: str
    endpoint: str
    completion_window: str
    metadata: Optional[dict]
    lines: list
    errors: list
    settings: dict
    created_at: int
    created_mono: float
    status: str = "validating"
    polls: int = 0
    times: dict = field(default_factory=dict)
    output_file_id: Optional[str] = None
    error_file_id: Optional[str] = None
    counts: dict = field(default_factory=lambda: {"total": 0, "completed": 0, "failed": 0})

    def to_json(self) -> dict:
        t = self.times
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "model": None,
            "errors": {"object": "list", "data": self.errors} if self.errors and self.status == "failed" else None,
            "input_file_id": self.input_file_id,
            "completion_window": self.completion_window,
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": self.created_at,
            "in_progress_at": t.get("in_progress"),
            "expires_at": self.created_at + 24 * 3600,
            "finalizing_at": t.get("finalizing"),
            "completed_at": t.get("completed"),
            "failed_at": t.get("failed"),
            "expired_at": t.get("expired"),
            "cancelling_at": t.get("cancelling"),
            "cancelled_at": t.get("cancelled"),
            "request_counts": dict(self.counts),
            "metadata": self.metadata,
        }


class FakeOpenAIServer:
    """The aiohttp application and its state; bound to whichever event loop serves it."""

    def __init__(self, **config: Any):
        self.config = _updated(FakeConfig(), config)
        self._lock = threading.Lock()
        self.files: dict[str, dict] = {}
        self.batches: dict[str, _Batch] = {}
        self._buckets = (_Bucket(self.config.rpm), _Bucket(self.config.tpm))
        self.reset()

    # ---- configuration and accounting (thread-safe)

    def configure(self, **kw: Any) -> FakeConfig:
        """Change settings at run time (same names as FakeConfig; plus `fault_rate` spread over
        `fault_kinds`, and per-kind shorthands such as `rate_limit=0.1`)."""
        with self._lock:
            self.config = _updated(self.config, kw)
            rpm, tpm = self._buckets
            if rpm.limit != self.config.rpm or tpm.limit != self.config.tpm:
                self._buckets = (_Bucket(self.config.rpm), _Bucket(self.config.tpm))
            return self.config

    def reset(self) -> None:
        """Clear the accounting and the request counter (so fault draws repeat)."""
        with self._lock:
            self._received: dict[str, int] = {}
            self._answered: dict[str, int] = {}
            self._faults: dict[str, int] = {}
            self._counter = 0
            self._in_flight = 0
            self._in_flight_max = 0
            self._undelivered = 0
            self._batch_lines_answered = 0

    def stats(self, per_key: bool = False) -> dict:
        with self._lock:
            out = {
                "received": sum(self._received.values()),
                "answered": sum(self._answered.values()),
                "distinct": len(self._received),
                "faults_by_kind": dict(self._faults),
                "answered_twice": sorted(k for k, n in self._answered.items() if n > 1),
                "in_flight": self._in_flight,
                "in_flight_max": self._in_flight_max,
                "requests": self._counter,
                "batch_lines_answered": self._batch_lines_answered,
                "answered_after_disconnect": self._undelivered,
            }
            if per_key:
                out["per_key"] = {
                    k: {"received": n, "answered": self._answered.get(k, 0)} for k, n in self._received.items()
                }
            return out

    def counts(self, body_or_key: Any) -> tuple[int, int]:
        """(received, answered) for one request body (dict) or accounting key (str)."""
        key = body_or_key if isinstance(body_or_key, str) else request_key(body_or_key)
        with self._lock:
            return self._received.get(key, 0), self._answered.get(key, 0)

    def _fault(self, kind: str) -> None:
        with self._lock:
            self._faults[kind] = self._faults.get(kind, 0) + 1

    def _limits(self, tokens: int, enforce: bool) -> tuple[dict, Optional[tuple[str, float]]]:
        with self._lock:
            rpm, tpm = self._buckets
            blocked = None
            if enforce and not rpm.take(1, True):
                blocked = ("requests", rpm.wait_for(1))
            elif enforce and not tpm.take(tokens, True):
                blocked = ("tokens", tpm.wait_for(tokens))
            elif not enforce:
                rpm.take(1, False)
                tpm.take(tokens, False)
            return {**rpm.headers("requests"), **tpm.headers("tokens")}, blocked

    def _peek_limits(self) -> dict:
        with self._lock:
            rpm, tpm = self._buckets
            return {**rpm.headers("requests"), **tpm.headers("tokens")}

    # ---- app

    def make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware], client_max_size=1024 ** 3)
        r = app.router
        r.add_post("/v1/chat/completions", self._chat)
        r.add_post("/v1/files", self._file_create)
        r.add_get("/v1/files", self._file_list)
        r.add_get("/v1/files/{id}", self._file_get)
        r.add_get("/v1/files/{id}/content", self._file_content)
        r.add_delete("/v1/files/{id}", self._file_delete)
        r.add_post("/v1/batches", self._batch_create)
        r.add_get("/v1/batches", self._batch_list)
        r.add_get("/v1/batches/{id}", self._batch_get)
        r.add_post("/v1/batches/{id}/cancel", self._batch_cancel)
        r.add_get("/_stats", self._stats)
        r.add_post("/_reset", self._reset)
        r.add_post("/_configure", self._configure)
        return app

    @web.middleware
    async def _middleware(self, request: web.Request, handler):
        api = request.path.startswith("/v1/")
        key = self.config.api_key
        if api and key and request.headers.get("Authorization") != f"Bearer {key}":
            return _error(401, "Incorrect API key provided.", code="invalid_api_key")
        try:
            resp = await handler(request)
        except web.HTTPNotFound:
            resp = _error(404, f"Invalid URL ({request.method} {request.path})")
        except web.HTTPMethodNotAllowed:
            resp = _error(405, f"Method {request.method} not allowed for {request.path}")
        if api and "x-ratelimit-limit-requests" not in resp.headers:
            resp.headers.update(self._peek_limits())
        return resp

    async def _stats(self, request: web.Request) -> web.Response:
        return _json_response(self.stats(per_key=request.query.get("per_key") in ("1", "true")))

    async def _reset(self, request: web.Request) -> web.Response:
        self.reset()
        return _json_response({"ok": True})

    async def _configure(self, request: web.Request) -> web.Response:
        try:
            kw = await request.json()
            if "responder" in kw:
                raise TypeError("responder cannot be set over HTTP")
            cfg = self.configure(**kw)
        except (TypeError, ValueError) as exc:
            return _error(400, str(exc))
        return _json_response({k: v for k, v in dataclasses.asdict(cfg).items() if k != "responder"})

    # ---- chat completions

    async def _respond(self, cfg: FakeConfig, body: dict) -> str:
        out = (cfg.responder or default_responder)(body)
        if inspect.isawaitable(out):
            out = await out
        return str(out)

    def _completion(self, cfg: FakeConfig, body: dict, content: Optional[str], refusal: Optional[str],
                    prompt_tokens: int) -> dict:
        n = max(1, int(body.get("n") or 1))
        completion_tokens = estimate_tokens(content or refusal) * n
        message = {"role": "assistant", "content": content, "refusal": refusal, "annotations": []}
        return {
            "id": _new_id("chatcmpl-"),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": cfg.model or str(body.get("model")),
            "choices": [
                {"index": i, "message": dict(message), "logprobs": None, "finish_reason": "stop"} for i in range(n)
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
                "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                              "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
            },
            "service_tier": "default",
            "system_fingerprint": "fp_fake",
        }

    def _rate_limited(self, cfg: FakeConfig, headers: dict) -> web.Response:
        ra = float(cfg.retry_after)
        headers["retry-after"] = str(int(ra)) if ra.is_integer() else str(ra)
        return _error(429, f"Rate limit reached for requests per min (RPM). Please try again in {_duration(ra)}.",
                      type_="requests", code="rate_limit_exceeded", headers=headers)

    async def _chat(self, request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            body = json.loads(raw)
        except ValueError:
            return _error(400, "We could not parse the JSON body of your request.")
        if not isinstance(body, dict) or not body.get("model") or not isinstance(body.get("messages"), list):
            return _error(400, "'model' and 'messages' are required properties.", param="messages")
        if body.get("stream"):
            return _error(400, "stream=true is not supported by the fake server.", param="stream")
        key = request_key(body)
        with self._lock:
            self._counter += 1
            n = self._counter
            attempt = self._received[key] = self._received.get(key, 0) + 1
            self._in_flight += 1
            self._in_flight_max = max(self._in_flight_max, self._in_flight)
        try:
            return await self._answer(request, self.config, body, key, n, attempt)
        finally:
            with self._lock:
                self._in_flight -= 1

    async def _answer(self, request: web.Request, cfg: FakeConfig, body: dict, key: str, n: int,
                      attempt: int) -> web.Response:
        rng = random.Random(f"{cfg.seed}:{n}")
        u, v, w = rng.random(), rng.random(), rng.random()
        kind = None
        if attempt <= cfg.fail_first:
            kind = cfg.fail_first_kind
        else:
            acc = 0.0
            for k in FAULT_KINDS:
                acc += cfg.faults.get(k, 0.0)
                if u < acc:
                    kind = k
                    break
        prompt_tokens = estimate_prompt_tokens(body, cfg.image_tokens)
        max_out = body.get("max_completion_tokens") or body.get("max_tokens") or 0
        headers, blocked = self._limits(prompt_tokens + int(max_out), cfg.enforce_rate_limits)
        headers["x-request-id"] = _new_id("req_")
        headers["openai-version"] = "2020-10-01"
        if blocked is not None:
            what, wait = blocked
            self._fault("rate_limit_budget")
            headers["retry-after"] = str(max(1, math.ceil(wait)))
            return _error(429, f"Rate limit reached for {what} per min (RPM/TPM). Please try again in "
                               f"{_duration(wait)}.", type_=what, code="rate_limit_exceeded", headers=headers)
        if kind == "rate_limit":
            self._fault(kind)
            return self._rate_limited(cfg, headers)

        content: Optional[str] = None
        if kind is None:
            try:
                content = await self._respond(cfg, body)
            except Fault as f:
                kind = f.kind
                if kind == "rate_limit":
                    self._fault(kind)
                    return self._rate_limited(cfg, headers)

        started = time.monotonic()
        if kind == "timeout":
            self._fault(kind)
            await asyncio.sleep(cfg.timeout_hold)
            if cfg.timeout_then == "answer":
                try:
                    content = await self._respond(cfg, body)
                except Fault:
                    content = None
            if content is None:  # drop: close the connection without an answer
                if request.transport is not None:
                    request.transport.close()
                return web.Response(status=204)
        else:
            delay = cfg.latency + cfg.jitter * w
            if delay > 0:
                await asyncio.sleep(delay)
        headers["openai-processing-ms"] = str(int((time.monotonic() - started) * 1000))

        if kind == "server_error":
            self._fault(kind)
            statuses = cfg.server_error_statuses or (500,)
            status = statuses[min(int(v * len(statuses)), len(statuses) - 1)]
            if status == 503:
                return _error(503, "The server is overloaded or not ready yet.", type_="server_error",
                              headers=headers)
            return _error(status, "The server had an error while processing your request. Sorry about that!",
                          type_="server_error", headers=headers)
        if kind == "malformed":
            self._fault(kind)
            mode = cfg.malformed_mode
            if mode == "mixed":
                mode = "invalid_json" if v < 0.5 else "missing_choices"
            if mode == "invalid_json":
                text = '{"id": "chatcmpl-broken", "object": "chat.completion", "choices": [{"index": 0, "mess'
                return web.Response(text=text, content_type="application/json", headers=headers)
            obj = self._completion(cfg, body, "<SUMMARY>", None, prompt_tokens)
            del obj["choices"]
            return _json_response(obj, headers=headers)

        refusal = None
        if kind == "refusal":
            self._fault(kind)
            mode = cfg.refusal_mode
            if mode == "mixed":
                mode = "content" if v < 0.5 else "field"
            content = REFUSAL_TEXT if mode in ("content", "both") else None
            refusal = REFUSAL_TEXT if mode in ("field", "both") else None
        obj = self._completion(cfg, body, content, refusal, prompt_tokens)
        transport = request.transport
        delivered = transport is not None and not transport.is_closing()
        with self._lock:
            if delivered:
                self._answered[key] = self._answered.get(key, 0) + 1
            else:
                self._undelivered += 1
        return _json_response(obj, headers=headers)

    # ---- files

    def _store_file(self, data: bytes, filename: str, purpose: str) -> dict:
        meta = {
            "id": _new_id("file-"),
            "object": "file",
            "bytes": len(data),
            "created_at": int(time.time()),
            "filename": filename,
            "purpose": purpose,
            "status": "processed",
            "expires_at": None,
            "status_details": None,
        }
        self.files[meta["id"]] = {"meta": meta, "data": bytes(data)}
        return meta

    async def _file_create(self, request: web.Request) -> web.Response:
        if not request.content_type.startswith("multipart/"):
            return _error(400, "Expected a multipart/form-data upload.")
        reader = await request.multipart()
        data, filename, purpose = None, "upload", None
        async for part in reader:
            if part.name == "file":
                filename = part.filename or "upload"
                data = bytes(await part.read())
            elif part.name == "purpose":
                purpose = (await part.text()).strip()
        if data is None:
            return _error(400, "Missing required parameter: 'file'.", code="missing_required_parameter", param="file")
        if purpose not in FILE_PURPOSES:
            return _error(400, f"'{purpose}' is not one of {list(FILE_PURPOSES)} - 'purpose'", param="purpose")
        if purpose == "batch" and len(data) > self.config.max_batch_bytes:
            return _error(400, f"File is too large ({len(data)} bytes): the maximum size of a batch input file "
                               f"is {self.config.max_batch_bytes} bytes.", code="file_too_large", param="file")
        return _json_response(self._store_file(data, filename, purpose))

    def _missing_file(self, file_id: str) -> web.Response:
        return _error(404, f"No such File object: {file_id}", param="id")

    async def _file_list(self, request: web.Request) -> web.Response:
        data = [f["meta"] for f in reversed(self.files.values())]
        purpose = request.query.get("purpose")
        if purpose:
            data = [m for m in data if m["purpose"] == purpose]
        return _json_response({"object": "list", "data": data, "has_more": False,
                               "first_id": data[0]["id"] if data else None,
                               "last_id": data[-1]["id"] if data else None})

    async def _file_get(self, request: web.Request) -> web.Response:
        f = self.files.get(request.match_info["id"])
        return _json_response(f["meta"]) if f else self._missing_file(request.match_info["id"])

    async def _file_content(self, request: web.Request) -> web.Response:
        f = self.files.get(request.match_info["id"])
        if not f:
            return self._missing_file(request.match_info["id"])
        return web.Response(body=f["data"], content_type="application/octet-stream")

    async def _file_delete(self, request: web.Request) -> web.Response:
        file_id = request.match_info["id"]
        if self.files.pop(file_id, None) is None:
            return self._missing_file(file_id)
        return _json_response({"id": file_id, "object": "file", "deleted": True})

    # ---- batches

    async def _batch_create(self, request: web.Request) -> web.Response:
        try:
            req = await request.json()
        except ValueError:
            return _error(400, "We could not parse the JSON body of your request.")
        cfg = self.config
        endpoint, window = req.get("endpoint"), req.get("completion_window")
        if endpoint not in BATCH_ENDPOINTS:
            return _error(400, f"Invalid endpoint {endpoint!r}; the fake supports {list(BATCH_ENDPOINTS)}.",
                          param="endpoint")
        if window != "24h":
            return _error(400, "Invalid completion_window: only '24h' is supported.", param="completion_window")
        file_id = req.get("input_file_id")
        f = self.files.get(file_id)
        if f is None:
            return _error(400, f"Invalid input_file_id: no such File object: {file_id}", param="input_file_id")
        if f["meta"]["purpose"] != "batch":
            return _error(400, "The input file must be uploaded with purpose 'batch'.", param="input_file_id")
        data = f["data"]
        if len(data) > cfg.max_batch_bytes:
            return _error(400, f"The batch input file is larger than the maximum of {cfg.max_batch_bytes} bytes.",
                          param="input_file_id")
        raw_lines = [(i + 1, ln) for i, ln in enumerate(data.split(b"\n")) if ln.strip()]
        if len(raw_lines) > cfg.max_batch_requests:
            return _error(400, f"The batch input file contains {len(raw_lines)} requests; a batch can contain at "
                               f"most {cfg.max_batch_requests:,} requests.", param="input_file_id")
        if not raw_lines:
            return _error(400, "The batch input file is empty.", param="input_file_id")
        lines, errors, seen = [], [], set()
        for lineno, ln in raw_lines:
            try:
                obj = json.loads(ln)
            except ValueError:
                errors.append({"code": "invalid_json_line", "message": "This line is not parseable as valid JSON.",
                               "param": None, "line": lineno})
                continue
            problem = None
            if not isinstance(obj, dict) or not isinstance(obj.get("custom_id"), str):
                problem = ("missing_required_parameter", "custom_id")
            elif obj["custom_id"] in seen:
                problem = ("duplicate_custom_id", "custom_id")
            elif obj.get("method") != "POST":
                problem = ("invalid_method", "method")
            elif obj.get("url") != endpoint:
                problem = ("invalid_url", "url")
            elif not isinstance(obj.get("body"), dict):
                problem = ("missing_required_parameter", "body")
            if problem:
                errors.append({"code": problem[0], "message": f"Invalid {problem[1]} on line {lineno}.",
                               "param": problem[1], "line": lineno})
                continue
            seen.add(obj["custom_id"])
            lines.append(obj)
        b = _Batch(
            id=_new_id("batch_"), input_file_id=file_id, endpoint=endpoint, completion_window=window,
            metadata=req.get("metadata"), lines=lines, errors=errors, created_at=int(time.time()),
            created_mono=time.monotonic(),
            settings={k: getattr(cfg, k) for k in ("seed", "batch_polls", "batch_seconds", "batch_fail_fraction",
                                                   "batch_expire_fraction")},
        )
        self.batches[b.id] = b
        return _json_response(b.to_json())

    def _missing_batch(self, batch_id: str) -> web.Response:
        return _error(404, f"No batch found with id '{batch_id}'.", param="id")

    async def _batch_get(self, request: web.Request) -> web.Response:
        b = self.batches.get(request.match_info["id"])
        if b is None:
            return self._missing_batch(request.match_info["id"])
        b.polls += 1
        await self._advance(b)
        return _json_response(b.to_json())

    async def _advance(self, b: _Batch) -> None:
        now = int(time.time())
        if b.status in ("completed", "failed", "expired", "cancelled"):
            return
        if b.status == "cancelling":
            b.status = "cancelled"
            b.times["cancelled"] = now
            return
        if b.errors:
            b.status = "failed"
            b.times["failed"] = now
            return
        s = b.settings
        if s["batch_seconds"] is not None:
            ready = time.monotonic() - b.created_mono >= s["batch_seconds"]
        else:
            ready = b.polls >= s["batch_polls"]
        if b.status == "validating":
            b.status = "in_progress"
            b.times["in_progress"] = now
            b.counts["total"] = len(b.lines)
        if ready:
            await self._finish(b)

    async def _finish(self, b: _Batch) -> None:
        cfg, s = self.config, b.settings
        b.status = "finalizing"
        b.times["finalizing"] = int(time.time())
        total = len(b.lines)
        expire = s["batch_expire_fraction"]
        n_done = total if expire is None else min(total, int(math.floor(expire * total + 1e-9)))
        out, err = [], []
        for i, line in enumerate(b.lines):
            if i % 256 == 255:
                await asyncio.sleep(0)
            body, cid = line["body"], line["custom_id"]
            key = request_key(body)
            with self._lock:
                self._received[key] = self._received.get(key, 0) + 1
            rid = _new_id("batch_req_")
            if i >= n_done:
                err.append({"id": rid, "custom_id": cid, "response": None, "error": {
                    "code": "batch_expired",
                    "message": "This request could not be executed before the completion window expired."}})
                continue
            failed = random.Random(f"{s['seed']}:batch:{cid}").random() < s["batch_fail_fraction"]
            content = None
            if not failed:
                try:
                    content = await self._respond(cfg, body)
                except Fault:
                    failed = True
            if failed:
                err.append({"id": rid, "custom_id": cid, "error": None, "response": {
                    "status_code": 500, "request_id": _new_id("req_"),
                    "body": _error_body("The server had an error while processing your request. Sorry about that!",
                                        "server_error")}})
                continue
            completion = self._completion(cfg, body, content, None, estimate_prompt_tokens(body, cfg.image_tokens))
            out.append({"id": rid, "custom_id": cid, "response": {
                "status_code": 200, "request_id": _new_id("req_"), "body": completion}, "error": None})
            with self._lock:
                self._answered[key] = self._answered.get(key, 0) + 1
                self._batch_lines_answered += 1

        def jsonl(rows: list) -> bytes:
            return "".join(json.dumps(r) + "\n" for r in rows).encode("utf-8")

        if out:
            b.output_file_id = self._store_file(jsonl(out), f"{b.id}_output.jsonl", "batch_output")["id"]
        if err:
            b.error_file_id = self._store_file(jsonl(err), f"{b.id}_error.jsonl", "batch_output")["id"]
        b.counts = {"total": total, "completed": len(out), "failed": len(err)}
        now = int(time.time())
        b.status = "expired" if expire is not None else "completed"
        b.times[b.status] = now

    async def _batch_cancel(self, request: web.Request) -> web.Response:
        b = self.batches.get(request.match_info["id"])
        if b is None:
            return self._missing_batch(request.match_info["id"])
        if b.status not in ("validating", "in_progress"):
            return _error(409, f"Cannot cancel a batch with status '{b.status}'.")
        b.status = "cancelling"
        b.times["cancelling"] = int(time.time())
        return _json_response(b.to_json())

    async def _batch_list(self, request: web.Request) -> web.Response:
        items = list(reversed(self.batches.values()))
        after = request.query.get("after")
        if after:
            ids = [x.id for x in items]
            items = items[ids.index(after) + 1:] if after in ids else []
        limit = int(request.query.get("limit", 20))
        page = items[:limit]
        data = [x.to_json() for x in page]
        return _json_response({"object": "list", "data": data, "has_more": len(items) > limit,
                               "first_id": data[0]["id"] if data else None,
                               "last_id": data[-1]["id"] if data else None})


# --------------------------------------------------------------------------- running it


def _bind(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, port))
    sock.setblocking(False)
    return sock


async def _start(server: FakeOpenAIServer, sock: socket.socket, shutdown_timeout: float) -> web.AppRunner:
    runner = web.AppRunner(server.make_app(), access_log=None, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    await web.SockSite(runner, sock, backlog=1024).start()
    return runner


class FakeOpenAI:
    """The fake server on a free 127.0.0.1 port, in a background thread with its own event loop.

    `FakeOpenAI(port=0, **config)`; config names are those of `FakeConfig` (plus `fault_rate`/
    `fault_kinds` and the per-kind shorthands accepted by `configure`)."""

    def __init__(self, port: int = 0, **config: Any):
        self.server = FakeOpenAIServer(**config)
        self._want_port = port
        self.port: Optional[int] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread: Optional[threading.Thread] = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def start(self) -> "FakeOpenAI":
        if self._thread is not None:
            return self
        sock = _bind(self._want_port)
        self.port = sock.getsockname()[1]
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            runner = None
            try:
                runner = loop.run_until_complete(_start(self.server, sock, 0.5))
            except BaseException as exc:  # surfaced by start()
                failure.append(exc)
            ready.set()
            if runner is not None:
                loop.run_forever()
                loop.run_until_complete(runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, name=f"fake-openai-{self.port}", daemon=True)
        self._thread.start()
        ready.wait(10)
        if failure:
            raise failure[0]
        return self

    def stop(self) -> None:
        if self._thread is None:
            return
        if self._loop is not None and self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._thread = None

    def __enter__(self) -> "FakeOpenAI":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def configure(self, **kw: Any) -> FakeConfig:
        return self.server.configure(**kw)

    def stats(self, per_key: bool = False) -> dict:
        return self.server.stats(per_key=per_key)

    def reset(self) -> None:
        self.server.reset()

    def counts(self, body_or_key: Any) -> tuple[int, int]:
        return self.server.counts(body_or_key)

    def client(self, **kw: Any):
        import openai

        kw.setdefault("max_retries", 0)
        return openai.OpenAI(base_url=self.base_url, api_key=self.server.config.api_key or "sk-fake", **kw)

    def async_client(self, **kw: Any):
        import openai

        kw.setdefault("max_retries", 0)
        return openai.AsyncOpenAI(base_url=self.base_url, api_key=self.server.config.api_key or "sk-fake", **kw)


def _parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tests.fakes.openai_server",
                                description="Local fake OpenAI server (binds 127.0.0.1 only).")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port (printed on start)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--latency", type=float, default=0.0)
    p.add_argument("--jitter", type=float, default=0.0)
    p.add_argument("--fault-rate", type=float, default=None, help="total fault rate, spread over --fault-kinds")
    p.add_argument("--fault-kinds", default=",".join(FAULT_KINDS))
    for kind in FAULT_KINDS:
        p.add_argument(f"--{kind.replace('_', '-')}", type=float, default=None, dest=kind,
                       help=f"rate of {kind} faults")
    p.add_argument("--retry-after", type=float, default=1.0)
    p.add_argument("--timeout-hold", type=float, default=5.0)
    p.add_argument("--timeout-then", choices=_MODES["timeout_then"], default="drop")
    p.add_argument("--malformed-mode", choices=_MODES["malformed_mode"], default="mixed")
    p.add_argument("--refusal-mode", choices=_MODES["refusal_mode"], default="mixed")
    p.add_argument("--fail-first", type=int, default=0)
    p.add_argument("--fail-first-kind", choices=FAULT_KINDS, default="server_error")
    p.add_argument("--rpm", type=int, default=100_000)
    p.add_argument("--tpm", type=int, default=100_000_000)
    p.add_argument("--enforce-rate-limits", action="store_true")
    p.add_argument("--image-tokens", type=int, default=765)
    p.add_argument("--api-key", default=None)
    p.add_argument("--batch-polls", type=int, default=2)
    p.add_argument("--batch-seconds", type=float, default=None)
    p.add_argument("--batch-fail-fraction", type=float, default=0.0)
    p.add_argument("--batch-expire-fraction", type=float, default=None)
    return p.parse_args(argv)


def config_from_args(a: argparse.Namespace) -> dict:
    cfg = {k: getattr(a, k) for k in (
        "seed", "latency", "jitter", "retry_after", "timeout_hold", "timeout_then", "malformed_mode",
        "refusal_mode", "fail_first", "fail_first_kind", "rpm", "tpm", "enforce_rate_limits", "image_tokens",
        "api_key", "batch_polls", "batch_seconds", "batch_fail_fraction", "batch_expire_fraction")}
    faults = {}
    if a.fault_rate is not None:
        kinds = [k.strip() for k in a.fault_kinds.split(",") if k.strip()]
        faults = {k: a.fault_rate / len(kinds) for k in kinds}
    for kind in FAULT_KINDS:
        if getattr(a, kind) is not None:
            faults[kind] = getattr(a, kind)
    cfg["faults"] = faults
    return cfg


async def _serve_forever(server: FakeOpenAIServer, port: int) -> None:
    sock = _bind(port)
    runner = await _start(server, sock, 1.0)
    print(f"fake-openai listening on http://{HOST}:{sock.getsockname()[1]}/v1", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def main(argv: Optional[list[str]] = None) -> None:
    args = _parse_args(argv)
    asyncio.run(_serve_forever(FakeOpenAIServer(**config_from_args(args)), args.port))


if __name__ == "__main__":
    main()
