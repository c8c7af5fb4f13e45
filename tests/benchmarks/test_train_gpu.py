"""benchmarks/train_gpu.py runs end to end on the CPU at the tiny model's widths: the entry point
through torchrun, the trainer's own metrics, the plain forward+backward baseline and the summary."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_cpu_smoke_run_reports_every_figure(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    env.pop("LLAVACOT_TRAIN_REPORTER", None)
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "train_gpu.py"), "--out", str(tmp_path),
                           "--warmup", "1", "--steps", "2", "--rows", "12", "--answer-median", "60", "--max-side", "400"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    (run,) = summary["runs"]
    assert "error" not in run, run
    assert run["step_s"] > 0 and run["samples_per_s"] > 0 and run["peak_memory_gib"] > 0
    assert 0 < run["useful_token_fraction"] <= 1
    assert run["speed"]["fused_loss"] == "chunked" and run["zero_stage"] == 3
    assert (tmp_path / "run-project" / "profile" / "trace-rank0.json").is_file()  # the profiled steps
    lines = (tmp_path / "run-project" / "metrics.jsonl").read_text().splitlines()
    metrics = [m for m in map(json.loads, lines) if m["event"] == "metrics"]
    assert len(metrics) == 1 + 2 + 2 and all(m["grad_norm"] > 0 for m in metrics)  # ZeRO's norm, read with the rest
    plain = summary["plain"]
    assert plain["step_s"] > 0
    assert plain["flops_formula"] == pytest.approx(plain["flops_counted"], rel=0.05)  # sdpa's math path on CPU
    assert 0 < summary["epoch_useful"]["ungrouped"] <= summary["epoch_useful"]["grouped"] <= 1
    lines = proc.stdout.strip().splitlines()
    assert any(line.startswith("project") for line in lines) and any(line.startswith("plain fwd+bwd") for line in lines)
