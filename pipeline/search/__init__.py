"""Decoding strategies for four-stage answers: direct, best-of-N, sentence-level beam, stage-level beam
and retracing search, over one generation core (`core.py`) and one judge (`judge.py`).

For a caller holding a model path (the orchestration layer, the CLI, an evaluation):

    from pipeline.search import SearchConfig, load_core, run
    core = load_core("/path/to/hf_model")                 # once per process (efficient mode)
    result = run("stage_beam", core, "img.png", "How many cubes?", SearchConfig(beam=4))
    result.text, result.stages["conclusion"], result.stats, result.steps

or in one call, with cores cached per path: `search(model_path, image, question, "stage_beam", beam=4)`.
A separate judge model: `run(..., judge=load_core(judge_path))`.
"""
from __future__ import annotations

import warnings
from functools import lru_cache

from .base import DEFAULT_BUDGETS, Candidate, SearchConfig, SearchResult, Step, Verdict
from .judge import Judge
from .registry import STRATEGIES, get, register, run, strategies


def quiet_warnings() -> None:
    """Silence, once per process, warnings from the libraries that a user of the search cannot act
    on (transformers' deprecation notices about its own internals, its weight-loading progress bar)."""
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"transformers(\.|$)")
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"transformers(\.|$)")
    warnings.filterwarnings("ignore", message=r".*past_key_values.*deprecated.*")
    # raised inside transformers' own modules but attributed (by stack level) to torch's caller
    warnings.filterwarnings("ignore", category=FutureWarning, message=r".*deprecated and will be removed in (version )?v?5\.")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:
        pass


def load_core(model_path: str, mode: str = "efficient", **kwargs):
    """A generation core for the Hugging Face model folder (or hub id) at `model_path`.
    kwargs: device ("auto": cuda when present), dtype ("auto": bfloat16 on CUDA), temperature (0.6),
    top_p (0.9), top_k (0), greedy (False), seed (0)."""
    from .core import make_core

    quiet_warnings()
    return make_core(str(model_path), mode=mode, **kwargs)


@lru_cache(maxsize=4)
def _cached_core(model_path: str, device: str, dtype: str | None):
    return load_core(model_path, device=device, dtype=dtype)


def search(model_path: str, image, question: str, strategy: str = "stage_beam", *,
           judge_model: str | None = None, device: str = "auto", dtype: str | None = "auto",
           **config) -> SearchResult:
    """Load (once per path) and run: `config` holds SearchConfig fields (beam, budgets, greedy...)."""
    core = _cached_core(str(model_path), device, dtype)
    judge = _cached_core(str(judge_model), device, dtype) if judge_model else None
    return run(strategy, core, image, question, SearchConfig(**config), judge=judge)


__all__ = ["Candidate", "DEFAULT_BUDGETS", "Judge", "STRATEGIES", "SearchConfig", "SearchResult", "Step",
           "Verdict", "get", "load_core", "quiet_warnings", "register", "run", "search", "strategies"]
