"""The Batch API as a transport: half the price, results within the completion window.

Turn coroutines call `submit(...)` exactly as they would call the API; requests are gathered for a
moment, written as JSONL files split at the API's limits (50,000 requests, 200 MB), uploaded and
submitted. Batch ids are stored in the request cache's database before polling starts, so a
restarted run resumes polling instead of paying again; the uploaded file's id is stored before the
batch is even asked for, so a run stopped between the API creating a batch and our recording it
finds that batch by its file on restart (or after a create call that failed without saying
whether the batch exists) rather than buying it twice. Every answered line goes into the cache the
moment its output file is read; failed lines, the unfinished lines of an expired batch and every
line of a failed batch are resubmitted after a backoff (the finished ones are kept). Once a
batch's results are stored, its files (input, output, errors) are deleted from the provider's
storage, which otherwise keeps them and counts them against the organisation's file quota.
"""
from __future__ import annotations

import asyncio
import json

from pipeline.annotate.backends import RequestRejected, TransientError, check_completion
from pipeline.annotate.cache import CREATING, RequestCache
from pipeline.annotate.pricing import PriceTable, usage_tokens

MAX_REQUESTS = 50_000
MAX_BYTES = 200 * 1024 * 1024
TERMINAL = ("completed", "expired", "failed", "cancelled")


def split_lines(lines: list[tuple[str, bytes]], max_requests: int = MAX_REQUESTS,
                max_bytes: int = MAX_BYTES) -> list[list[tuple[str, bytes]]]:
    """Chunks of (key, jsonl line) that each respect both limits, in order."""
    chunks, current, size = [], [], 0
    for key, line in lines:
        if len(line) > max_bytes:
            raise RequestRejected(f"one request is {len(line)} bytes, over the batch file limit")
        if current and (len(current) >= max_requests or size + len(line) > max_bytes):
            chunks.append(current)
            current, size = [], 0
        current.append((key, line))
        size += len(line)
    if current:
        chunks.append(current)
    return chunks


class BatchTransport:
    """`client`: an openai AsyncOpenAI client, or a backend whose `.client` gives the one of the
    running event loop. `budget`: the shared budget whose held reservations the answers settle."""

    def __init__(self, client, cache: RequestCache, prices: PriceTable | None = None, poll_interval_s: float = 30.0,
                 gather_window_s: float = 1.0, max_requests: int = MAX_REQUESTS, max_bytes: int = MAX_BYTES,
                 completion_window: str = "24h", max_resubmits: int = 3, log=print, budget=None,
                 resubmit_backoff_s: float = 60.0, resubmit_backoff_cap_s: float = 3600.0) -> None:
        self._client_source, self.cache, self.budget = client, cache, budget
        self.resubmit_backoff_s, self.resubmit_backoff_cap_s = resubmit_backoff_s, resubmit_backoff_cap_s
        self.prices = prices or PriceTable.default()
        self.poll_interval_s, self.gather_window_s = poll_interval_s, gather_window_s
        self.max_requests, self.max_bytes = max_requests, max_bytes
        self.completion_window, self.max_resubmits = completion_window, max_resubmits
        self.log = log
        self._futures: dict[str, asyncio.Future] = {}
        self._bodies: dict[str, bytes] = {}  # key -> jsonl line, kept for resubmission
        self._models: dict[str, str] = {}
        self._pending: list[str] = []
        self._resubmits: dict[str, int] = {}
        self._later: dict[float, list[str]] = {}  # backoff delay -> keys waiting to be resubmitted
        self._inflight: dict[str, str] = {}  # key -> batch id
        self._wake: asyncio.Event | None = None
        self._tasks: set[asyncio.Task] = set()
        self._flusher: asyncio.Task | None = None
        self.batches_submitted = 0
        self.resumed_batches = 0
        self.lines_submitted = 0  # requests sent in created batches, resubmissions included
        self.files_deleted = 0

    @property
    def client(self):
        return getattr(self._client_source, "client", None) if hasattr(self._client_source, "chat") \
            else self._client_source

    def holds(self, key: str) -> bool:
        """Whether a batch resumed from an earlier run already carries request `key`."""
        self._start()
        return key in self._inflight and key not in self._futures

    # -- public ----------------------------------------------------------------------------

    async def submit(self, key: str, model: str, messages: list[dict], params: dict) -> dict:
        self._start()
        fut = self._futures.get(key)
        if fut is None:
            fut = asyncio.get_running_loop().create_future()
            self._futures[key] = fut
            body = {"model": model, "messages": messages, **params}
            self._bodies[key] = (json.dumps({"custom_id": key, "method": "POST", "url": "/v1/chat/completions",
                                             "body": body}, ensure_ascii=False) + "\n").encode()
            self._models[key] = model
            if key not in self._inflight:  # a resumed batch may already hold it
                self._pending.append(key)
                self._wake.set()
        return await asyncio.shield(fut)

    async def aclose(self) -> None:
        for t in list(self._tasks) + ([self._flusher] if self._flusher else []):
            t.cancel()

    # -- internals -------------------------------------------------------------------------

    def _start(self) -> None:
        if self._flusher is not None:
            return
        self._wake = asyncio.Event()
        open_batches, creating = self.cache.open_batches(), self.cache.creating_batches()
        # the answers of a stopped run's batches are stored at their price: known before anything is read
        self.prices.require({m for _, pairs in open_batches for _, m in pairs}
                            | {m for _, pairs, _ in creating for _, m in pairs})
        for batch_id, pairs in open_batches:  # resume polling after a restart
            self.resumed_batches += 1
            for k, model in pairs:
                self._inflight[k] = batch_id
                self._models.setdefault(k, model)
            self._spawn(self._poll(batch_id, [k for k, _ in pairs]))
        for file_id, pairs, since in creating:  # stopped while creating one
            for k, model in pairs:
                self._inflight[k] = CREATING + file_id
                self._models.setdefault(k, model)
            self._spawn(self._recover(file_id, [tuple(p) for p in pairs], since))
        self._flusher = asyncio.create_task(self._flush_loop())

    def _spawn(self, coro) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _flush_loop(self) -> None:
        while True:
            await self._wake.wait()
            # gather: wait until no new request arrived for a moment (or a file is full)
            while True:
                n = len(self._pending)
                await asyncio.sleep(self.gather_window_s)
                if len(self._pending) == n or len(self._pending) >= self.max_requests:
                    break
            self._wake.clear()
            keys, self._pending = self._pending, []
            for chunk in split_lines([(k, self._bodies[k]) for k in keys], self.max_requests, self.max_bytes):
                try:
                    await self._create(chunk)
                except Exception as exc:  # the upload or create failed: fail these requests loudly
                    for k, _ in chunk:
                        self._fail(k, RequestRejected(f"batch submission failed: {type(exc).__name__}: {exc}"))

    async def _create(self, chunk: list[tuple[str, bytes]]) -> None:
        data = b"".join(line for _, line in chunk)
        f = await self.client.files.create(file=("requests.jsonl", data), purpose="batch")
        keys = [k for k, _ in chunk]
        pairs = [(k, self._models[k]) for k in keys]
        self.cache.begin_batch(f.id, pairs)  # before the create: a crash after it can find the batch
        for k in keys:
            self._inflight[k] = CREATING + f.id
        try:
            batch = await self.client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                                                     completion_window=self.completion_window)
        except Exception as exc:
            status = getattr(exc, "status_code", None)
            if status is not None and 400 <= status < 500 and status not in (408, 409, 429):
                self.cache.drop_batch(CREATING + f.id)  # refused outright: no batch exists
                for k in keys:
                    self._inflight.pop(k, None)
                raise
            # a timeout, a dropped connection, a 5xx: the batch may exist all the same
            self.log(f"creating a batch from {f.id} failed ({type(exc).__name__}); looking for it before resending")
            self._spawn(self._recover(f.id, pairs, None))
            return
        self.cache.add_batch(batch.id, f.id, pairs)  # before polling
        self.batches_submitted += 1
        self.lines_submitted += len(keys)
        for k in keys:
            self._inflight[k] = batch.id
        self.log(f"batch {batch.id}: {len(keys)} requests, {len(data)} bytes submitted")
        self._spawn(self._poll(batch.id, keys))

    async def _recover(self, file_id: str, pairs: list[tuple[str, str]], since: float | None) -> None:
        """A batch was being created from `file_id` when the run stopped (or the create call failed
        without an answer): poll it if the API has it, else send its requests again."""
        keys = [k for k, _ in pairs]
        try:
            found = await self._find_batch(file_id, since)
        except Exception as exc:  # cannot tell: keep the record for the next run, send nothing twice
            for k in keys:
                self._inflight.pop(k, None)
                self._fail(k, RequestRejected(f"could not check whether a batch was created from {file_id}: "
                                              f"{type(exc).__name__}: {exc}"))
            return
        if found is not None:
            self.cache.add_batch(found, file_id, pairs)
            self.resumed_batches += 1
            for k in keys:
                self._inflight[k] = found
            self.log(f"batch {found} (from {file_id}) found: polling it")
            await self._poll(found, keys)
            return
        self.cache.drop_batch(CREATING + file_id)
        for k in keys:
            self._inflight.pop(k, None)
            if k in self._futures:
                self._retry(k, f"no batch was created from {file_id}")

    async def _find_batch(self, file_id: str, since: float | None, limit: int = 2000) -> str | None:
        """The id of the batch created from `file_id`, looking back from the newest batch."""
        seen = 0
        async for b in self.client.batches.list(limit=100):
            if b.input_file_id == file_id:
                return b.id
            seen += 1
            if seen >= limit or (since is not None and b.created_at < since - 3600):
                break
        return None

    async def _poll(self, batch_id: str, keys: list[str]) -> None:
        try:
            await self._collect(batch_id, keys)
        except Exception as exc:  # never leave a turn waiting forever on a dead poller
            for k in keys:
                self._inflight.pop(k, None)
                self._fail(k, RequestRejected(f"polling batch {batch_id} failed: {type(exc).__name__}: {exc}"))

    async def _collect(self, batch_id: str, keys: list[str]) -> None:
        failures = 0
        while True:
            try:
                batch = await self.client.batches.retrieve(batch_id)
                failures = 0
            except Exception:  # a flaky poll is retried; ten in a row is an outage
                failures += 1
                if failures >= 10:
                    raise
                await asyncio.sleep(self.poll_interval_s)
                continue
            if batch.status in TERMINAL:
                break
            await asyncio.sleep(self.poll_interval_s)
        answered: set[str] = set()
        if batch.output_file_id:
            for line in await self._lines(batch.output_file_id):
                key = line.get("custom_id")
                resp = line.get("response") or {}
                if key and resp.get("status_code") == 200:
                    try:
                        body = check_completion(resp.get("body"))
                    except TransientError:
                        continue
                    self._store(key, body)
                    answered.add(key)
        errors: dict[str, str] = {}
        if batch.error_file_id:
            for line in await self._lines(batch.error_file_id):
                err = line.get("error") or ((line.get("response") or {}).get("body") or {}).get("error") or {}
                if line.get("custom_id"):
                    errors[line["custom_id"]] = str(err.get("code") or err.get("message") or "error")
        self.cache.close_batch(batch_id)  # every answer above is committed: its files can go
        await self._delete_files(batch_id, batch.input_file_id, batch.output_file_id, batch.error_file_id)
        missing = [k for k in keys if k not in answered]
        if missing:
            self.log(f"batch {batch_id} {batch.status}: {len(answered)} answered, {len(missing)} to resubmit")
        for k in keys:
            self._inflight.pop(k, None)
            if k in answered:
                fut = self._futures.get(k)
                if fut is not None and not fut.done():
                    fut.set_result(self.cache.get(k)["response"])
            elif k in self._futures:
                self._retry(k, errors.get(k) or f"batch {batch.status}")
            # a key with no future belongs to a resumed batch no turn asked for again: its
            # answered lines are cached, and nothing else is owed

    def _retry(self, key: str, why: str) -> None:
        """Resubmit `key` after a backoff (a failed or expired batch often fails again at once:
        an outage, a quota of enqueued tokens), doubling with each resubmission."""
        n = self._resubmits.get(key, 0)
        if n >= self.max_resubmits:
            self._fail(key, RequestRejected(f"batch request failed {n + 1} times; last: {why}"))
            return
        self._resubmits[key] = n + 1
        delay = min(self.resubmit_backoff_cap_s, self.resubmit_backoff_s * 2 ** n)
        self._later.setdefault(delay, []).append(key)
        if len(self._later[delay]) == 1:
            self._spawn(self._requeue_after(delay))

    async def _requeue_after(self, delay: float) -> None:
        await asyncio.sleep(delay)
        keys = self._later.pop(delay, [])
        self._pending.extend(keys)
        if keys:
            self.log(f"resubmitting {len(keys)} batch requests after {delay:g} s")
            self._wake.set()

    async def _delete_files(self, batch_id: str, *file_ids: str | None) -> None:
        for file_id in file_ids:
            if not file_id:
                continue
            try:
                await self.client.files.delete(file_id)
                self.files_deleted += 1
            except Exception as exc:  # a file left behind costs storage, not answers: say so, go on
                self.log(f"batch {batch_id}: could not delete file {file_id} ({type(exc).__name__}: {exc})")

    def _fail(self, key: str, exc: Exception) -> None:
        fut = self._futures.get(key)
        if fut is not None and not fut.done():
            fut.set_exception(exc)

    def _store(self, key: str, body: dict) -> None:
        tin, tout, cached = usage_tokens(body)
        model = self._models[key]  # the model we asked for (recorded with the batch)
        cost = self.prices.cost(model, tin, tout, batch=True, cached_tokens=cached)
        self.cache.put(key, model, "batch", body, tin, tout, cost)
        if self.budget is not None:  # the reservation made when the request was submitted (this run or a stopped one)
            self.budget.settle_key(key, cost)

    async def _lines(self, file_id: str) -> list[dict]:
        content = await self.client.files.content(file_id)
        text = content.text if hasattr(content, "text") else content.read().decode()
        out = []
        for raw in text.splitlines():
            raw = raw.strip()
            if not raw:
                continue
            try:
                out.append(json.loads(raw))
            except ValueError:
                continue  # a torn line is simply not answered: it is resubmitted
        return out
