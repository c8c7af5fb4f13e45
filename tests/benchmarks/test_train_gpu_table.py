"""train_gpu's final table as a GPU run prints it (goals, device time by kind, the busy estimate
without the profiler) and when parts of the run failed: built from summaries, no GPU needed."""
import importlib.util
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def train_gpu():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location("train_gpu", BENCHMARKS / "train_gpu.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCHMARKS))


PROJECT = {"name": "project", "step_s": 0.5, "samples_per_s": 8.0, "mfu": 0.42, "peak_memory_gib": 81.3,
           "gpu_busy_fraction": 0.8, "useful_token_fraction": 0.97, "profile_by_kind_s": {"matmul": 0.6, "other": 0.1},
           "profile_window_s": 1.25, "profile_device_busy_s": 0.92}
PLAIN = {"step_s": 0.45, "mfu": 0.47, "peak_memory_gib": 60.0, "flops_formula": 99.4e12, "flops_counted": 99.0e12}
EPOCH = {"rows": 384, "mean_tokens": 584.0, "grouped": 0.98, "ungrouped": 0.756}


def test_a_gpu_run_reads_every_goal_and_the_busy_estimate():
    lines = train_gpu().table({"cuda": True, "batch": 4, "plain": PLAIN, "epoch_useful": EPOCH,
                               "runs": [PROJECT, {"name": "zero2", "error": "exit 1", "wall_s": 3.0}]})
    text = "\n".join(lines)
    assert any(line.startswith("project") and "42.0%" in line and "1.11x" in line for line in lines)
    assert "zero2               failed: exit 1 (see run-zero2.log)" in lines
    assert ("goals: MFU >= 40 %: met; step <= 1.15x plain fwd+bwd: met; GPU busy >= 90 %: NOT met; "
            "useful tokens >= 95 %: met") in lines
    assert "device time by kind over 1.250s of profiled steps: matmul 0.600s, other 0.100s" in lines
    assert "device busy 0.460s per profiled step = 92.0% of the unprofiled step (0.500s)" in text
    assert "trainer's formula 99.40 TFLOP, FlopCounterMode 99.00 TFLOP (ratio 1.004)" in text


def test_a_failed_baseline_or_profile_still_gives_the_table():
    lines = train_gpu().table({"cuda": True, "batch": 4, "plain": None, "plain_error": "OutOfMemoryError: CUDA",
                               "epoch_useful": EPOCH,
                               "runs": [{**PROJECT, "mfu": None, "gpu_busy_fraction": None, "profile_by_kind_s": None,
                                         "profile_window_s": None, "profile_device_busy_s": None,
                                         "profile_error": "trace: RuntimeError: CUPTI"}]})
    assert "plain fwd+bwd       failed: OutOfMemoryError: CUDA" in lines
    assert any(line.startswith("project") and line.rstrip().endswith("-x") for line in lines)
    assert ("goals: MFU >= 40 %: not measured; step <= 1.15x plain fwd+bwd: not measured; "
            "GPU busy >= 90 %: not measured; useful tokens >= 95 %: met") in lines
    assert "profiled steps: failed (trace: RuntimeError: CUPTI)" in lines
    assert not any(line.startswith("device") for line in lines)
