"""The source registry: one module per dataset, each registering one `Reader`.

Adding the eleventh source is one new file here plus its name in `pipeline.SOURCES`.
"""
from __future__ import annotations

import importlib

from pipeline import SOURCES
from pipeline.sources.base import Reader, Sample, SourceLayoutError

_REGISTRY: dict[str, Reader] = {}


def register(cls: type[Reader]) -> type[Reader]:
    if cls.name in _REGISTRY:
        raise ValueError(f"source {cls.name!r} registered twice")
    _REGISTRY[cls.name] = cls()
    return cls


def get_reader(name: str) -> Reader:
    if name not in _REGISTRY:
        try:
            importlib.import_module(f"pipeline.sources.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"pipeline.sources.{name}":
                raise  # the reader exists but one of its imports is missing: say that, not "unknown"
            raise KeyError(f"unknown source {name!r}; known: {', '.join(SOURCES)}") from exc
    return _REGISTRY[name]


def all_readers() -> dict[str, Reader]:
    return {name: get_reader(name) for name in SOURCES}


__all__ = ["Reader", "Sample", "SourceLayoutError", "register", "get_reader", "all_readers"]
