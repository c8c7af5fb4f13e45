"""Generate -> judge -> retry for every assistant turn, with the cache, the shared rate budget,
bounded concurrency, backoff that honours Retry-After, and a hard spending cap.

Every turn ends in a status: ok, refused, invalid, error, or pending (the spending cap stopped it
before it finished: not failed, not lost; the next run picks it up). Nothing paid for is lost: each
answer is in the cache the moment it arrives, so a killed run costs only its requests in flight.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

from pipeline.agreement import agree, is_refusal
from pipeline.annotate import prompts
from pipeline.annotate.backends import RequestRejected, TransientError, check_completion
from pipeline.annotate.cache import RequestCache, request_key
from pipeline.annotate.pricing import PriceTable, image_tokens, text_tokens
from pipeline.stages import parse

FINAL = ("ok", "refused", "invalid", "error")


@dataclass
class TeacherSettings:
    model: str = "gpt-4o"
    judge_model: str | None = None  # None: the generation model judges too
    max_attempts: int = 3  # generation attempts per turn (the public script: 2)
    temperature: float = 0.7
    max_tokens: int = 2048
    judge_max_tokens: int = 8  # the verdict is one word
    detail: str = "auto"  # image detail sent to the API
    max_concurrency: int = 32  # requests in flight
    max_call_retries: int = 8  # per request, for transient failures
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 30.0
    max_spend_usd: float | None = None  # per run; None = no cap
    expected_output_tokens: int = 600  # for the estimate before a run
    round: int = 0  # re-annotation round; > 0 sends a `seed` so the request (and its key) is new

    @property
    def judge(self) -> str:
        return self.judge_model or self.model


@dataclass
class Turn:
    sample_id: str
    source: str
    turn_index: int
    question: str
    answer: str
    options: list[str]
    hints: list[str]
    image_path: str | None
    context: str = ""
    meta: dict = field(default_factory=dict)  # the sample's meta (e.g. marks to draw on the image)

    @property
    def has_image(self) -> bool:
        return bool(self.image_path)

    def input_hash(self) -> str:
        body = json.dumps([self.sample_id, self.turn_index, self.question, self.answer, self.options,
                           self.hints, self.image_path, self.context], ensure_ascii=False)
        return hashlib.sha256(body.encode()).hexdigest()[:16]


def turns_of(row: dict) -> list[Turn]:
    """Every assistant turn of a canonical sample row, with the question it answers."""
    turns, context_lines = [], []
    conv = row["conversations"]
    k = 0
    for i, t in enumerate(conv):
        if t["from"] != "gpt":
            continue
        human = conv[i - 1]["value"] if i > 0 and conv[i - 1]["from"] == "human" else ""
        first = k == 0
        question = row["question"] if first else human.replace("<image>", "").strip()
        answer = row["answer"] if first else t["value"]
        turns.append(Turn(
            sample_id=row["id"], source=row["source"], turn_index=k, question=question, answer=answer,
            options=list(row["options"] or []) if first else [], hints=list(row["hints"] or []) if first else [],
            image_path=row["image_path"], context="\n".join(context_lines),
            meta=json.loads(row["meta"]) if row.get("meta") else {},
        ))
        context_lines += [f"User: {question}", f"Assistant: {answer}"]
        k += 1
    return turns


class SpendCapReached(Exception):
    pass


@dataclass
class RunStats:
    calls: int = 0  # requests sent to the backend (each retry counts)
    cache_hits: int = 0
    answered: int = 0  # requests that came back usable
    faults: Counter = field(default_factory=Counter)
    input_tokens: int = 0
    output_tokens: int = 0
    spent_usd: float = 0.0  # paid in this run
    status: Counter = field(default_factory=Counter)
    done: int = 0

    def as_dict(self) -> dict:
        return {"calls": self.calls, "cache_hits": self.cache_hits, "answered": self.answered,
                "faults": dict(self.faults), "input_tokens": self.input_tokens,
                "output_tokens": self.output_tokens, "spent_usd": round(self.spent_usd, 6),
                "status": dict(self.status), "done": self.done}


def data_url(data: bytes, path: str) -> str:
    ext = path.rsplit(".", 1)[-1].lower()
    mime = {"jpg": "image/jpeg", "jpeg": "image/jpeg", "png": "image/png", "gif": "image/gif",
            "webp": "image/webp"}.get(ext, "image/png")
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


class Annotator:
    def __init__(
        self,
        backend,
        cache: RequestCache,
        settings: TeacherSettings,
        load_image: Callable[[str], bytes] | None = None,
        limiter=None,
        prices: PriceTable | None = None,
        on_progress: Callable[[RunStats, int], None] | None = None,
        run_id: str | None = None,
        transport=None,
        prepare_image: Callable[[bytes, "Turn"], bytes] | None = None,
    ) -> None:
        self.backend = backend
        self.cache = cache
        if backend.mode == "offline":  # its answers must never be cached under a real model's name
            from dataclasses import replace

            from pipeline.annotate.backends import OFFLINE_MODEL

            settings = replace(settings, model=OFFLINE_MODEL, judge_model=OFFLINE_MODEL)
        self.s = settings
        self.load_image = load_image
        self.limiter = limiter
        self.prices = prices or PriceTable.default()
        self.on_progress = on_progress
        self.run_id = run_id
        self.transport = transport  # a batch transport replaces direct calls (pipeline.annotate.batch)
        self.prepare_image = prepare_image  # the source's own rendering (sources.Reader.prepare_image)
        self.stats = RunStats()
        self._reserved = 0.0
        self._sem = asyncio.Semaphore(settings.max_concurrency)
        self._rng = random.Random(0)
        self._429_streak = 0  # 429s since the last usable answer
        self._in_flight: dict[str, asyncio.Future] = {}  # request key -> its answer, while it is asked
        self.model_label = getattr(backend, "model_label", None) or settings.model

    # -- money -----------------------------------------------------------------------------

    def _image_size(self, turn: Turn) -> tuple[int, int] | None:
        if not turn.image_path or self.load_image is None:
            return None
        import io

        from PIL import Image

        with Image.open(io.BytesIO(self.load_image(turn.image_path))) as im:
            return im.size

    def estimate(self, turns: list[Turn]) -> dict:
        """Expected tokens and dollars before a run: one generation per turn plus a judge call
        for turns whose rules may not decide (long free-text answers)."""
        if self.backend.mode == "offline":
            return {"turns": len(turns), "input_tokens": 0, "output_tokens": 0, "usd": 0.0}
        tin = tout = 0
        sys_tokens = text_tokens(prompts.SYSTEM)
        for t in turns:
            size = self._image_size(t)
            img = image_tokens(*size, self.s.detail) if size else 0
            tin += sys_tokens + img + text_tokens(prompts.user_text(t.question, t.answer, t.options, t.hints, t.context))
            tout += self.s.expected_output_tokens
            if len(t.answer.split()) > 3 and not t.options:
                tin += text_tokens(prompts.JUDGE_SYSTEM) + text_tokens(t.answer) * 2 + 60
                tout += 2
        usd = self.prices.cost(self.s.model, tin, tout, batch=self.transport is not None)
        return {"turns": len(turns), "input_tokens": tin, "output_tokens": tout, "usd": round(usd, 4)}

    def _reserve(self, model: str, est_in: int, max_out: int) -> float:
        if self.s.max_spend_usd is None:
            return 0.0
        est = self.prices.cost(model, est_in, max_out, batch=self.transport is not None)
        if self.stats.spent_usd + self._reserved + est > self.s.max_spend_usd:
            raise SpendCapReached(f"spending cap ${self.s.max_spend_usd:.2f} reached")
        self._reserved += est
        return est

    # -- one request -----------------------------------------------------------------------

    async def call(self, model: str, messages: list[dict], params: dict, turn: Turn) -> dict:
        key = request_key(model, messages, params)
        hit = self.cache.get(key)
        if hit is not None:
            self.stats.cache_hits += 1
            return hit
        # Two turns can make the very same request (duplicate samples in a source): the second
        # waits for the answer to the first instead of paying for it again.
        same = self._in_flight.get(key)
        if same is not None:
            self.stats.cache_hits += 1
            return await asyncio.shield(same)
        fut = asyncio.get_running_loop().create_future()
        self._in_flight[key] = fut
        try:
            reply = await self._fetch(key, model, messages, params, turn)
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                fut.cancel()
            else:
                fut.set_exception(exc)
                fut.exception()  # retrieved: a future nobody else awaited logs nothing
            raise
        else:
            fut.set_result(reply)
            return reply
        finally:
            self._in_flight.pop(key, None)

    async def _fetch(self, key: str, model: str, messages: list[dict], params: dict, turn: Turn) -> dict:
        if self.backend.mode == "offline":
            body = await self.backend.chat(model, messages, params, turn)
            self.cache.put(key, model, "offline", body, 0, 0, 0.0, self.run_id)
            self.stats.calls += 1
            self.stats.answered += 1
            return {"response": body, "input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0, "mode": "offline"}
        max_out = params.get("max_tokens", self.s.max_tokens)
        est_in = sum(text_tokens(m["content"]) if isinstance(m["content"], str) else sum(
            text_tokens(p.get("text", "")) if p["type"] == "text" else image_tokens(1024, 1024, self.s.detail)
            for p in m["content"]) for m in messages)
        reserved = self._reserve(model, est_in, max_out)
        try:
            if self.transport is not None:
                body, batch = await self.transport.submit(key, model, messages, params), True
            else:
                body, batch = await self._send(model, messages, params, turn, est_in + max_out), False
        finally:
            self._reserved -= reserved
        usage = body.get("usage") or {}
        tin, tout = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
        cost = self.prices.cost(model, tin, tout, batch=batch)
        self.cache.put(key, model, "batch" if batch else "online", body, tin, tout, cost, self.run_id)
        self.stats.answered += 1
        self.stats.input_tokens += tin
        self.stats.output_tokens += tout
        self.stats.spent_usd += cost
        return {"response": body, "input_tokens": tin, "output_tokens": tout, "cost_usd": cost,
                "mode": "batch" if batch else "online"}

    async def _send(self, model, messages, params, turn, budget_tokens: int) -> dict:
        last = "no attempt"
        for attempt in range(self.s.max_call_retries + 1):
            if self.limiter is not None:
                await self.limiter.acquire(budget_tokens)
            try:
                async with self._sem:
                    self.stats.calls += 1
                    body = check_completion(await self.backend.chat(model, messages, params, turn))
                self._429_streak = 0
                return body
            except TransientError as exc:
                self.stats.faults[exc.kind] += 1
                last = f"{exc.kind}: {exc}"
                if exc.kind == "rate_limit":
                    self._429_streak += 1
                if exc.retry_after is not None:
                    wait = exc.retry_after
                    if exc.kind == "rate_limit" and self.limiter is not None and self._pause_everyone(exc, budget_tokens):
                        self.limiter.pause(wait)
                else:  # full jitter: spreads retries so they do not arrive together
                    wait = self._rng.uniform(0, min(self.s.backoff_cap_s, self.s.backoff_base_s * 2 ** attempt))
                await asyncio.sleep(wait)
        raise RequestRejected(f"gave up after {self.s.max_call_retries + 1} tries; last: {last}")

    def _pause_everyone(self, exc: TransientError, budget_tokens: int) -> bool:
        """Whether a 429 holds every request (in every process sharing the budget) for its
        Retry-After, or only the request that got it.

        The shared pause is for a spent account budget: then every request would be refused, and
        sending them only burns more of it. When the 429's own rate-limit headers say requests and
        tokens remain for a request this size, the refusal is not about our budget (a burst, a
        momentary overload): the other requests are likely to pass, and pausing them all would turn
        each such 429 into a stall of the whole run (at 4 % 429s and ~120 requests a second, the run
        would be paused most of the time). So that request alone waits its Retry-After; everyone
        pauses when the headers are missing (we cannot tell), when they show the budget spent, or
        when 429s keep coming with no answer in between (the server is refusing whatever its
        headers say)."""
        requests_left, tokens_left = exc.remaining
        if requests_left is None or tokens_left is None:
            return True
        if requests_left < 1 or tokens_left < budget_tokens:
            return True
        return self._429_streak >= 5

    # -- one turn --------------------------------------------------------------------------

    def _params(self, attempt: int) -> dict:
        p = {"temperature": self.s.temperature, "max_tokens": self.s.max_tokens}
        if self.s.round > 0:
            p["seed"] = self.s.round * 100 + attempt
        return p

    async def annotate_turn(self, turn: Turn) -> dict:
        image_url = None
        row = {
            "sample_id": turn.sample_id, "source": turn.source, "turn_index": turn.turn_index,
            "status": "error", "reason": "", "response": None, "summary": None, "caption": None,
            "reasoning": None, "conclusion": None, "teacher_model": self.model_label,
            "prompt_version": prompts.PROMPT_VERSION, "judge_verdict": "none", "attempts": 0,
            "input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0, "round": self.s.round,
            "input_hash": turn.input_hash(),
        }
        if turn.image_path and self.load_image is not None:
            try:
                data = self.load_image(turn.image_path)
                if self.prepare_image is not None:
                    data = self.prepare_image(data, turn)
                image_url = data_url(data, turn.image_path)
            except OSError as exc:
                row["reason"] = f"image {turn.image_path!r} could not be read: {exc}"
                return row

        def book(reply: dict) -> dict:
            row["input_tokens"] += reply["input_tokens"]
            row["output_tokens"] += reply["output_tokens"]
            row["cost_usd"] += reply["cost_usd"]
            return reply["response"]

        previous: list[tuple[str, str]] = []
        status, reason = "error", "no attempt made"
        try:
            for attempt in range(self.s.max_attempts):
                msgs = prompts.generation_messages(turn.question, turn.answer, turn.options, turn.hints, image_url,
                                                   turn.context, previous, self.s.detail)
                body = book(await self.call(self.s.model, msgs, self._params(attempt), turn))
                row["attempts"] += 1
                message = body["choices"][0]["message"]
                content = message.get("content") or ""
                row["response"] = content or message.get("refusal")
                if message.get("refusal") or is_refusal(content):
                    status, reason = "refused", "the teacher refused to answer"
                    previous.append((content or str(message.get("refusal")),
                                     "you declined to answer; the question is benign, answer it in the four sections"))
                    continue
                parsed = parse(content, caption_may_be_empty=not turn.has_image)
                if not parsed.ok:
                    status, reason = "invalid", f"format: {parsed.problem}: {parsed.detail}"
                    previous.append((content, f"the format is wrong ({parsed.detail})"))
                    continue
                row.update({k: parsed.stages[k] for k in ("summary", "caption", "reasoning", "conclusion")})
                verdict = agree(parsed.stages["conclusion"], turn.answer, turn.options)
                if verdict.decided:
                    row["judge_verdict"] = f"rule:{verdict.rule}"
                    agreed = verdict.decision == "agree"
                    why = verdict.detail
                else:
                    jmsgs = prompts.judge_messages(turn.question, turn.answer, parsed.stages["conclusion"])
                    jbody = book(await self.call(self.s.judge, jmsgs,
                                                 {"temperature": 0, "max_tokens": self.s.judge_max_tokens}, turn))
                    said = (jbody["choices"][0]["message"].get("content") or "").strip().lower()
                    row["judge_verdict"] = "valid" if said.startswith("valid") else "invalid"
                    agreed, why = row["judge_verdict"] == "valid", f"the judge said {said[:40]!r}"
                if agreed:
                    status, reason = "ok", ""
                    break
                status, reason = "invalid", f"conclusion disagrees with the standard answer ({why})"
                previous.append((content, "your conclusion does not agree with the standard answer "
                                          f"{turn.answer!r}; reason your way to it"))
        except SpendCapReached as exc:
            status, reason = "pending", str(exc)
        except RequestRejected as exc:
            status, reason = "error", str(exc)
        row["status"], row["reason"] = status, reason
        return row

    # -- many turns ------------------------------------------------------------------------

    async def run(self, turns: list[Turn]) -> list[dict]:
        """Annotate `turns`; rows come back in the order of `turns`."""
        self._sem = asyncio.Semaphore(self.s.max_concurrency)  # bound to this event loop
        self._in_flight = {}
        results: list[dict | None] = [None] * len(turns)
        queue: asyncio.Queue = asyncio.Queue()
        for i in range(len(turns)):
            queue.put_nowait(i)
        last_report = [time.monotonic()]

        async def worker():
            while True:
                try:
                    i = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                row = await self.annotate_turn(turns[i])
                results[i] = row
                self.stats.status[row["status"]] += 1
                self.stats.done += 1
                if self.on_progress and (time.monotonic() - last_report[0] > 5 or self.stats.done == len(turns)):
                    last_report[0] = time.monotonic()
                    self.on_progress(self.stats, len(turns))

        # batch mode: every turn submits at once, and the transport gathers them into files
        width = len(turns) if self.transport is not None else self.s.max_concurrency * 2
        n_workers = max(1, min(len(turns), width))
        tasks = [asyncio.create_task(worker()) for _ in range(n_workers)]
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
        return [r for r in results if r is not None]
