"""Teacher backends: the official openai client (any OpenAI-compatible base_url) and an offline
template teacher for the demo and CI. Both answer `chat(model, messages, params, turn)` with a chat
completion as a plain dict; failures are classified so the caller decides what to retry:

- TransientError: worth retrying (429, 5xx, timeouts, dropped connections, malformed bodies);
- RequestRejected: this request will never succeed as sent (400): the turn ends as `error`;
- TeacherUnusable: no request can succeed (a used-up quota, a rejected key, an unknown model):
  the run stops at once with a message that says what to fix (never the key itself).
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass

import orjson

from pipeline.stages import render

OFFLINE_MODEL = "offline-template"


class TransientError(Exception):
    """Worth retrying: 429, 5xx, timeouts, connection errors, malformed bodies."""

    def __init__(self, kind: str, message: str, retry_after: float | None = None,
                 remaining: tuple[float | None, float | None] = (None, None), maybe_billed: bool = False) -> None:
        super().__init__(message)
        self.kind = kind
        self.retry_after = retry_after
        self.remaining = remaining  # (requests, tokens) left by the rate-limit headers, None if not said
        # a timeout, a dropped connection or a garbled 200 may have been generated and billed all
        # the same: the spend ledger keeps such a request's reservation as spent
        self.maybe_billed = maybe_billed


class RequestRejected(Exception):
    """This request will never succeed as sent (400): the turn ends as `error`."""


class TeacherUnusable(Exception):
    """No request can succeed (used-up quota, bad key, no permission, unknown model): stop the run."""


def check_completion(body) -> dict:
    """A completion we can use, or TransientError('malformed')."""
    if not isinstance(body, dict) or not body.get("choices"):
        raise TransientError("malformed", "the reply has no choices", maybe_billed=True)
    choice = body["choices"][0]
    message = choice.get("message") if isinstance(choice, dict) else None
    if not isinstance(message, dict) or ("content" not in message and "refusal" not in message):
        raise TransientError("malformed", "the reply's first choice has no message", maybe_billed=True)
    return body


def _http_client(openai, timeout_s: float, max_connections: int):
    """The openai client's own aiohttp transport (its `aiohttp` extra): at 256 requests in flight
    the default httpx connection pool spends most of a core searching its connections (measured
    in benchmarks/teacher.py). None (the client's default) where it is not available."""
    try:
        try:
            import httpx2 as httpx
        except ImportError:  # openai < 3 ships on httpx
            import httpx
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        return openai.DefaultAioHttpClient(timeout=timeout_s, limits=limits)
    except (AttributeError, ImportError, RuntimeError):
        return None


class OpenAIBackend:
    mode = "online"

    def __init__(self, api_key: str, base_url: str | None = None, timeout_s: float = 120.0,
                 organization: str | None = None, max_connections: int = 300) -> None:
        import openai

        self._openai = openai
        self._kwargs = dict(api_key=api_key, base_url=base_url or None, organization=organization)
        self.timeout_s, self.max_connections = timeout_s, max_connections
        self._client = None
        self._loop = None

    @property
    def client(self):
        """The openai client of the running event loop (an aiohttp session belongs to the loop
        that opened it; a later `asyncio.run` gets a client of its own)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if self._client is None or (loop is not None and self._loop not in (None, loop)):
            # max_retries=0: our loop owns retries (honouring Retry-After and the shared budget),
            # so the client's own retries and ours never multiply.
            self._client = self._openai.AsyncOpenAI(
                timeout=self.timeout_s, max_retries=0,
                http_client=_http_client(self._openai, self.timeout_s, self.max_connections), **self._kwargs)
            self._loop = loop
        elif self._loop is None:  # made before any loop ran: it opens its session in the first one
            self._loop = loop
        return self._client

    async def close(self) -> None:
        if self._client is not None and self._loop is asyncio.get_running_loop():
            await self._client.close()
        self._client = self._loop = None

    async def chat(self, model: str, messages: list[dict], params: dict, turn=None) -> dict:
        from pipeline.annotate.limits import remaining_budget, retry_after_seconds

        o = self._openai
        body = orjson.dumps({"model": model, "messages": messages, **params})
        try:
            # The client's own transport, errors and timeouts, with the body serialised once by
            # us: `chat.completions.create` walks every message part through the client's
            # TypedDict transform and deep-copies the request (~1 ms of CPU a request with an
            # image), the largest cost of a request at hundreds a second. `cast_to=bytes`
            # returns the body unparsed, so a malformed reply is ours to classify.
            content = await self.client.post("/chat/completions", cast_to=bytes, content=body,
                                             options={"headers": {"Content-Type": "application/json"}})
        except o.RateLimitError as exc:
            if _quota_used_up(exc):
                raise TeacherUnusable(
                    "the teacher account has no quota left (429 insufficient_quota): add credit or raise the "
                    "usage limit of the API key's organisation, then run again. The run stopped at once; "
                    "answers received so far are cached and will not be paid for again") from None
            headers = exc.response.headers
            raise TransientError("rate_limit", "429 rate limited", retry_after_seconds(headers),
                                 remaining_budget(headers)) from None
        except o.AuthenticationError as exc:
            raise TeacherUnusable(f"the teacher endpoint rejected the API key (HTTP {exc.status_code}): set a "
                                  "valid key in OPENAI_API_KEY (and OPENAI_BASE_URL for another endpoint)") from None
        except o.PermissionDeniedError as exc:
            raise TeacherUnusable(f"the API key may not use this endpoint or model (HTTP {exc.status_code}: "
                                  f"{_error_code(exc)})") from None
        except o.NotFoundError as exc:
            raise TeacherUnusable(f"model {model!r} was not found at the teacher endpoint (HTTP {exc.status_code}: "
                                  f"{_error_code(exc)}): check the model name (on Azure, the deployment name) "
                                  "and OPENAI_BASE_URL") from None
        except o.BadRequestError as exc:
            raise RequestRejected(f"HTTP 400: {_error_message(exc)}") from None
        except o.APITimeoutError:
            raise TransientError("timeout", "the request timed out", maybe_billed=True) from None
        except o.APIConnectionError as exc:
            raise TransientError("connection", f"connection error ({type(exc.__cause__).__name__})",
                                 maybe_billed=True) from None
        except o.APIResponseValidationError:
            raise TransientError("malformed", "the reply did not validate", maybe_billed=True) from None
        except o.APIStatusError as exc:
            if exc.status_code >= 500 or exc.status_code in (408, 409):
                raise TransientError("server_error", f"HTTP {exc.status_code}",
                                     retry_after_seconds(exc.response.headers, resets=False)) from None
            raise RequestRejected(f"HTTP {exc.status_code}: {_error_message(exc)}") from None
        try:
            reply = orjson.loads(content)
        except (orjson.JSONDecodeError, TypeError) as exc:
            raise TransientError("malformed", f"the reply is not JSON ({type(exc).__name__})",
                                 maybe_billed=True) from None
        return check_completion(reply)


def _quota_used_up(exc) -> bool:
    body = exc.body if isinstance(getattr(exc, "body", None), dict) else {}
    inner = body.get("error") if isinstance(body.get("error"), dict) else body
    return "insufficient_quota" in (getattr(exc, "code", None), inner.get("code"), inner.get("type"))


def _error_code(exc) -> str:
    return str(getattr(exc, "code", None) or type(exc).__name__)


def _error_message(exc) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        msg = body.get("message") or (body.get("error") or {}).get("message")
        if msg:
            return str(msg)[:300]
    return type(exc).__name__


@dataclass
class OfflineBackend:
    """A deterministic template teacher built from the sample's own standard answer. It cannot see
    images; every row it writes says `offline-template` as its teacher model. For the demo and CI."""

    mode = "offline"

    async def close(self) -> None:
        pass

    async def chat(self, model: str, messages: list[dict], params: dict, turn=None) -> dict:
        if turn is None:
            raise ValueError("the offline teacher needs the turn it answers")
        system = messages[0]["content"] if messages else ""
        if "verdict" in system.lower():
            text = "valid"
        else:
            text = render(offline_stages(turn))
        return {
            "id": "offline", "object": "chat.completion", "model": OFFLINE_MODEL,
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        }


def offline_stages(turn) -> dict[str, str]:
    q = " ".join(turn.question.split())
    short_q = q if len(q) <= 160 else q[:157] + "..."
    answer = turn.answer.strip()
    if turn.options and len(answer) == 1 and answer.isalpha():
        idx = ord(answer.upper()) - ord("A")
        shown = f"{answer.upper()}. {turn.options[idx]}" if 0 <= idx < len(turn.options) else answer
        approach = f"I will compare the {len(turn.options)} options against what the image shows and pick one."
        reasoning = f"Checking each option against the image, option {shown} is the one that fits."
        conclusion = answer.upper()
    else:
        shown = answer
        approach = "I will look at the parts of the image the question is about and answer from them."
        reasoning = f"From the relevant parts of the image, the answer to \"{short_q}\" is: {shown}"
        conclusion = answer
    caption = (
        f"The image from the {turn.source} dataset shows what the question refers to." if turn.has_image else ""
    )
    if turn.hints:
        reasoning = "Using the given context: " + " ".join(h for h in turn.hints[:1]) + " " + reasoning
    return {
        "summary": f"The question asks: {short_q} {approach}",
        "caption": caption,
        "reasoning": reasoning,
        "conclusion": conclusion,
    }
