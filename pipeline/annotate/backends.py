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
import os
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


QUOTA_MESSAGE = ("the teacher account has no quota left (429 insufficient_quota): add credit or raise the usage "
                 "limit of the API key's organisation, then run again. The run stopped at once; answers received "
                 "so far are cached and will not be paid for again")
HTTP_PATHS = ("direct", "openai")


def classify_status(status: int, headers, body, model: str) -> Exception:
    """The error an HTTP status (with its headers and JSON error body) stands for: one rule for
    both request paths (ours and the openai client's)."""
    from pipeline.annotate.limits import remaining_budget, retry_after_seconds

    code, message = _error_fields(body)
    if status == 429:
        if code == "insufficient_quota":
            return TeacherUnusable(QUOTA_MESSAGE)
        return TransientError("rate_limit", "429 rate limited", retry_after_seconds(headers), remaining_budget(headers))
    if status == 401:
        return TeacherUnusable(f"the teacher endpoint rejected the API key (HTTP 401{': ' + code if code else ''}): "
                               "set a valid key in OPENAI_API_KEY (and OPENAI_BASE_URL for another endpoint)")
    if status == 403:
        return TeacherUnusable(f"the API key may not use this endpoint or model (HTTP 403: {code or 'forbidden'})")
    if status == 404:
        return TeacherUnusable(f"model {model!r} was not found at the teacher endpoint (HTTP 404: "
                               f"{code or 'not found'}): check the model name (on Azure, the deployment name) "
                               "and OPENAI_BASE_URL")
    if status >= 500 or status in (408, 409):
        return TransientError("server_error", f"HTTP {status}", retry_after_seconds(headers, resets=False))
    return RequestRejected(f"HTTP {status}: {message or 'rejected'}")


def _error_fields(body) -> tuple[str | None, str | None]:
    """(code, message) of an error body: {"error": {...}} or the inner object itself."""
    if not isinstance(body, dict):
        return None, None
    inner = body.get("error") if isinstance(body.get("error"), dict) else body
    code = inner.get("code") or (inner.get("type") if inner.get("type") == "insufficient_quota" else None)
    message = inner.get("message")
    return (str(code) if code else None), (str(message)[:300] if message else None)


def _http_client(openai, timeout_s: float, max_connections: int):
    """The openai client's own aiohttp transport (its `aiohttp` extra): at 256 requests in flight
    the default httpx connection pool spends most of a core searching its connections. None (the
    client's default) where it is not available."""
    try:
        try:
            import httpx2 as httpx
        except ImportError:  # openai < 3 ships on httpx
            import httpx
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        return openai.DefaultAioHttpClient(timeout=timeout_s, limits=limits)
    except (AttributeError, ImportError, RuntimeError):
        return None


def _env_proxy(url: str) -> str | None:
    """The proxy the environment (HTTPS_PROXY, HTTP_PROXY, NO_PROXY) sets for `url`, if any."""
    import urllib.parse
    import urllib.request

    parts = urllib.parse.urlsplit(url)
    if urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    return urllib.request.getproxies().get(parts.scheme)


class _PerLoop:
    """Something that belongs to the event loop that made it (an HTTP session): made again for a
    later loop (each `asyncio.run`), closed in the loop that owns it."""

    def __init__(self, make) -> None:
        self._make, self._value, self._loop = make, None, None

    def get(self):
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if self._value is None or (loop is not None and self._loop not in (None, loop)):
            self._value, self._loop = self._make(), loop
        elif self._loop is None:  # made before any loop ran: it opens its session in the first one
            self._loop = loop
        return self._value

    async def close(self, closer) -> None:
        if self._value is not None and self._loop is asyncio.get_running_loop():
            await closer(self._value)
        self._value = self._loop = None


class OpenAIBackend:
    """Chat completions from any OpenAI-compatible endpoint.

    `http="openai"` (the default) sends each request through the official client's `post`;
    `http="direct"` (opt-in, for self-hosted endpoints at hundreds of requests in flight) posts it on
    one aiohttp session with the endpoint, key and organisation the openai client would use
    (OPENAI_BASE_URL, OPENAI_ORG_ID and OPENAI_PROJECT_ID when not given). Both classify every reply with `classify_status` (a test holds them to the same
    result for every fault the fake server makes). Written by hand because the client's own
    request path (options copied twice, headers rebuilt, URLs parsed three times, httpx over
    aiohttp) costs about 0.7 ms of CPU per request against 0.3 ms here, and at 256 requests in
    flight against a fast server that is the difference between keeping up and not
    (benchmarks/teacher.py). The Batch API's files and batches go through the official client.
    """

    mode = "online"

    def __init__(self, api_key: str, base_url: str | None = None, timeout_s: float = 120.0,
                 organization: str | None = None, max_connections: int = 300, http: str = "openai") -> None:
        if http not in HTTP_PATHS:
            raise ValueError(f"http must be one of {HTTP_PATHS}, not {http!r}")
        self._kwargs = dict(api_key=api_key, base_url=base_url or None, organization=organization)
        # to rebuild it in another process (pipeline.annotate.workers)
        self.settings = dict(self._kwargs, timeout_s=timeout_s, max_connections=max_connections, http=http)
        self.timeout_s, self.max_connections, self.http = timeout_s, max_connections, http
        self._client = _PerLoop(self._make_client)
        self._session = _PerLoop(self._make_session)
        base = base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
        self._url = base.rstrip("/") + "/chat/completions"
        self._headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json",
                         "Accept": "application/json"}
        self._proxy = _env_proxy(self._url)
        from yarl import URL  # parsed once, not on every request (aiohttp's own URL type)

        self._yarl_url = URL(self._url)
        org, project = organization or os.environ.get("OPENAI_ORG_ID"), os.environ.get("OPENAI_PROJECT_ID")
        if org:
            self._headers["OpenAI-Organization"] = org
        if project:
            self._headers["OpenAI-Project"] = project

    def _make_client(self):
        import openai

        # max_retries=0: our loop owns retries (honouring Retry-After and the shared budget), so
        # the client's own retries and ours never multiply.
        http_client = _http_client(openai, self.timeout_s, self.max_connections)
        return openai.AsyncOpenAI(timeout=self.timeout_s, max_retries=0, http_client=http_client, **self._kwargs)

    def _make_session(self):
        import aiohttp

        # not trust_env: it looks up .netrc and the proxy variables in a thread for every request;
        # the proxy for the endpoint is looked up once instead (_proxy)
        return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=self.max_connections),
                                     timeout=aiohttp.ClientTimeout(total=self.timeout_s), headers=self._headers)

    @property
    def client(self):
        """The official openai client of the running event loop (the Batch API's files and batches)."""
        return self._client.get()

    async def close(self) -> None:
        await self._client.close(lambda c: c.close())
        await self._session.close(lambda s: s.close())

    async def chat(self, model: str, messages: list[dict], params: dict, turn=None) -> dict:
        body = orjson.dumps({"model": model, "messages": messages, **params})
        if self.http == "direct":
            content = await self._post_direct(body, model)
        else:
            content = await self._post_openai(body, model)
        try:
            reply = orjson.loads(content)
        except (orjson.JSONDecodeError, TypeError) as exc:
            raise TransientError("malformed", f"the reply is not JSON ({type(exc).__name__})",
                                 maybe_billed=True) from None
        return check_completion(reply)

    async def _post_direct(self, body: bytes, model: str) -> bytes:
        import aiohttp

        try:
            async with self._session.get().post(self._yarl_url, data=body, proxy=self._proxy) as resp:
                content = await resp.read()
                if resp.status == 200:
                    return content
                status, headers = resp.status, resp.headers
        except asyncio.TimeoutError:  # aiohttp's timeouts are TimeoutErrors too
            raise TransientError("timeout", "the request timed out", maybe_billed=True) from None
        except aiohttp.ClientError as exc:
            raise TransientError("connection", f"connection error ({type(exc).__name__})", maybe_billed=True) from None
        try:
            error = orjson.loads(content)
        except orjson.JSONDecodeError:
            error = None
        raise classify_status(status, headers, error, model)

    async def _post_openai(self, body: bytes, model: str) -> bytes:
        import openai as o

        try:
            # the client's transport, errors and timeouts; `cast_to=bytes` returns the body
            # unparsed, so a malformed reply is ours to classify
            return await self.client.post("/chat/completions", cast_to=bytes, content=body,
                                          options={"headers": {"Content-Type": "application/json"}})
        except o.APITimeoutError:
            raise TransientError("timeout", "the request timed out", maybe_billed=True) from None
        except o.APIConnectionError as exc:
            raise TransientError("connection", f"connection error ({type(exc.__cause__).__name__})",
                                 maybe_billed=True) from None
        except o.APIResponseValidationError:
            raise TransientError("malformed", "the reply did not validate", maybe_billed=True) from None
        except o.APIStatusError as exc:
            raise classify_status(exc.status_code, exc.response.headers, exc.body, model) from None


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
    """The template teacher's four stages for `turn`: fixed wording per stage, the sample's answer in
    the conclusion (and the letter in the reasoning). Nothing is copied from the question, its options
    or its hints: the demo's tiny model, fine-tuned on ~120 such answers, cannot copy unseen text, and
    an answer that quotes the question in two stages taught it to lose track of which stage it is in
    (19 of the demo benchmarks' 45 direct answers closed the summary with another stage's tag)."""
    answer = turn.answer.strip()
    if turn.options and len(answer) == 1 and answer.isalpha():
        summary = f"I will compare the {len(turn.options)} options against what the image shows and pick one."
        reasoning = f"Checking each option against the image, option {answer.upper()} is the one that fits."
        conclusion = answer.upper()
    else:
        summary = "I will look at the parts of the image the question is about and answer from them."
        reasoning = "The relevant parts of the image show the answer directly."
        conclusion = answer
    caption = (
        f"The image from the {turn.source} dataset shows what the question refers to." if turn.has_image else ""
    )
    return {"summary": summary, "caption": caption, "reasoning": reasoning, "conclusion": conclusion}
