"""Where training metrics go: a reporter, plugged in as "module:attr".

The training loop calls a reporter on rank 0 only (every other rank gets `NullReporter`):

    open(config: dict)                     once, before the first step: the resolved run
                                           configuration (arguments, world size, total steps, ...)
    log_metrics(step: int, metrics: dict)  after an optimizer step: loss, lr, tokens_per_s,
                                           samples_per_s, epoch (fractional), and a few more
    log_checkpoint(step: int, path: str)   after a checkpoint is complete on disk
    close(final: dict)                     once at the end: final loss, steps, throughput,
                                           checkpoint and export paths, wall time

`--reporter module:attr` (or the environment variable LLAVACOT_TRAIN_REPORTER) names the reporter:
`attr` is a class or a factory called without arguments, or an object that already has these
methods. The default, `JsonlReporter`, prints each event as a JSON line on stdout and appends it to
`<output_dir>/metrics.jsonl`. An orchestrator's reporter (for instance one that streams the events
to the process that launched training) lives outside this package and is named the same way.
"""
from __future__ import annotations

import importlib
import json
import math
import os
import sys
import time
from typing import Protocol, runtime_checkable

ENV_VAR = "LLAVACOT_TRAIN_REPORTER"
DEFAULT = "pipeline.train.report:JsonlReporter"
METRICS_FILE = "metrics.jsonl"


@runtime_checkable
class Reporter(Protocol):
    def open(self, config: dict) -> None: ...

    def log_metrics(self, step: int, metrics: dict) -> None: ...

    def log_checkpoint(self, step: int, path: str) -> None: ...

    def close(self, final: dict) -> None: ...


def _jsonable(value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


class JsonlReporter:
    """One JSON object a line, `{"event": "open" | "metrics" | "checkpoint" | "close", "time": ..., ...}`,
    on stdout and appended to `<output_dir>/metrics.jsonl` (a resumed run appends to the same file).
    `output_dir` comes from the config given to `open` unless set here."""

    def __init__(self, output_dir: str | None = None, stdout: bool = True) -> None:
        self.output_dir = output_dir
        self.stdout = stdout
        self._file = None

    def _emit(self, event: str, **fields) -> None:
        record = _jsonable({"event": event, "time": round(time.time(), 3), **fields})
        line = json.dumps(record, sort_keys=False)
        if self.stdout:
            print(line, file=sys.stdout, flush=True)
        if self._file is not None:
            self._file.write(line + "\n")
            self._file.flush()

    def open(self, config: dict) -> None:
        out = self.output_dir or config.get("output_dir")
        if out:
            os.makedirs(out, exist_ok=True)
            self._file = open(os.path.join(out, METRICS_FILE), "a", encoding="utf-8")
        self._emit("open", config=config)

    def log_metrics(self, step: int, metrics: dict) -> None:
        self._emit("metrics", step=step, **metrics)

    def log_checkpoint(self, step: int, path: str) -> None:
        self._emit("checkpoint", step=step, path=path)

    def close(self, final: dict) -> None:
        self._emit("close", **final)
        if self._file is not None:
            self._file.close()
            self._file = None


class NullReporter:
    """What ranks other than 0 get: every call does nothing."""

    def open(self, config: dict) -> None:
        pass

    def log_metrics(self, step: int, metrics: dict) -> None:
        pass

    def log_checkpoint(self, step: int, path: str) -> None:
        pass

    def close(self, final: dict) -> None:
        pass


def load_reporter(spec: str | None = None) -> Reporter:
    """The reporter named by `spec` ("module:attr"), else by $LLAVACOT_TRAIN_REPORTER, else the
    JSON-lines default."""
    spec = spec or os.environ.get(ENV_VAR) or DEFAULT
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"reporter {spec!r}: expected 'module:attr'")
    obj = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    reporter = obj if all(hasattr(obj, m) for m in ("open", "log_metrics", "log_checkpoint", "close")) \
        and not isinstance(obj, type) else obj()
    missing = [m for m in ("open", "log_metrics", "log_checkpoint", "close") if not callable(getattr(reporter, m, None))]
    if missing:
        raise TypeError(f"reporter {spec!r} lacks {', '.join(missing)}")
    return reporter


def read_metrics(output_dir: str, event: str = "metrics") -> list[dict]:
    """The events of one kind from `<output_dir>/metrics.jsonl` (for tests, plots and the asset)."""
    path = os.path.join(output_dir, METRICS_FILE)
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                rec = json.loads(line)
                if rec.get("event") == event:
                    out.append(rec)
    return out
