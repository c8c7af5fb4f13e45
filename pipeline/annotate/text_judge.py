"""The teacher as a plain `prompt -> text` callable, for graders and answer extractors (MM-Vet,
MathVista): the same cache, shared rate budget, retries and spend cap as annotation.

The openai client is asynchronous; the callable runs its requests on one private event loop in a
background thread, so it can be called from ordinary (and several) threads.
"""
from __future__ import annotations

import asyncio
import threading
from typing import Callable


class TextJudge:
    def __init__(self, annotator, max_tokens: int = 256) -> None:
        self.annotator = annotator
        self.max_tokens = max_tokens
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="text-judge", daemon=True)
        self._thread.start()
        self.name = annotator.s.judge

    def __call__(self, prompt: str) -> str:
        async def ask() -> str:
            reply = await self.annotator.call(
                self.annotator.s.judge, [{"role": "user", "content": prompt}],
                {"temperature": 0, "max_tokens": self.max_tokens}, None,
            )
            message = reply["response"]["choices"][0]["message"]
            return message.get("content") or message.get("refusal") or ""

        return asyncio.run_coroutine_threadsafe(ask(), self.loop).result()

    def close(self) -> None:
        if self.loop.is_running():  # the HTTP session belongs to this loop: close it there
            asyncio.run_coroutine_threadsafe(self.annotator.aclose(), self.loop).result(timeout=10)
            self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)


def text_judge(annotator, max_tokens: int = 256) -> Callable[[str], str] | None:
    """None for the offline template teacher: it cannot grade free text (callers fall back to rules
    and say so)."""
    if annotator.backend.mode == "offline":
        return None
    return TextJudge(annotator, max_tokens)
