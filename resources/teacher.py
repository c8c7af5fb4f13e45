"""The teacher: which backend, which model, limits and money. The API key comes from the
environment (dagster.EnvVar) and is handed only to the openai client: never logged, never in
metadata, files or error messages."""
from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
from pydantic import Field

from pipeline.annotate.annotator import Annotator, TeacherSettings
from pipeline.annotate.backends import OFFLINE_MODEL, OfflineBackend, OpenAIBackend
from pipeline.annotate.cache import RequestCache
from pipeline.annotate.limits import SharedRateLimiter
from pipeline.annotate.pricing import PriceTable


class Teacher(dg.ConfigurableResource):
    backend: str = Field(default="auto", description="auto (openai when an API key is set, else offline) | openai | offline")
    api_key: str | None = Field(default=None, description="Set with EnvVar('OPENAI_API_KEY'); never logged.")
    base_url: str | None = Field(default=None, description="Any OpenAI-compatible endpoint (Azure, vLLM, SGLang).")
    model: str = "gpt-4o"
    judge_model: str | None = Field(default=None, description="Judge model; default: the generation model.")
    mode: str = Field(default="online", description="online | batch (the Batch API: half price, slower)")
    max_attempts: int = 3
    temperature: float = 0.7
    max_tokens: int = 2048
    detail: str = "auto"
    max_concurrency: int = 32
    requests_per_minute: int = 500
    tokens_per_minute: int = 800_000
    timeout_s: float = 120.0
    max_call_retries: int = 8
    max_spend_usd: float | None = Field(default=None, description="Hard cap per run; remaining turns stay pending.")
    prices: dict[str, list[float]] = Field(default_factory=dict, description="model -> [USD/1M input, USD/1M output]")
    cache_dir: str = Field(default="", description="Local folder of the request cache and rate budget (SQLite).")
    batch_poll_interval_s: float = 30.0

    def effective_backend(self) -> str:
        if self.backend == "auto":
            return "openai" if self.api_key else "offline"
        if self.backend not in ("openai", "offline"):
            raise ValueError(f"teacher backend must be auto, openai or offline, not {self.backend!r}")
        return self.backend

    def model_label(self) -> str:
        return OFFLINE_MODEL if self.effective_backend() == "offline" else self.model

    def cache_folder(self, data_root_local: str | None) -> Path:
        if self.cache_dir:
            return Path(self.cache_dir)
        if data_root_local:
            return Path(data_root_local) / "teacher"
        return Path.home() / ".cache" / "llavacot"

    def settings(self) -> TeacherSettings:
        return TeacherSettings(
            model=self.model, judge_model=self.judge_model, max_attempts=self.max_attempts,
            temperature=self.temperature, max_tokens=self.max_tokens, detail=self.detail,
            max_concurrency=self.max_concurrency, max_call_retries=self.max_call_retries,
            max_spend_usd=self.max_spend_usd,
        )

    def build(self, folder: Path, load_image, on_progress=None, run_id=None, log=print, prepare_image=None):
        """(annotator, cleanup) for one run."""
        if self.mode not in ("online", "batch"):
            raise ValueError(f"teacher mode must be online or batch, not {self.mode!r}")
        cache = RequestCache(folder / "requests.sqlite")
        prices = PriceTable.default({k: tuple(v) for k, v in self.prices.items()})
        if self.effective_backend() == "offline":
            backend, limiter, transport = OfflineBackend(), None, None
        else:
            if not self.api_key:
                raise ValueError("teacher backend 'openai' needs an API key: set OPENAI_API_KEY")
            backend = OpenAIBackend(self.api_key, self.base_url, self.timeout_s)
            limiter = SharedRateLimiter(folder / "rate_budget.sqlite", self.requests_per_minute,
                                        self.tokens_per_minute, name=self.base_url or "openai")
            transport = None
            if self.mode == "batch":
                from pipeline.annotate.batch import BatchTransport

                transport = BatchTransport(backend.client, cache, prices, self.batch_poll_interval_s, log=log)
            prices.cost(self.model, 0, 0)  # an unknown price fails now, before anything is sent
        annotator = Annotator(backend, cache, self.settings(), load_image=load_image, limiter=limiter,
                              prices=prices, on_progress=on_progress, run_id=run_id, transport=transport,
                              prepare_image=prepare_image)

        def cleanup():
            cache.close()
            if limiter is not None:
                limiter.close()

        return annotator, cleanup


def teacher_from_env(**overrides) -> Teacher:
    """The teacher as the environment configures it: the real client when OPENAI_API_KEY is set."""
    kwargs: dict = {}
    if os.environ.get("OPENAI_API_KEY"):
        kwargs["api_key"] = dg.EnvVar("OPENAI_API_KEY")
    if os.environ.get("OPENAI_BASE_URL"):
        kwargs["base_url"] = dg.EnvVar("OPENAI_BASE_URL")
    if os.environ.get("LLAVACOT_TEACHER_MODEL"):
        kwargs["model"] = os.environ["LLAVACOT_TEACHER_MODEL"]
    kwargs.update(overrides)
    return Teacher(**kwargs)
