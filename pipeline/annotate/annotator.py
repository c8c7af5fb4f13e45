"""Generate -> judge -> retry for every assistant turn, with the cache, the shared budget (rate
limits and the spending cap), bounded concurrency, and backoff that honours Retry-After.

Every turn ends in a status: ok, refused, invalid, error, or pending (the spending cap stopped it
before it finished: not failed, not lost; the next run picks it up). Nothing paid for is lost:
each answer is committed to the cache before the turn that asked for it goes on, so a killed run
costs only its requests in flight (and the budget's ledger counts those as spent). A teacher that
cannot answer at all (used-up quota, rejected key, unknown model) stops the run at once.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import random
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Callable

from pipeline.agreement import agree, declines
from pipeline.annotate import prompts
from pipeline.annotate.backends import RequestRejected, TransientError
from pipeline.annotate.budget import SpendCapReached
from pipeline.annotate.cache import RequestCache, request_key
from pipeline.annotate.images import data_url, header_size, request_detail
from pipeline.annotate.limits import SustainedRateLimits
from pipeline.annotate.pricing import PriceTable, image_tokens, text_tokens, usage_tokens
from pipeline.stages import parse, render

FINAL = ("ok", "refused", "invalid", "error")
IMAGE_CACHE_BYTES = 64 * 1024 * 1024  # data URLs kept for the next turns about the same image
__all__ = ["Annotator", "TeacherSettings", "Turn", "turns_of", "RunStats", "SpendCapReached", "FINAL"]


@dataclass
class TeacherSettings:
    model: str = "gpt-4o"
    judge_model: str | None = None  # None: the generation model judges too
    max_attempts: int = 3  # generation attempts per turn (the public script: 2)
    temperature: float = 0.7
    max_tokens: int = 2048
    # a truncated answer (finish_reason "length") is asked again with twice the output budget, up to this
    max_tokens_cap: int = 8192
    judge_max_tokens: int = 8  # the verdict is one word
    # Image detail: "fit" sends "low" for an image that fits in 512x512 (the low-detail rendering
    # is 512x512, so nothing is lost, and it costs 85 tokens instead of 255), else "auto".
    detail: str = "fit"
    max_concurrency: int = 32  # requests in flight
    max_call_retries: int = 8  # per request, for transient failures
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 30.0
    expected_output_tokens: int = 600  # for the estimate before a run
    round: int = 0  # re-annotation round; > 0 sends a `seed` so the request (and its key) is new
    # send OpenAI's `prompt_cache_key` (from the image): requests about one image share a prompt cache
    prompt_cache_key: bool = False
    client_processes: int = 1  # online: annotate in this many processes sharing the budget (pipeline.annotate.workers)
    min_turns_per_process: int = 500  # ... each with at least this many turns (starting a process takes ~1 s)

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
    image_size: tuple[int, int] | None = None  # (width, height) when the ingest step recorded it

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
    size = (row["image_width"], row["image_height"]) if row.get("image_width") and row.get("image_height") else None
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
            meta=json.loads(row["meta"]) if row.get("meta") else {}, image_size=size,
        ))
        context_lines += [f"User: {question}", f"Assistant: {answer}"]
        k += 1
    return turns


@dataclass
class RunStats:
    calls: int = 0  # requests sent (each retry counts; each batch line counts)
    cache_hits: int = 0
    answered: int = 0  # requests that came back usable
    faults: Counter = field(default_factory=Counter)
    pauses: int = 0  # times every request was held (sustained 429s, or the headers said the budget is spent)
    input_tokens: int = 0
    cached_tokens: int = 0  # input tokens the provider served from its prompt cache
    output_tokens: int = 0
    spent_usd: float = 0.0  # paid in this run
    status: Counter = field(default_factory=Counter)
    done: int = 0

    def as_dict(self) -> dict:
        return {"calls": self.calls, "cache_hits": self.cache_hits, "answered": self.answered,
                "faults": dict(self.faults), "pauses": self.pauses, "input_tokens": self.input_tokens,
                "cached_tokens": self.cached_tokens, "output_tokens": self.output_tokens,
                "spent_usd": round(self.spent_usd, 6), "status": dict(self.status), "done": self.done}

    @classmethod
    def of(cls, d: dict) -> "RunStats":
        return cls(**{**d, "faults": Counter(d.get("faults", {})), "status": Counter(d.get("status", {}))})

    def add(self, d: dict) -> None:
        """Add another process's stats (`as_dict`) to these."""
        for k, v in d.items():
            if isinstance(v, dict):
                getattr(self, k).update(v)
            else:
                setattr(self, k, getattr(self, k) + v)


@dataclass
class Reply:
    """What a generation attempt came back as."""

    status: str  # ok (four stages, conclusion to check) | refused | truncated | format
    reason: str = ""
    text: str | None = None
    stages: dict | None = None
    feedback: str | None = None  # what the retry tells the teacher; None: retry the request as it was


def assess(body: dict, has_image: bool) -> Reply:
    """A generation reply judged on what the API says (its `refusal` field, `finish_reason`) and
    on the answer's own opening; a hedge inside the reasoning is not a refusal."""
    choice = body["choices"][0]
    message, finish = choice["message"], choice.get("finish_reason")
    content = message.get("content") or ""
    if message.get("refusal"):
        return Reply("refused", f"the teacher refused: {str(message['refusal'])[:200]}", message["refusal"],
                     feedback="you declined to answer; the question is benign, answer it in the four sections")
    if finish == "content_filter":
        return Reply("refused", "the provider's content filter stopped the answer (finish_reason content_filter)",
                     content or None)
    if finish == "length":
        return Reply("truncated", "the answer was cut off at the output limit (finish_reason length)", content)
    parsed = parse(content, caption_may_be_empty=not has_image)
    if not parsed.ok:
        if declines(content):
            return Reply("refused", f"the teacher declined: {content.strip()[:200]!r}", content,
                         feedback="you declined to answer; the question is benign, answer it in the four sections")
        return Reply("format", f"format: {parsed.problem}: {parsed.detail}", content,
                     feedback=f"the format is wrong ({parsed.detail})")
    return Reply("ok", "", content, parsed.stages)


class Annotator:
    def __init__(
        self,
        backend,
        cache: RequestCache,
        settings: TeacherSettings,
        load_image: Callable[[str], bytes] | None = None,
        budget=None,
        prices: PriceTable | None = None,
        on_progress: Callable[[RunStats, int], None] | None = None,
        run_id: str | None = None,
        transport=None,
        prepare_image: Callable[[bytes, "Turn"], bytes] | None = None,
        open_image: Callable[[str], object] | None = None,
    ) -> None:
        self.backend = backend
        self.cache = cache
        if backend.mode == "offline":  # its answers must never be cached under a real model's name
            from dataclasses import replace

            from pipeline.annotate.backends import OFFLINE_MODEL

            settings = replace(settings, model=OFFLINE_MODEL, judge_model=OFFLINE_MODEL)
        self.s = settings
        self.prices = prices or PriceTable.default()
        # every model this annotator can call is priced before anything is sent: a missing price
        # must never surface after an answer was paid for
        self.prices.require([settings.model, settings.judge])
        self.load_image = load_image
        self.open_image = open_image  # a file object for header-only reads (the estimate)
        self.budget = budget
        self.on_progress = on_progress
        self.run_id = run_id
        self.transport = transport  # a batch transport replaces direct calls (pipeline.annotate.batch)
        # (min turns, factory): a partition with at least that many turns to send goes through the
        # Batch API (half price); set by the teacher resource in its "auto" mode
        self.batch_policy: tuple[int, Callable[[], object]] | None = None
        self.prepare_image = prepare_image  # the source's own rendering (sources.Reader.prepare_image)
        self.stats = RunStats()
        self._images: OrderedDict = OrderedDict()  # (path, sample or None) -> (data URL, size), see _image
        self._images_bytes = 0
        self._sem = Slots(settings.max_concurrency)
        self._rng = random.Random(0)
        self._storm = SustainedRateLimits()
        self._paused_until = 0.0  # a local pause when no shared budget is given
        self._in_flight: dict[str, asyncio.Future] = {}  # request key -> its answer, while it is asked
        self.model_label = getattr(backend, "model_label", None) or settings.model

    def choose_transport(self, n_turns: int) -> None:
        """Use the Batch API for this many turns when the batch policy says so."""
        if self.transport is None and self.batch_policy is not None and n_turns >= self.batch_policy[0]:
            self.transport = self.batch_policy[1]()

    async def aclose(self) -> None:
        """Close what belongs to the running event loop (the HTTP sessions, the batch pollers)."""
        if self.transport is not None:
            await self.transport.aclose()
        await self.backend.close()

    # -- money -----------------------------------------------------------------------------

    def image_sizes(self, turns: list[Turn], workers: int = 16) -> dict[str, tuple[int, int] | None]:
        """Image size of every turn's image: from the ingest rows when recorded, else read from
        the image headers in parallel (never decoded)."""
        from concurrent.futures import ThreadPoolExecutor

        sizes: dict[str, tuple[int, int] | None] = {}
        for t in turns:
            if t.image_path and t.image_size is not None:
                sizes.setdefault(t.image_path, t.image_size)
        todo = sorted({t.image_path for t in turns if t.image_path and t.image_path not in sizes})
        if not todo or (self.open_image is None and self.load_image is None):
            return sizes

        def read(path: str):
            try:
                if self.open_image is not None:
                    with self.open_image(path) as f:
                        return header_size(f)
                return header_size(self.load_image(path))
            except OSError:
                return None  # a missing image is the turn's error later; the estimate goes on

        with ThreadPoolExecutor(max_workers=workers) as pool:
            sizes.update(zip(todo, pool.map(read, todo)))
        return sizes

    def estimate(self, turns: list[Turn]) -> dict:
        """Requests, tokens and dollars before a run: one generation per turn (first attempts:
        retries come on top), plus a judge call for turns whose rules may not decide (free text)."""
        t0 = time.perf_counter()
        out = {"turns": len(turns), "requests": 0, "generation_requests": 0, "judge_requests": 0,
               "input_tokens": 0, "output_tokens": 0, "usd": 0.0, "batch": self.transport is not None}
        if self.backend.mode == "offline" or not turns:
            return {**out, "seconds": 0.0}
        sizes = self.image_sizes(turns)
        sys_tokens, judge_sys = text_tokens(prompts.SYSTEM), text_tokens(prompts.JUDGE_SYSTEM)
        gin = jin = n_judge = 0
        for t in turns:
            size = sizes.get(t.image_path) if t.image_path else None
            if t.image_path:
                detail = request_detail(self.s.detail, size)
                gin += image_tokens(*(size or (2048, 2048)), detail)
            gin += sys_tokens + text_tokens(prompts.user_text(t.question, t.answer, t.options, t.hints, t.context))
            if len(t.answer.split()) > 3 and not t.options:
                n_judge += 1
                jin += judge_sys + text_tokens(t.question) + text_tokens(t.answer) * 2 + 40
        gout, jout = len(turns) * self.s.expected_output_tokens, n_judge * 2
        batch = self.transport is not None
        usd = (self.prices.cost(self.s.model, gin, gout, batch=batch)
               + self.prices.cost(self.s.judge, jin, jout, batch=batch))
        out.update(requests=len(turns) + n_judge, generation_requests=len(turns), judge_requests=n_judge,
                   input_tokens=gin + jin, output_tokens=gout + jout, usd=round(usd, 4),
                   seconds=round(time.perf_counter() - t0, 3))
        return out

    # -- one request -----------------------------------------------------------------------

    async def call(self, model: str, messages: list[dict], params: dict, turn: Turn | None,
                   est_in: int | None = None) -> dict:
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
            reply = await self._fetch(key, model, messages, params, turn, est_in)
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

    async def _fetch(self, key: str, model: str, messages: list[dict], params: dict, turn, est_in) -> dict:
        if self.backend.mode == "offline":
            body = await self.backend.chat(model, messages, params, turn)
            self.cache.put(key, model, "offline", body, 0, 0, 0.0, self.run_id)
            self.stats.calls += 1
            self.stats.answered += 1
            return {"response": body, "input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0, "mode": "offline"}
        max_out = params.get("max_tokens", self.s.max_tokens)
        if est_in is None:
            est_in = estimate_input_tokens(messages)
        batch = self.transport is not None
        reserve = self.prices.cost(model, est_in, max_out, batch=batch)  # the most it can cost
        if batch:
            rid = None
            if not self.transport.holds(key):  # a resumed batch already holds (and reserved) it
                rid = await self._reserve(0, reserve, key, model, "batch", rate=False)
                self.stats.calls += 1
            body = await self.transport.submit(key, model, messages, params)  # stored by the transport
        else:
            body, rid = await self._send(key, model, messages, params, est_in + max_out, reserve)
        tin, tout, cached = usage_tokens(body)
        cost = self.prices.cost(model, tin, tout, batch=batch, cached_tokens=cached)
        if not batch:
            # committed before anything else happens to the answer (and before the turn goes on)
            await self.cache.put_async(key, model, "online", body, tin, tout, cost, self.run_id)
        if self.budget is not None:
            self.budget.settle(rid, cost)
        self.stats.answered += 1
        self.stats.input_tokens += tin
        self.stats.cached_tokens += cached
        self.stats.output_tokens += tout
        self.stats.spent_usd += cost
        return {"response": body, "input_tokens": tin, "output_tokens": tout, "cost_usd": cost,
                "mode": "batch" if batch else "online"}

    async def _reserve(self, tokens: int, usd: float, key: str, model: str, mode: str, rate: bool) -> int | None:
        if self.budget is None:
            return None
        return await self.budget.acquire(tokens, usd, key, model, mode, self.run_id, rate=rate)

    async def _send(self, key, model, messages, params, budget_tokens: int, reserve: float) -> tuple[dict, int | None]:
        last = "no attempt"
        for attempt in range(self.s.max_call_retries + 1):
            if self.budget is None and self._paused_until > time.monotonic():
                await asyncio.sleep(self._paused_until - time.monotonic())
            async with self._sem:
                rid = await self._reserve(budget_tokens, reserve, key, model, "online", rate=True)
                self.stats.calls += 1
                try:
                    body = await self.backend.chat(model, messages, params)
                except TransientError as exc:
                    self._settle(rid, None if exc.maybe_billed else 0.0)
                    error = exc
                except asyncio.CancelledError:  # stopped with the request in flight: it stays held (maybe billed)
                    raise
                except BaseException:  # refused outright (400, 401, 404, quota): not billed
                    self._settle(rid, 0.0)
                    raise
                else:
                    self._storm.record(False)
                    return body, rid
            self.stats.faults[error.kind] += 1
            last = f"{error.kind}: {error}"
            await asyncio.sleep(self._wait_after(error, attempt, budget_tokens))
        raise RequestRejected(f"gave up after {self.s.max_call_retries + 1} tries; last: {last}")

    def _settle(self, rid, cost) -> None:
        if self.budget is not None:
            self.budget.settle(rid, cost)

    def _wait_after(self, exc: TransientError, attempt: int, budget_tokens: int) -> float:
        """How long this request waits before its next try; pauses everyone when 429s say the
        budget is spent (its headers) or keep coming (most recent replies are 429s). A 429
        without budget headers (Azure, many OpenAI-compatible servers) delays only its request."""
        backoff = self._rng.uniform(0, min(self.s.backoff_cap_s, self.s.backoff_base_s * 2 ** attempt))
        wait = exc.retry_after if exc.retry_after is not None else backoff
        if exc.kind == "rate_limit":
            self._storm.record(True)
            requests_left, tokens_left = exc.remaining
            spent = (requests_left is not None and requests_left < 1) or (
                tokens_left is not None and tokens_left < budget_tokens)
            if spent or self._storm.sustained():
                self.stats.pauses += 1
                if self.budget is not None:
                    self.budget.pause(wait)
                else:
                    self._paused_until = max(self._paused_until, time.monotonic() + wait)
        return wait

    # -- one turn --------------------------------------------------------------------------

    def _params(self, max_tokens: int, variant: int, cache_key: str | None) -> dict:
        p = {"temperature": self.s.temperature, "max_tokens": max_tokens}
        if self.s.round > 0 or variant > 0:  # a new request, not the cached one
            p["seed"] = self.s.round * 100 + variant
        if self.s.prompt_cache_key and cache_key:
            p["prompt_cache_key"] = cache_key
        return p

    def _image(self, turn: Turn) -> tuple[str | None, tuple[int, int] | None]:
        """(data URL, size) of the turn's image as sent. The last few are kept: the turns of one
        conversation (and, without a per-sample rendering, the questions about one image) read,
        render and encode it once."""
        if not turn.image_path or self.load_image is None:
            return None, None
        key = (turn.image_path, turn.sample_id if self.prepare_image is not None else None)
        known = self._images.get(key)
        if known is not None:
            self._images.move_to_end(key)
            return known
        data = self.load_image(turn.image_path)
        if self.prepare_image is not None:  # the source's rendering (marks drawn for this sample)
            data = self.prepare_image(data, turn)
        size = turn.image_size if self.prepare_image is None and turn.image_size else header_size(data)
        known = self._images[key] = (data_url(data, turn.image_path), size)
        self._images_bytes += len(known[0])
        while self._images_bytes > IMAGE_CACHE_BYTES and len(self._images) > 1:
            self._images_bytes -= len(self._images.popitem(last=False)[1][0])
        return known

    async def annotate_turn(self, turn: Turn) -> dict:
        row = {
            "sample_id": turn.sample_id, "source": turn.source, "turn_index": turn.turn_index,
            "status": "error", "reason": "", "response": None, "summary": None, "caption": None,
            "reasoning": None, "conclusion": None, "teacher_model": self.model_label,
            "prompt_version": prompts.PROMPT_VERSION, "judge_verdict": "none", "attempts": 0,
            "input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0, "round": self.s.round,
            "input_hash": turn.input_hash(),
        }
        try:
            image_url, size = self._image(turn)
        except OSError as exc:
            row["reason"] = f"image {turn.image_path!r} could not be read: {exc}"
            return row
        detail = request_detail(self.s.detail, size)
        img_tokens = image_tokens(*(size or (2048, 2048)), detail) if image_url else 0
        cache_key = f"llavacot-{prompts.PROMPT_VERSION}-" + (hashlib.sha256(image_url.encode()).hexdigest()[:24]
                                                             if image_url and self.s.prompt_cache_key else "text")

        def book(reply: dict) -> dict:
            row["input_tokens"] += reply["input_tokens"]
            row["output_tokens"] += reply["output_tokens"]
            row["cost_usd"] += reply["cost_usd"]
            return reply["response"]

        try:
            status, reason = await self._attempts(turn, row, image_url, detail, img_tokens, cache_key, book)
        except SpendCapReached as exc:
            status, reason = "pending", str(exc)
        except RequestRejected as exc:
            status, reason = "error", str(exc)
        row["status"], row["reason"] = status, reason
        return row

    async def _attempts(self, turn, row, image_url, detail, img_tokens, cache_key, book) -> tuple[str, str]:
        previous: list[tuple[str, str]] = []
        status, reason = "error", "no attempt made"
        max_out, variant = self.s.max_tokens, 0
        for _ in range(self.s.max_attempts):
            msgs = prompts.generation_messages(turn.question, turn.answer, turn.options, turn.hints, image_url,
                                               turn.context, previous, detail)
            est_in = img_tokens + estimate_input_tokens(msgs, with_images=False)
            body = book(await self.call(self.s.model, msgs, self._params(max_out, variant, cache_key), turn, est_in))
            row["attempts"] += 1
            reply = assess(body, turn.has_image)
            row["response"] = reply.text
            if reply.status == "truncated":
                status = "invalid"
                if max_out >= self.s.max_tokens_cap:
                    return status, f"truncated: the answer did not fit in {max_out} output tokens (max_tokens_cap)"
                reason, max_out = f"truncated at {max_out} output tokens", min(self.s.max_tokens_cap, max_out * 2)
                continue  # the same request with a larger budget
            if reply.status != "ok":
                status, reason = ("refused" if reply.status == "refused" else "invalid"), reply.reason
                if reply.feedback:
                    previous.append((reply.text or "", reply.feedback))
                else:
                    variant += 1  # the same prompt, a new request
                continue
            stages = reply.stages
            verdict = agree(stages["conclusion"], turn.answer, turn.options)
            if verdict.rule == "refusal":
                status, reason = "refused", f"the conclusion declines: {stages['conclusion'][:120]!r}"
                previous.append((reply.text, "your conclusion gives no answer; the question can be answered, "
                                             "reason your way to the standard answer"))
                continue
            if verdict.decided:
                row["judge_verdict"] = f"rule:{verdict.rule}"
                agreed, why = verdict.decision == "agree", verdict.detail
            else:
                agreed, why = await self._judge(turn, stages["conclusion"], row, book)
            row.update({k: stages[k] for k in ("summary", "caption", "reasoning", "conclusion")})
            if agreed:
                if verdict.rule in ("option_letter", "option_text"):
                    # the paper's conclusion for a multiple-choice question: the option alone
                    row["conclusion"] = stages["conclusion"] = turn.answer.strip().upper().rstrip(".")
                row["response"] = render(stages)
                return "ok", ""
            status, reason = "invalid", f"conclusion disagrees with the standard answer ({why})"
            previous.append((reply.text, "your conclusion does not agree with the standard answer "
                                         f"{turn.answer!r}; reason your way to it"))
        return status, reason

    async def _judge(self, turn: Turn, conclusion: str, row: dict, book) -> tuple[bool, str]:
        jmsgs = prompts.judge_messages(turn.question, turn.answer, conclusion)
        jbody = book(await self.call(self.s.judge, jmsgs, {"temperature": 0, "max_tokens": self.s.judge_max_tokens},
                                     turn))
        said = (jbody["choices"][0]["message"].get("content") or "").strip().lower()
        row["judge_verdict"] = "valid" if said.startswith("valid") else "invalid"
        return row["judge_verdict"] == "valid", f"the judge said {said[:40]!r}"

    # -- many turns ------------------------------------------------------------------------

    def _processes_for(self, n_turns: int) -> int:
        if self.transport is not None or self.backend.mode != "online":
            return 1
        return max(1, min(self.s.client_processes, n_turns // max(1, self.s.min_turns_per_process)))

    def worker_spec(self):
        """What a worker process needs to rebuild this annotator, or None when a part of it cannot
        cross to another process (an image callable that does not pickle: a lambda, a closure)."""
        import pickle

        from pipeline.annotate.workers import WorkerSpec

        b = self.budget
        spec = WorkerSpec(
            backend=self.backend.settings, cache_path=str(self.cache.path), settings=self.s, prices=self.prices,
            budget=None if b is None else dict(path=b.path, rpm=b.rpm, tpm=b.tpm, name=b.name, cap_usd=b.cap_usd,
                                               budget=b.budget),
            run_id=self.run_id, load_image=self.load_image, prepare_image=self.prepare_image)
        try:
            pickle.dumps((spec.load_image, spec.prepare_image))
        except (pickle.PicklingError, AttributeError, TypeError):
            return None
        return spec

    async def run(self, turns: list[Turn]) -> list[dict]:
        """Annotate `turns`; rows come back in the order of `turns`. A TeacherUnusable error stops
        every turn at once and is raised (what was answered is in the cache)."""
        processes = self._processes_for(len(turns))
        spec = self.worker_spec() if processes > 1 else None
        if spec is not None:
            from pipeline.annotate.workers import run_in_processes

            progress = None
            if self.on_progress is not None:
                base = self.stats.as_dict()

                def progress(summed: dict, total: int) -> None:
                    now = RunStats.of(base)
                    now.add(summed)
                    self.on_progress(now, total)

            rows, stats = await asyncio.to_thread(run_in_processes, spec, turns, processes, progress)
            self.stats.add(stats)
            return rows
        return await self._run_here(turns)

    async def _run_here(self, turns: list[Turn]) -> list[dict]:
        self._sem = Slots(self.s.max_concurrency)
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
        tasks = [asyncio.create_task(worker()) for _ in range(max(1, min(len(turns), width)))]
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)  # let every turn unwind before we go on
            if self.budget is not None:
                self.budget.flush()
            if self.transport is not None:  # every batch line is a request, resubmissions too
                self.stats.calls = self.transport.lines_submitted
        return [r for r in results if r is not None]


class Slots:
    """Requests in flight, at most `n`: a semaphore that hands a freed slot straight to the next
    waiter. (asyncio.Semaphore rescans the waiters it already woke on every release: with hundreds
    of turns waiting for a slot, a few per cent of the client's CPU.)"""

    def __init__(self, n: int) -> None:
        from collections import deque

        self.free, self._waiters = n, deque()

    async def __aenter__(self) -> None:
        if self.free > 0 and not self._waiters:
            self.free -= 1
            return
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():  # handed a slot just as it was cancelled: pass it on
                self._release()
            raise

    async def __aexit__(self, *exc) -> None:
        self._release()

    def _release(self) -> None:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return
        self.free += 1


def estimate_input_tokens(messages: list[dict], with_images: bool = True) -> int:
    """Input tokens of a request, generously (images at the high-detail worst case)."""
    n = 0
    for m in messages:
        content = m["content"]
        if isinstance(content, str):
            n += text_tokens(content)
            continue
        for p in content:
            if p["type"] == "text":
                n += text_tokens(p.get("text", ""))
            elif with_images:
                n += image_tokens(2048, 2048, p.get("image_url", {}).get("detail", "auto"))
    return n
