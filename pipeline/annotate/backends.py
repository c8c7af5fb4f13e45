"""Teacher backends: the official openai client (any OpenAI-compatible base_url) and an offline
template teacher for the demo and CI. Both answer `chat(model, messages, params, turn)` with a chat
completion as a plain dict; failures are classified so the caller decides what to retry."""
from __future__ import annotations

import json
from dataclasses import dataclass

from pipeline.stages import render

OFFLINE_MODEL = "offline-template"


class TransientError(Exception):
    """Worth retrying: 429, 5xx, timeouts, connection errors, malformed bodies."""

    def __init__(self, kind: str, message: str, retry_after: float | None = None,
                 remaining: tuple[float | None, float | None] = (None, None)) -> None:
        super().__init__(message)
        self.kind = kind
        self.retry_after = retry_after
        self.remaining = remaining  # (requests, tokens) left by the rate-limit headers, None if not said


class RequestRejected(Exception):
    """This request will never succeed as sent (400): the turn ends as `error`."""


class TeacherUnusable(Exception):
    """No request can succeed (bad key, no permission, unknown model): stop the run."""


def check_completion(body) -> dict:
    """A completion we can use, or TransientError('malformed')."""
    if not isinstance(body, dict) or not body.get("choices"):
        raise TransientError("malformed", "the reply has no choices")
    message = body["choices"][0].get("message")
    if not isinstance(message, dict) or ("content" not in message and "refusal" not in message):
        raise TransientError("malformed", "the reply's first choice has no message")
    return body


class OpenAIBackend:
    mode = "online"

    def __init__(self, api_key: str, base_url: str | None = None, timeout_s: float = 120.0,
                 organization: str | None = None) -> None:
        import openai

        self._openai = openai
        # max_retries=0: our loop owns retries (honouring Retry-After and the shared budget), so
        # the client's own retries and ours never multiply.
        self.client = openai.AsyncOpenAI(
            api_key=api_key, base_url=base_url or None, timeout=timeout_s, max_retries=0, organization=organization
        )

    async def close(self) -> None:
        await self.client.close()

    async def chat(self, model: str, messages: list[dict], params: dict, turn=None) -> dict:
        from pipeline.annotate.limits import remaining_budget, retry_after_seconds

        o = self._openai
        try:
            # The client's own transport, errors and timeouts, but not `chat.completions.create`:
            # that one first walks every message part through the client's TypedDict transform
            # (an identity for plain chat messages) and costs ~3.5 ms of CPU per request, the
            # largest cost of a request on a small machine. `cast_to=bytes` returns the body
            # unparsed, so a malformed reply is ours to classify.
            content = await self.client.post("/chat/completions", cast_to=bytes,
                                             body={"model": model, "messages": messages, **params})
            try:
                body = json.loads(content)
            except (ValueError, UnicodeDecodeError) as exc:
                raise TransientError("malformed", f"the reply is not JSON ({type(exc).__name__})") from None
            return check_completion(body)
        except o.RateLimitError as exc:
            headers = exc.response.headers
            raise TransientError("rate_limit", "429 rate limited", retry_after_seconds(headers),
                                 remaining_budget(headers)) from None
        except (o.AuthenticationError, o.PermissionDeniedError) as exc:
            raise TeacherUnusable(f"the teacher endpoint refused the credentials (HTTP {exc.status_code})") from None
        except o.NotFoundError as exc:
            raise TeacherUnusable(f"model {model!r} or endpoint not found (HTTP {exc.status_code})") from None
        except o.BadRequestError as exc:
            raise RequestRejected(f"HTTP 400: {_error_message(exc)}") from None
        except o.APITimeoutError:
            raise TransientError("timeout", "the request timed out") from None
        except o.APIConnectionError as exc:
            raise TransientError("connection", f"connection error ({type(exc.__cause__).__name__})") from None
        except o.APIResponseValidationError:
            raise TransientError("malformed", "the reply did not validate") from None
        except o.APIStatusError as exc:
            if exc.status_code >= 500 or exc.status_code in (408, 409):
                raise TransientError("server_error", f"HTTP {exc.status_code}",
                                     retry_after_seconds(exc.response.headers, resets=False)) from None
            raise RequestRejected(f"HTTP {exc.status_code}: {_error_message(exc)}") from None


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
