"""The GPU search benchmark's CPU smoke run: the script builds its model, runs every cell and
prints every goal line (its figures mean nothing on a CPU; the GPU run is in benchmarks/README.md)."""
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def test_cpu_smoke_run_completes_and_reports_every_goal():
    out = subprocess.run([sys.executable, "benchmarks/search_gpu.py", "--device", "cpu", "--tiny", "--repeat", "1"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600,
                         env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout
    for cell in ("direct", "stage_beam N=4", "stage_beam N=8", "stage_beam N=4 label", "naive stage_beam N=4"):
        line = next(l for l in text.splitlines() if l.startswith(cell + " "))
        assert "(failed)" not in line, line
    for goal in ("N=4 time / direct time", "naive N=4 time / N=4 time", "N=8 time / N=4 time",
                 "GPU busy during stage_beam N=4"):
        assert goal in text
    assert "failed" not in text.split("GPU busy")[1], text
