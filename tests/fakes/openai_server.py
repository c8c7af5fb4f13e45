"""A local, asynchronous OpenAI-compatible HTTP server for tests and benchmarks (no network).

It speaks enough of the wire protocol for the real `openai` client (sync and async) with
`base_url=http://127.0.0.1:<port>/v1`:

* `POST /v1/chat/completions` — a ChatCompletion whose text comes from a pluggable
  `responder(request_json) -> str` (sync or async); usage estimated from text length plus a
  fixed amount per image part; rate-limit headers from per-minute request/token budgets.
* Files (`/v1/files`, upload/retrieve/content/delete/list) and Batches (`/v1/batches`,
  create/retrieve/cancel/list) held in memory, with the API's 50,000-request / 200 MB limits.
* Fault injection (latency + jitter, 429 with Retry-After, 429 without rate-limit headers,
  `insufficient_quota`, 500/503, timeouts, malformed bodies, refusals, `finish_reason`
  "content_filter" and "length"), drawn deterministically from `random.Random(f"{seed}:{n}")` for the
  n-th request, plus "fail the first K attempts of each distinct request".
* Rate-limit headers on every reply, left out or set to -1 on request (`ratelimit_headers`, as
  Azure and many OpenAI-compatible servers do); unknown models answered 404 `model_not_found`
  (`known_models`); answers cut at `max_tokens` with finish_reason "length" when it is below
  `min_complete_tokens`.
* Automatic prompt caching as OpenAI describes it: a prompt whose first 1,024 or more tokens
  repeat an earlier prompt's reports them (in 128-token steps) as
  `usage.prompt_tokens_details.cached_tokens`.
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
FAULT_KINDS = ("rate_limit", "server_error", "timeout", "malformed", "refusal",
               "rate_limit_bare", "insufficient_quota", "content_filter", "length")
# What `fault_rate` spreads over when no kinds are named: every kind a client can survive
# (insufficient_quota ends a run by design).
RETRYABLE_KINDS = tuple(k for k in FAULT_KINDS if k != "insufficient_quota")
RATELIMIT_HEADER_MODES = ("full", "none", "minus_one")
# a reply whose x-ratelimit-* headers are to be left out (ResponseKey: aiohttp >= 3.12)
BARE = web.ResponseKey("fake_bare", bool) if hasattr(web, "ResponseKey") else "fake_bare"
QUOTA_MESSAGE = ("You exceeded your current quota, please check your plan and billing details. For more "
                 "information on this error, read the docs: https://platform.openai.com/docs/guides/error-codes.")
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


def _image_detail_tokens(part: dict, image_tokens: int) -> int:
    detail = (part.get("image_url") or {}).get("detail") if isinstance(part.get("image_url"), dict) else None
    return 85 if detail == "low" else image_tokens


def estimate_prompt_tokens(body: dict, image_tokens: int) -> int:
    """Prompt tokens: text length / 4, `image_tokens` per image part (85 at detail "low")."""
    return prompt_prefixes(body, image_tokens)[-1][0]


def prompt_prefixes(body: dict, image_tokens: int) -> list[tuple[int, bytes]]:
    """(tokens so far, digest of the prompt so far) after each message part, in order: the
    prefixes a prompt cache can match. The last entry's token count is the whole prompt's."""
    h = hashlib.sha256(str(body.get("model")).encode())
    n, out = 3, []
    for m in body.get("messages") or []:
        if not isinstance(m, dict):
            continue
        n += 4
        h.update(b"\0role:" + str(m.get("role")).encode())
        for p in _parts(m.get("content")):
            if p.get("type") in ("image_url", "input_image"):
                n += _image_detail_tokens(p, image_tokens)
                h.update(b"\0image:" + canonical_json(p).encode())
            else:
                text = str(p.get("text", ""))
                n += estimate_tokens(text)
                h.update(b"\0text:" + text.encode())
            out.append((n, h.digest()))
    return out or [(n, h.digest())]


_STANDARD = re.compile(r"^\s*Standard answer:\s*(.*?)\s*$", re.IGNORECASE | re.MULTILINE)
_VERDICT = re.compile(r"\bverdict\b", re.IGNORECASE)


FILLER = ("Each detail was checked against the image once more, and nothing in it points to a different "
          "reading of the question. ")


def default_responder(body: dict, reasoning_tokens: int = 0) -> str:
    """Four stages whose conclusion is the last `Standard answer: X` line of the user messages
    (else "unknown"; a retry's follow-up message carries none, the first one does); "valid" for a
    judge request (system or user text mentions "verdict"). `reasoning_tokens` pads the reasoning
    to about that many tokens (real teachers write a few hundred)."""
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
    pad = FILLER * max(0, math.ceil((reasoning_tokens - 20) / estimate_tokens(FILLER))) if reasoning_tokens else ""
    return (
        "<SUMMARY>I will look at the image, find the details the question asks about and work "
        "out the answer step by step.</SUMMARY>\n\n"
        "<CAPTION>The image shows the objects, labels and values the question refers to.</CAPTION>\n\n"
        f"<REASONING>{pad}Reading the relevant details and combining them as the question requires "
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
    ratelimit_headers: str = "full"      # x-ratelimit-* on replies: "full", "none", or "minus_one" (-1)
    known_models: Optional[tuple] = None  # if set, any other model is answered 404 model_not_found
    min_complete_tokens: int = 0         # max_tokens below this: the answer is cut, finish_reason "length"
    reasoning_tokens: int = 0            # the default responder pads its reasoning to about this many tokens
    prompt_cache: bool = True            # report cached prompt tokens (OpenAI's automatic prompt caching)
    prompt_cache_min: int = 1024         # ... for a repeated prefix of at least this many tokens
    prompt_cache_ttl: float = 600.0      # ... seen within this many seconds
    batch_prompt_cache: bool = False     # whether batch lines get cached tokens too
    batch_polls: int = 2                 # GETs until a batch is final (1st GET -> in_progress)
    batch_seconds: Optional[float] = None  # or: seconds after creation until final
    batch_fail_fraction: float = 0.0     # fraction of batch lines answered with a 500
    batch_expire_fraction: Optional[float] = None  # if set, batches expire with this fraction done
    batch_fail_first: int = 0            # the first K batches created end "failed" (no output at all)
    max_batch_requests: int = 50_000
    max_batch_bytes: int = 200 * 1024 * 1024


_MODES = {
    "ratelimit_headers": RATELIMIT_HEADER_MODES,
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
        kinds = tuple(kw.pop("fault_kinds", None) or RETRYABLE_KINDS)
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
    if kw.get("known_models") is not None:
        kw["known_models"] = tuple(str(m) for m in kw["known_models"])
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
        self.deleted_files: dict[str, dict] = {}
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
            self._batches_created = 0
            self._usage = {"prompt_tokens": 0, "cached_tokens": 0, "completion_tokens": 0}
            self._prompt_cache: dict[bytes, float] = {}  # prefix digest -> when it expires

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
                "usage": dict(self._usage),
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

    def _cached_tokens(self, cfg: FakeConfig, points: list[tuple[int, bytes]]) -> int:
        """What the provider's prompt cache serves of this prompt (`prompt_prefixes`), and
        remember its prefixes."""
        if not cfg.prompt_cache:
            return 0
        now = time.monotonic()
        with self._lock:
            cache = self._prompt_cache
            hit = max((n for n, d in points if n >= cfg.prompt_cache_min and cache.get(d, 0) > now), default=0)
            for n, d in points:
                if n >= cfg.prompt_cache_min:
                    cache[d] = now + cfg.prompt_cache_ttl
        return min(hit // 128 * 128, points[-1][0])

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
        mode = self.config.ratelimit_headers
        if api and (mode == "none" or resp.get(BARE)):
            for h in [h for h in resp.headers if h.lower().startswith("x-ratelimit-")]:
                del resp.headers[h]
        elif api and mode == "minus_one":
            said = ("x-ratelimit-limit-", "x-ratelimit-remaining-")
            for h in [h for h in resp.headers if h.lower().startswith(said)]:
                resp.headers[h] = "-1"
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
        out = cfg.responder(body) if cfg.responder else default_responder(body, cfg.reasoning_tokens)
        if inspect.isawaitable(out):
            out = await out
        return str(out)

    def _completion(self, cfg: FakeConfig, body: dict, content: Optional[str], refusal: Optional[str],
                    prompt_tokens: int, finish_reason: str = "stop", cached_tokens: int = 0,
                    completion_tokens: Optional[int] = None) -> dict:
        n = max(1, int(body.get("n") or 1))
        if completion_tokens is None:
            completion_tokens = estimate_tokens(content or refusal)
        completion_tokens *= n
        with self._lock:
            self._usage["prompt_tokens"] += prompt_tokens
            self._usage["cached_tokens"] += cached_tokens
            self._usage["completion_tokens"] += completion_tokens
        message = {"role": "assistant", "content": content, "refusal": refusal, "annotations": []}
        return {
            "id": _new_id("chatcmpl-"),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": cfg.model or str(body.get("model")),
            "choices": [
                {"index": i, "message": dict(message), "logprobs": None, "finish_reason": finish_reason}
                for i in range(n)
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
                "prompt_tokens_details": {"cached_tokens": cached_tokens, "audio_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                              "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
            },
            "service_tier": "default",
            "system_fingerprint": "fp_fake",
        }

    def _rate_limited(self, cfg: FakeConfig, headers: dict, bare: bool = False) -> web.Response:
        """A 429 with Retry-After; `bare`: without x-ratelimit-* headers (Azure, many servers)."""
        ra = float(cfg.retry_after)
        headers["retry-after"] = str(int(ra)) if ra.is_integer() else str(ra)
        resp = _error(429, f"Rate limit reached for requests per min (RPM). Please try again in {_duration(ra)}.",
                      type_="requests", code="rate_limit_exceeded", headers=headers)
        if bare:
            resp[BARE] = True
        return resp

    def _refused_at_once(self, cfg: FakeConfig, headers: dict, kind: str) -> web.Response:
        self._fault(kind)
        if kind == "insufficient_quota":  # a dead account: no Retry-After, nothing will pass
            return _error(429, QUOTA_MESSAGE, type_="insufficient_quota", code="insufficient_quota", headers=headers)
        return self._rate_limited(cfg, headers, bare=kind == "rate_limit_bare")

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
        known = self.config.known_models
        if known is not None and body["model"] not in known:
            return _error(404, f"The model `{body['model']}` does not exist or you do not have access to it.",
                          code="model_not_found")
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
        points = prompt_prefixes(body, cfg.image_tokens)
        prompt_tokens = points[-1][0]
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
        if kind in ("rate_limit", "rate_limit_bare", "insufficient_quota"):
            return self._refused_at_once(cfg, headers, kind)

        content: Optional[str] = None
        if kind is None or kind in ("content_filter", "length"):
            try:
                content = await self._respond(cfg, body)
            except Fault as f:
                kind = f.kind
                if kind in ("rate_limit", "rate_limit_bare", "insufficient_quota"):
                    return self._refused_at_once(cfg, headers, kind)

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
        finish_reason, completion_tokens = "stop", None
        if kind == "refusal":
            self._fault(kind)
            mode = cfg.refusal_mode
            if mode == "mixed":
                mode = "content" if v < 0.5 else "field"
            content = REFUSAL_TEXT if mode in ("content", "both") else None
            refusal = REFUSAL_TEXT if mode in ("field", "both") else None
        elif kind == "content_filter":  # the provider's filter stopped the answer part-way
            self._fault(kind)
            content, finish_reason = (content or "")[: len(content or "") // 3], "content_filter"
        max_out = int(body.get("max_completion_tokens") or body.get("max_tokens") or 0)
        if kind == "length" or (max_out and max_out < cfg.min_complete_tokens):
            if kind == "length":
                self._fault(kind)
            cut = max_out if max_out and kind != "length" else max(1, estimate_tokens(content) // 2)
            content, finish_reason, completion_tokens = (content or "")[: cut * 4], "length", cut
        cached = self._cached_tokens(cfg, points)
        obj = self._completion(cfg, body, content, refusal, prompt_tokens, finish_reason, cached, completion_tokens)
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
        f = self.files.pop(file_id, None)
        if f is None:
            return self._missing_file(file_id)
        self.deleted_files[file_id] = f  # kept for tests to read what a client deleted
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
        with self._lock:
            self._batches_created += 1
            fail = self._batches_created <= cfg.batch_fail_first
        if fail:  # as a batch refused after validation: e.g. the organisation's enqueued-token limit
            b.errors = [{"code": "token_limit_exceeded", "message": "Enqueued token limit reached for this model.",
                         "param": None, "line": None}]
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
            points = prompt_prefixes(body, cfg.image_tokens)
            prompt_tokens = points[-1][0]
            cached = self._cached_tokens(cfg, points) if cfg.batch_prompt_cache else 0
            completion = self._completion(cfg, body, content, None, prompt_tokens, cached_tokens=cached)
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
    p.add_argument("--fault-kinds", default=",".join(RETRYABLE_KINDS))
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
    p.add_argument("--ratelimit-headers", choices=RATELIMIT_HEADER_MODES, default="full")
    p.add_argument("--reasoning-tokens", type=int, default=0)
    p.add_argument("--no-prompt-cache", dest="prompt_cache", action="store_false")
    p.add_argument("--batch-polls", type=int, default=2)
    p.add_argument("--batch-seconds", type=float, default=None)
    p.add_argument("--batch-fail-fraction", type=float, default=0.0)
    p.add_argument("--batch-expire-fraction", type=float, default=None)
    return p.parse_args(argv)


def config_from_args(a: argparse.Namespace) -> dict:
    cfg = {k: getattr(a, k) for k in (
        "seed", "latency", "jitter", "retry_after", "timeout_hold", "timeout_then", "malformed_mode",
        "refusal_mode", "fail_first", "fail_first_kind", "rpm", "tpm", "enforce_rate_limits", "image_tokens",
        "api_key", "batch_polls", "batch_seconds", "batch_fail_fraction", "batch_expire_fraction",
        "ratelimit_headers", "reasoning_tokens", "prompt_cache")}
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
