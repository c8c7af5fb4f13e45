"""The training loop's metrics and its profiled window, on a stand-in engine (no DeepSpeed): every
step gets its metrics line (read back a step late), and a profile that fails is reported while the
steps' own figures are kept."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from pipeline.train.loop import TrainLoop
from pipeline.train.plan import mllama_config


class Engine:
    """What the loop asks of a DeepSpeed engine."""

    def __init__(self) -> None:
        self.weight = torch.nn.Parameter(torch.ones(()))
        self.steps = 0

    def train(self) -> None:
        pass

    def __call__(self, **batch):
        return SimpleNamespace(loss=self.weight * batch["attention_mask"].float().mean())

    def backward(self, loss) -> None:
        loss.backward()

    def step(self) -> None:
        self.steps += 1

    def get_global_grad_norm(self):
        return torch.tensor(2.5)    # DeepSpeed's ZeRO-3 norm is a tensor


class Reporter:
    def __init__(self) -> None:
        self.metrics: dict[int, dict] = {}

    def log_metrics(self, step: int, metrics: dict) -> None:
        self.metrics[step] = metrics


def run_loop(tmp_path: Path, steps: int = 4, profile=(2, 3)):
    args = SimpleNamespace(grad_accum=1, log_every=1, save_every=0, no_final_checkpoint=True, lr=1e-3,
                           freeze_vision=False, freeze_projector=False, profile_range=profile)
    reporter, engine = Reporter(), Engine()
    loop = TrainLoop(args, engine, None, reporter, SimpleNamespace(batches_per_epoch=10), mllama_config(text_layers=2),
                     torch.float32, torch.device("cpu"), None, 1, 0, tmp_path / "checkpoints", 0, 0, steps, steps,
                     False, tmp_path)
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]])
    batch = {"input_ids": torch.ones(2, 5, dtype=torch.long), "attention_mask": mask,
             "pixel_values": torch.zeros(2, 1, 4, 3, 8, 8)}
    final = loop.run([dict(batch) for _ in range(steps)])
    return final, reporter.metrics, engine


def test_every_step_gets_its_metrics_line(tmp_path):
    final, metrics, engine = run_loop(tmp_path)
    assert engine.steps == 4 and sorted(metrics) == [1, 2, 3, 4]
    for m in metrics.values():
        assert m["grad_norm"] == pytest.approx(2.5) and m["loss"] == pytest.approx(0.9)
        assert m["useful_token_fraction"] == pytest.approx(0.9) and m["step_time_s"] > 0
    assert final["profile_steps"] == "2:3" and final["profile_device_busy_fraction"] is None   # CPU: no device
    assert Path(final["profile_trace"]).is_file()
    assert sum("profile_steps" in m for m in metrics.values()) == 1


def test_a_failing_profile_is_reported_and_training_goes_on(tmp_path, monkeypatch):
    import pipeline.train.profiling as profiling

    def broken(trace):
        raise ValueError("trace unreadable")

    monkeypatch.setattr(profiling, "device_busy", broken)
    final, metrics, engine = run_loop(tmp_path)
    assert engine.steps == 4 and sorted(metrics) == [1, 2, 3, 4]
    assert final["profile_error"] == "trace: ValueError: trace unreadable"
    assert [m["profile_error"] for m in metrics.values() if "profile_error" in m] == [final["profile_error"]]
