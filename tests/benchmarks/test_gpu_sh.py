"""benchmarks/gpu.sh, the one command for a lent GPU machine: without a CUDA device it runs
nothing (it would only spend the loan's minutes on a CPU run) and says why."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
torch = pytest.importorskip("torch")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the script would run")
def test_without_a_gpu_nothing_runs_and_the_environment_says_why(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "WORK": str(tmp_path / "work")}
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu.sh"), str(tmp_path / "out")], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "nothing run" in proc.stdout
    report = (tmp_path / "out" / "env.txt").read_text()
    assert f"torch {torch.__version__}" in report and "no CUDA device" in report
    assert not (tmp_path / "out" / "train.log").exists() and not (tmp_path / "work" / "train").exists()
