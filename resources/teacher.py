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
from pipeline.annotate.budget import SharedBudget
from pipeline.annotate.cache import RequestCache
from pipeline.annotate.pricing import BATCH_DISCOUNT, ENV_PRICE_IN, ENV_PRICES, PriceTable, prices_from_env
from pipeline.annotate.workers import default_processes

MODES = ("auto", "online", "batch")


class Teacher(dg.ConfigurableResource):
    backend: str = Field(default="auto", description="auto (openai when an API key is set, else offline) | openai | offline")
    api_key: str | None = Field(default=None, description="Set with EnvVar('OPENAI_API_KEY'); never logged.")
    base_url: str | None = Field(default=None, description="Any OpenAI-compatible endpoint (Azure, vLLM, SGLang).")
    model: str = "gpt-4o"
    judge_model: str | None = Field(default=None, description="Judge model; default: the generation model.")
    mode: str = Field(default="auto", description="auto (the Batch API for a partition of at least "
                      "`batch_min_turns` turns to send on api.openai.com, else online) | online | batch "
                      "(the Batch API: half price, results within 24 h)")
    batch_min_turns: int = Field(default=2000, description="In mode auto: the turns to send from which a partition "
                                 "goes through the Batch API.")
    max_attempts: int = 3
    temperature: float = 0.7
    max_tokens: int = 2048
    max_tokens_cap: int = Field(default=8192, description="A truncated answer is asked again with twice the output "
                                "budget, up to this.")
    detail: str = Field(default="fit", description="Image detail: fit (low for images within 512x512, else auto) | "
                        "auto | low | high")
    max_concurrency: int = 32
    client_processes: int = Field(default=0, description="Online: processes sharing the cache and the budget. One "
                                  "process keeps up with about a thousand requests a second (~0.7 ms of CPU each); "
                                  "0: one more for every 512 requests in flight, at most one per CPU.")
    requests_per_minute: int = 500
    tokens_per_minute: int = 800_000
    timeout_s: float = 120.0
    http_client: str = Field(default="openai", description="openai (the official client's post: ~1 ms of CPU a "
                             "request; Azure and every OpenAI-compatible endpoint) | direct (one aiohttp session: "
                             "~0.3 ms; for a self-hosted endpoint at hundreds of requests in flight)")
    max_call_retries: int = 8
    max_spend_usd: float | None = Field(default=None, description="Spending cap in USD across every run, partition "
                                        "and process sharing the budget file (`budget_name`): settled costs plus "
                                        "requests in flight or lost to a stopped run. Turns past it stay pending.")
    budget_name: str = Field(default="default", description="The spend ledger's budget the cap applies to.")
    budget_url: str | None = Field(default=None, description="A PostgreSQL URL for the shared budget (rate limits "
                                   "and spend ledger) of several hosts; set with "
                                   "EnvVar('LLAVACOT_TEACHER_BUDGET_URL'). "
                                   "Default: a SQLite file beside the request cache (one host).")
    prices: dict[str, list[float | None]] = Field(
        default_factory=dict, description="model -> [USD/1M input, USD/1M output(, USD/1M cached input)]; "
        f"also from the environment ({ENV_PRICE_IN}/..._OUT, {ENV_PRICES}); the built-in table last.")
    batch_discount: float = BATCH_DISCOUNT
    prompt_cache_key: bool | None = Field(default=None, description="Send OpenAI's prompt_cache_key (requests about "
                                          "one image share a prompt cache); None: only on api.openai.com.")
    cache_dir: str = Field(default="", description="Folder of the request cache and (without budget_url) the "
                           "shared budget, SQLite files for the processes of one host.")
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
            temperature=self.temperature, max_tokens=self.max_tokens, max_tokens_cap=self.max_tokens_cap,
            detail=self.detail, max_concurrency=self.max_concurrency, max_call_retries=self.max_call_retries,
            prompt_cache_key=self.base_url is None if self.prompt_cache_key is None else self.prompt_cache_key,
            client_processes=self.client_processes or default_processes(self.max_concurrency),
        )

    def price_table(self, environ=os.environ) -> PriceTable:
        """Configured prices over the environment's over the built-in table."""
        return PriceTable.default({**prices_from_env(self.model, environ), **self.prices}, self.batch_discount)

    def build(self, folder: Path, load_image, on_progress=None, run_id=None, log=print, prepare_image=None,
              open_image=None):
        """(annotator, cleanup) for one run. Raises UnknownPrice (before anything is sent) when a
        model it would call has no price."""
        if self.mode not in MODES:
            raise ValueError(f"teacher mode must be one of {MODES}, not {self.mode!r}")
        prices = self.price_table()
        offline = self.effective_backend() == "offline"
        if not offline:
            prices.require([self.model, self.judge_model or self.model])  # nothing opened, nothing sent yet
            if not self.api_key:
                raise ValueError("teacher backend 'openai' needs an API key: set OPENAI_API_KEY")
        cache = RequestCache(folder / "requests.sqlite")
        budget = None
        if offline:
            backend = OfflineBackend()
        else:
            backend = OpenAIBackend(self.api_key, self.base_url, self.timeout_s,
                                    max_connections=self.max_concurrency + 16, http=self.http_client)
            budget = SharedBudget(self.budget_url or folder / "rate_budget.sqlite", self.requests_per_minute,
                                  self.tokens_per_minute,
                                  name=self.base_url or "openai", cap_usd=self.max_spend_usd, budget=self.budget_name)
        annotator = Annotator(backend, cache, self.settings(), load_image=load_image, budget=budget, prices=prices,
                              on_progress=on_progress, run_id=run_id, prepare_image=prepare_image,
                              open_image=open_image)
        if not offline and self.mode != "online":
            from pipeline.annotate.batch import BatchTransport

            def batch_transport():
                return BatchTransport(backend, cache, prices, self.batch_poll_interval_s, log=log, budget=budget)

            if self.mode == "batch":
                annotator.transport = batch_transport()
            elif self.base_url is None:  # auto: other endpoints (vLLM, SGLang) have no Batch API
                annotator.batch_policy = (self.batch_min_turns, batch_transport)

        def cleanup():
            cache.close()
            if budget is not None:
                budget.close()

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
    if os.environ.get("LLAVACOT_JUDGE_MODEL"):
        kwargs["judge_model"] = os.environ["LLAVACOT_JUDGE_MODEL"]
    if os.environ.get("LLAVACOT_TEACHER_BUDGET_URL"):  # may hold a password: an EnvVar, never in run config
        kwargs["budget_url"] = dg.EnvVar("LLAVACOT_TEACHER_BUDGET_URL")
    kwargs.update(overrides)
    return Teacher(**kwargs)
