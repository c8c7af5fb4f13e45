"""Real DeepSpeed on this CPU: two ranks under torchrun (DS_ACCELERATOR=cpu, gloo), ZeRO-3, the tiny
Mllama on synthetic shards whose two ranks get different image/text-only mixes.

One straight 6-step run is shared by three tests: the loss falls (and nothing hangs), the run
resumed from a 3-step run matches it exactly at every step, and its export loads and generates.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.train.data import ResumableBatchSampler, ShardDataset
from pipeline.train.report import read_metrics
from tests.pipeline.train.synthetic import LAYOUT

REPO = Path(__file__).resolve().parents[3]
TIMEOUT = 240  # seconds per run: a rank waiting on a collective the other never joins fails here
SEED = 4  # with this seed the ranks' micro-batches differ in kind (checked below)
GROUP = 2  # length grouping in windows of 2 micro-batches: the order the resumed run must continue
COMMON = ["--max-steps", "6", "--per-device-batch-size", "2", "--grad-accum", "2", "--lr", "3e-3",
          "--warmup-steps", "1", "--seed", str(SEED), "--num-workers", "0", "--save-every", "3",
          "--zero-stage", "3", "--group-by-length", str(GROUP)]

pytestmark = pytest.mark.slow


def torchrun(tiny_model: str, shards: str, out: Path, *extra: str, nproc: int = 2) -> subprocess.CompletedProcess:
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("LLAVACOT_TRAIN_REPORTER", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
           "-m", "pipeline.train", "--data", shards, "--model", tiny_model, "--output-dir", str(out), *COMMON, *extra]
    try:
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"training did not finish in {TIMEOUT}s (a hang?):\n{(exc.stderr or b'')[-3000:]}")
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc


@pytest.fixture(scope="module")
def straight(tiny_model, shards, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("straight")
    torchrun(tiny_model, shards, out)
    return out


def _samplers(shards, processor, group: int) -> list[ResumableBatchSampler]:
    ds = ShardDataset(shards)
    lengths = ds.row_lengths(processor.tokenizer)
    return [ResumableBatchSampler(ds.group_rows, 2, rank=r, world_size=2, seed=SEED, lengths=lengths, group_batches=group)
            for r in (0, 1)]


def test_the_two_ranks_get_different_mixes_in_length_grouped_order(shards, processor):
    # the premise of the next tests: at some micro-step one rank has only text-only rows while the
    # other has only image rows (Mllama would skip its vision tower on one rank and not the other),
    # and the trainer's order is the length-grouped one (not the plain shuffled order)
    samplers = _samplers(shards, processor, GROUP)
    kinds = [[["".join(LAYOUT[i] for i in b) for b in s.epoch_batches(e)] for e in range(3)] for s in samplers]
    pairs = [(a, b) for e in range(3) for a, b in zip(kinds[0][e], kinds[1][e])]
    assert ("TT", "II") in pairs or ("II", "TT") in pairs
    assert any(a != b for a, b in pairs)
    ungrouped = _samplers(shards, processor, 0)
    assert [s.epoch_batches(0) for s in samplers] != [s.epoch_batches(0) for s in ungrouped]


def test_zero3_on_two_cpu_ranks_with_mixed_batches_trains(straight):
    metrics = read_metrics(str(straight))
    assert [m["step"] for m in metrics] == [1, 2, 3, 4, 5, 6]
    losses = [m["loss"] for m in metrics]
    first, last = sum(losses[:2]) / 2, sum(losses[-2:]) / 2
    assert last < first - 0.3, losses
    assert all(m["tokens_per_s"] > 0 and m["samples_per_s"] > 0 and m["lr"] > 0 for m in metrics)
    opened = read_metrics(str(straight), "open")[0]["config"]
    assert opened["world_size"] == 2 and opened["zero_stage"] == 3 and opened["backend"] == "gloo"
    assert [c["step"] for c in read_metrics(str(straight), "checkpoint")] == [3, 6]
    final = read_metrics(str(straight), "close")[0]
    assert final["finished"] is True and final["samples"] == 6 * 2 * 2 * 2


def test_resume_continues_exactly(straight, tiny_model, shards, tmp_path):
    out = tmp_path / "interrupted"
    torchrun(tiny_model, shards, out, "--stop-at-step", "3")
    stopped = read_metrics(str(out), "close")[0]
    assert stopped["finished"] is False and stopped["step"] == 3
    assert not (out / "final").exists()
    torchrun(tiny_model, shards, out, "--resume", "--no-export")
    expected = [(m["step"], m["loss"], m["lr"]) for m in read_metrics(str(straight))]
    got = [(m["step"], m["loss"], m["lr"]) for m in read_metrics(str(out))]
    assert got == expected  # identical floats at every step, not merely close
    resumed = read_metrics(str(out), "open")[1]["config"]
    assert resumed["start_step"] == 3 and resumed["resumed_from"].endswith("step-0000003")
    assert resumed["group_by_length"] == GROUP
    # the per-step speed figures are there too (the host-side counts are exact, so they match as well)
    assert [m["useful_token_fraction"] for m in read_metrics(str(out))] == \
        [m["useful_token_fraction"] for m in read_metrics(str(straight))]


def test_export_loads_with_from_pretrained_and_generates(straight, tiny_model, shards):
    import torch
    from PIL import Image
    from transformers import AutoProcessor, MllamaForConditionalGeneration

    from pipeline.train.collator import Collator
    from pipeline.train.data import ShardDataset

    folder = straight / "final"
    model = MllamaForConditionalGeneration.from_pretrained(folder)
    processor = AutoProcessor.from_pretrained(folder)
    messages = [{"role": "user", "content": [{"type": "image"},
                                             {"type": "text", "text": "How many red circles are there?"}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(text=prompt, images=[Image.new("RGB", (84, 56), (255, 255, 255))],
                       add_special_tokens=False, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    assert out.shape[1] > inputs["input_ids"].shape[1]
    # the folder holds the trained weights (gathered from both ranks): lower loss than the start
    ds = ShardDataset(shards)
    batch = Collator(processor)([ds[i] for i in range(len(ds))])
    base = MllamaForConditionalGeneration.from_pretrained(tiny_model)
    with torch.no_grad():
        assert model(**batch).loss < base(**batch).loss - 0.3
    assert (folder / "training.json").is_file()


def test_zero2_single_process_with_checkpointing_and_frozen_vision(tiny_model, shards, tmp_path):
    import torch
    from safetensors.torch import load_file

    out = tmp_path / "zero2"
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "LLAVACOT_TRAIN_REPORTER"):
        env.pop(key, None)
    cmd = [sys.executable, "-m", "pipeline.train", "--data", shards, "--model", tiny_model, "--output-dir", str(out),
           "--zero-stage", "2", "--gradient-checkpointing", "--freeze-vision", "--freeze-projector",
           "--max-steps", "2", "--per-device-batch-size", "3", "--lr", "1e-3", "--num-workers", "1"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-6000:]
    config = read_metrics(str(out), "open")[0]["config"]
    assert config["world_size"] == 1 and config["zero_stage"] == 2 and config["parameters_frozen"] > 0
    trained, base = load_file(out / "final" / "model.safetensors"), load_file(Path(tiny_model) / "model.safetensors")
    assert set(trained) == set(base)

    def part(key):  # saved in the checkpoint layout: "vision_model.…", "language_model.model.…"
        return next(p for p in ("vision_model", "multi_modal_projector", "language_model") if p in key.split("."))

    frozen = [k for k in base if part(k) in ("vision_model", "multi_modal_projector")]
    assert frozen and all(torch.equal(trained[k], base[k]) for k in frozen)
    assert any(not torch.equal(trained[k], base[k]) for k in base if part(k) == "language_model")


SYNC_COUNT = """
import importlib, sys, torch, deepspeed
from deepspeed.accelerator import get_accelerator
from pipeline.train import ds_config as dsc
importlib.import_module("deepspeed.comm.torch").build_shm_op = lambda: None
deepspeed.init_distributed(dist_backend="gloo", auto_mpi_discovery=False)
calls = []
accel = get_accelerator()
plain = accel.synchronize
accel.synchronize = lambda *a, **k: (calls.append(1), plain(*a, **k))[1]
for stage in (2, 3):
    config = dsc.fill(dsc.load(None, stage), dsc.auto_values(
        micro_batch=2, grad_accum=1, world_size=1, max_grad_norm=1.0, bf16=False, lr=1e-3, betas=(0.9, 0.999),
        eps=1e-8, weight_decay=0.0, cpu=True, hidden_size=8))
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 1))
    engine, *_ = deepspeed.initialize(model=model, optimizer=torch.optim.AdamW(model.parameters()), config=config)
    del calls[:]
    for _ in range(6):
        engine.backward(engine(torch.randn(2, 8)).pow(2).mean())
        engine.step()
    print(f"stage {stage}: {len(calls)} device synchronisations in 6 steps")
"""


def test_shipped_configs_leave_the_device_unsynchronised_between_steps():
    # DeepSpeed's throughput timer synchronises the device at every forward and step unless the
    # config turns it off: on a GPU the host would then wait for each step before queuing the next
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "RANK": "0", "LOCAL_RANK": "0",
           "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29517"}
    proc = subprocess.run([sys.executable, "-c", SYNC_COUNT], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("stage")]
    assert lines == ["stage 2: 0 device synchronisations in 6 steps", "stage 3: 0 device synchronisations in 6 steps"]
