"""The six benchmarks LLaVA-CoT reports, read from VLMEvalKit TSV files and scored by their rules.

One module per benchmark, each registering one `Benchmark`; shared pieces: `tsv` (the reader),
`extract` (what part of a prediction is scored, option letters, yes/no, numbers), `cache`
(predictions and judge verdicts per item; rank shards and their merge), `run` (predict, score).

    from pipeline.evaluate import get_benchmark, run
    bench = get_benchmark("MMStar")
    items = bench.load("MMStar.tsv")            # Items: .prompt, .image(), .options, .answer, ...
    score = run.evaluate("MMStar", "MMStar.tsv", predict, out_dir, strategy="direct", model=fp)
    score.value, score.breakdown                # 0-100, and per category

`predict(item) -> str` (or a dict with "prediction" and any extra fields to store).
"""
from __future__ import annotations

import importlib

BENCHMARKS = ("MMStar", "MMBench_DEV_EN", "MMVet", "MathVista_MINI", "AI2D_TEST", "HallusionBench")
_MODULES = {
    "MMStar": "mmstar",
    "MMBench_DEV_EN": "mmbench",
    "MMVet": "mmvet",
    "MathVista_MINI": "mathvista",
    "AI2D_TEST": "ai2d",
    "HallusionBench": "hallusionbench",
}

_REGISTRY: dict = {}


def register(cls):
    if cls.name in _REGISTRY:
        raise ValueError(f"benchmark {cls.name!r} registered twice")
    _REGISTRY[cls.name] = cls()
    return cls


def get_benchmark(name: str):
    if name not in _REGISTRY:
        if name not in _MODULES:
            raise KeyError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")
        importlib.import_module(f"pipeline.evaluate.{_MODULES[name]}")
    return _REGISTRY[name]


def all_benchmarks() -> dict:
    return {name: get_benchmark(name) for name in BENCHMARKS}


__all__ = ["BENCHMARKS", "register", "get_benchmark", "all_benchmarks"]
