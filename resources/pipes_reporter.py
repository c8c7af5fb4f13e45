"""The training reporter that streams into Dagster through Pipes.

`python -m pipeline.train` calls a reporter on rank 0 only: `open(config)`, `log_metrics(step,
metrics)`, `log_checkpoint(step, path)`, `close(final)`. The launchers (resources/launcher.py) set
LLAVACOT_TRAIN_REPORTER=resources.pipes_reporter:reporter next to the Pipes bootstrap variables;
`reporter()` returns `PipesReporter` only when those variables are present, and the entry point's
default (`JsonlReporter`) otherwise, so a copied command line still runs standalone. It sends:

- every metrics call as a Pipes log line (live in the run's event log) and as a custom message
  (the asset turns them into the loss curve and throughput figures);
- every checkpoint as a log line and a custom message;
- at the end, the final metrics as the asset's materialisation, with a content hash of the exported
  weights as its data version (computed here, next to the files, so it works where the Dagster
  process cannot see the training host's disk).

Every event is also appended to `<output_dir>/metrics.jsonl`, as the default reporter does, so a
run leaves the same record however it was launched. Only `dagster_pipes` is needed here (the small
protocol package, not Dagster itself).
"""
from __future__ import annotations

import atexit
import hashlib
import math
import os
from pathlib import Path

from dagster_pipes import DAGSTER_PIPES_CONTEXT_ENV_VAR, DAGSTER_PIPES_MESSAGES_ENV_VAR, open_dagster_pipes

REPORTER_SPEC = "resources.pipes_reporter:reporter"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def launched_by_pipes() -> bool:
    return bool(os.environ.get(DAGSTER_PIPES_CONTEXT_ENV_VAR) and os.environ.get(DAGSTER_PIPES_MESSAGES_ENV_VAR))


def weights_digest(folder: str | os.PathLike) -> str | None:
    """sha256 (32 hex) over the weight files of an exported folder, by sorted relative path;
    None when the folder holds no weights."""
    root = Path(folder)
    if not root.is_dir():
        return None
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))
    if not files:
        return None
    h = hashlib.sha256()
    for p in files:
        h.update(p.relative_to(root).as_posix().encode() + b"\0")
        with open(p, "rb") as f:
            while chunk := f.read(8 << 20):
                h.update(chunk)
        h.update(b"\0")
    return h.hexdigest()[:32]


def _clean(value):
    """JSON-safe metric values: NaN and infinities become None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    try:  # numpy / torch scalars
        return _clean(value.item())
    except (AttributeError, ValueError):
        return str(value)


def _fmt(metrics: dict) -> str:
    parts = []
    for key, value in metrics.items():
        if isinstance(value, float):
            parts.append(f"{key} {value:.4g}")
        elif isinstance(value, (int, str)):
            parts.append(f"{key} {value}")
    return ", ".join(parts)


class PipesReporter:
    """Rank 0's reporter when Dagster launched the run. Outside Pipes it refuses to open."""

    def __init__(self) -> None:
        self._pipes = None
        self._context = None
        self._closed = False
        from pipeline.train.report import JsonlReporter

        self._file = JsonlReporter(stdout=False)  # the record on disk; the events themselves go over Pipes

    def open(self, config: dict) -> None:
        if not launched_by_pipes():
            raise RuntimeError("PipesReporter needs the Pipes bootstrap variables; it is set by the "
                               "Dagster launchers only (unset LLAVACOT_TRAIN_REPORTER to run standalone)")
        self._context = open_dagster_pipes()
        self._pipes = self._context.__enter__()
        atexit.register(self._close_context)  # a crash still ends the Pipes session cleanly
        self._file.open(config)
        config = _clean(dict(config))
        self._pipes.report_custom_message({"event": "open", "config": config})
        self._pipes.log.info("training started: " + _fmt({k: v for k, v in config.items() if not isinstance(v, (dict, list))}))

    def log_metrics(self, step: int, metrics: dict) -> None:
        self._file.log_metrics(step, metrics)
        metrics = _clean(dict(metrics))
        self._pipes.report_custom_message({"event": "metrics", "step": int(step), "metrics": metrics})
        self._pipes.log.info(f"step {step}: {_fmt(metrics)}")

    def log_checkpoint(self, step: int, path: str) -> None:
        self._file.log_checkpoint(step, path)
        self._pipes.report_custom_message({"event": "checkpoint", "step": int(step), "path": str(path)})
        self._pipes.log.info(f"step {step}: checkpoint saved to {path}")

    def close(self, final: dict) -> None:
        if self._pipes is None or self._closed:
            return
        self._file.close(dict(final or {}))
        final = _clean(dict(final or {}))
        export = final.get("export")  # the Hugging Face folder (absent when run with --no-export)
        version = weights_digest(export) if isinstance(export, str) else None
        self._pipes.report_custom_message({"event": "final", "final": final, "weights_sha256": version})
        metadata = {f"final/{k}": v for k, v in final.items() if isinstance(v, (int, float, str, bool))}
        if version:
            metadata["weights_sha256"] = version
        self._pipes.report_asset_materialization(metadata=metadata, data_version=version)
        self._pipes.log.info("training finished: " + _fmt(final))
        self._close_context()

    def _close_context(self) -> None:
        if self._context is not None and not self._closed:
            self._closed = True
            self._context.__exit__(None, None, None)


def reporter():
    """The reporter the launchers name: Pipes inside a Dagster launch, the default JSON lines otherwise."""
    if launched_by_pipes():
        return PipesReporter()
    from pipeline.train.report import JsonlReporter

    return JsonlReporter()
