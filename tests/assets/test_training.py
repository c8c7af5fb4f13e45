"""finetuned_model materialised in-process: real DeepSpeed ZeRO-3 on two CPU ranks (torchrun through
Dagster Pipes), the tiny Mllama, a small prepared dataset; the metadata and the export are checked."""
import base64
import hashlib
import io
import json
from pathlib import Path

import dagster as dg
import pytest
from PIL import Image, ImageDraw

from assets.training import finetuned_model
from pipeline.shards import ShardWriter, write_manifest
from pipeline.stages import render
from pipeline.storage import Root
from resources import DataStore
from resources.launcher import TrainingLauncher, TrainingSettings
from resources.pipes_reporter import weights_digest

STEPS = 3

pytestmark = pytest.mark.slow


def _png(n: int) -> bytes:
    im = Image.new("RGB", (56, 56), "white")
    d = ImageDraw.Draw(im)
    for k in range(n):
        d.ellipse((4 + 12 * k, 20, 14 + 12 * k, 30), fill=(200, 30, 30))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def write_dataset(root: Root, rows: int = 12) -> None:
    """cot_dataset as the dataset asset leaves it: shards under data/ and manifest.json; a third of
    the rows have no image."""
    with ShardWriter(root, "data/train", row_group_rows=4, split="train") as w:
        for i in range(rows):
            n = 1 + i % 3
            answer = render({"summary": "I will count the circles.", "caption": f"The image shows {n} circles.",
                             "reasoning": f"There are {n} circles.", "conclusion": str(n)})
            image = i % 3 != 2
            w.add({"id": f"t/{i}", "source": "synthetic", "image_bytes": _png(n) if image else None,
                   "image_path": f"{i}.png" if image else None,
                   "conversations": [{"from": "human", "value": ("<image>\n" if image else "") + "How many circles?"},
                                     {"from": "gpt", "value": answer}]})
    write_manifest(root, w.shards)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_dataset(Root(str(root / "cot_dataset")))
    resources = {
        "data_store": DataStore(root_uri=str(root)),
        "launcher": TrainingLauncher(kind="local", nproc_per_node=2),
        "training": TrainingSettings(tiny_model=True, max_steps=STEPS, lr=2e-3, per_device_batch_size=2,
                                     save_every=2, num_workers=0),
    }
    # options set per run (as in the UI's launchpad) reach the entry point
    run_config = {"ops": {"finetuned_model": {"config": RUN_OPTIONS}}}
    with dg.instance_for_test() as instance:
        result = dg.materialize([finetuned_model], instance=instance, resources=resources, raise_on_error=False,
                                run_config=run_config)
        yield root, result


RUN_OPTIONS = {"gradient_checkpointing": True, "keep_checkpoints": 1, "max_length": 512, "group_by_length": 8,
               "fused_loss": "off", "freeze_projector": True}


def test_run_config_options_reach_the_entry_point(trained):
    root, result = trained
    assert result.success
    lines = [json.loads(x) for x in (root / "finetuned_model" / "metrics.jsonl").read_text().splitlines()]
    opened = next(x for x in lines if x["event"] == "open")["config"]
    assert {k: opened[k] for k in RUN_OPTIONS} == RUN_OPTIONS
    assert opened["speed"]["gradient_checkpointing"] is True and opened["speed"]["fused_loss"] == "off"
    assert opened["parameters_frozen"] > 0
    # keep_checkpoints 1: only the newest checkpoint is left
    assert sorted(p.name for p in (root / "finetuned_model" / "checkpoints").glob("step-*")) == [f"step-{STEPS:07d}"]


def test_materialises_through_the_local_launcher(trained):
    root, result = trained
    assert result.success
    (m,) = result.asset_materializations_for_node("finetuned_model")
    meta = m.metadata
    # the loss curve: one point per step, streamed from rank 0 over Pipes, and its plot
    points = meta["loss_points"].value
    assert [p["step"] for p in points] == list(range(1, STEPS + 1))
    assert all(p["loss"] > 0 for p in points)
    assert meta["loss/first"].value == points[0]["loss"] and meta["loss/last"].value == points[-1]["loss"]
    md = meta["loss_curve"].value
    assert md.startswith("![loss](data:image/png;base64,")
    png = base64.b64decode(md[len("![loss](data:image/png;base64,"):-1])
    assert Image.open(io.BytesIO(png)).format == "PNG"
    # throughput (one figure: the steady rate) and the final metrics rank 0 reported
    assert meta["tokens_per_s"].value > 0 and meta["samples_per_s"].value > 0
    assert "final/tokens_per_s" not in meta and "final/samples_per_s" not in meta
    assert meta["peak_memory_gib"].value > 0 and 0 < meta["final/useful_token_fraction"].value <= 1
    assert meta["final/step"].value == STEPS and meta["final/finished"].value is True
    assert meta["launcher"].value == {"kind": "local", "nodes": 1, "ranks_per_node": 2, "world_size": 2,
                                      "accelerator": "cpu"}
    assert "torchrun --standalone --nnodes 1 --nproc_per_node 2 -m pipeline.train" in meta["launched"].value
    assert meta["zero_stage"].value == 3


def test_checkpoint_export_and_data_version(trained):
    root, result = trained
    (m,) = result.asset_materializations_for_node("finetuned_model")
    meta = m.metadata
    out = root / "finetuned_model"
    export = meta["export"].value
    assert export == str(out / "final")
    assert (out / "final" / "config.json").is_file() and list((out / "final").glob("*.safetensors"))
    assert (out / "final" / "tokenizer.json").is_file()  # the processor travels with the weights
    assert meta["checkpoint"].value == str(out / "checkpoints" / f"step-{STEPS:07d}")
    assert meta["checkpoints_saved"].value == 2  # step 2 (save_every) and the last step
    # the data version is the content hash of the exported weights
    assert m.tags["dagster/data_version"] == weights_digest(export) == meta["weights_sha256"].value
    # the run's record on disk, as the default reporter writes it
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if x["event"] == "metrics"] == list(range(1, STEPS + 1))


def test_dataset_lineage_in_metadata(trained):
    root, result = trained
    (m,) = result.asset_materializations_for_node("finetuned_model")
    meta = m.metadata
    manifest = root / "cot_dataset" / "manifest.json"
    assert meta["dataset_manifest"].value == str(manifest)
    assert meta["dataset_manifest_sha256"].value == hashlib.sha256(manifest.read_bytes()).hexdigest()
    assert meta["dataset_rows"].value == {"train": 12}
    assert meta["model"].value == str(root / "tiny_model")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_slurm_launcher_end_to_end_with_stand_in_commands(tmp_path, monkeypatch):
    """The Slurm path for real on this host: stand-ins for sbatch (runs the script at once, as a
    one-node allocation), scontrol and srun; the script's torchrun, its c10d rendezvous, and Pipes
    over files in the shared folder are the real thing."""
    import os
    import stat
    import sys

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(
        '#!/bin/bash\n[ "$1 $2" = "--wait --parsable" ] || exit 64\necho 4242\n'
        'SLURM_JOB_ID=4242 SLURM_NNODES=1 SLURM_JOB_NODELIST=localhost exec bash "$3"\n')
    (bin_dir / "scontrol").write_text('#!/bin/bash\necho localhost\n')
    (bin_dir / "srun").write_text('#!/bin/bash\nwhile [[ "$1" == --* ]]; do shift; done\nexec "$@"\n')
    for f in bin_dir.iterdir():
        f.chmod(f.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    root = tmp_path / "data"
    write_dataset(Root(str(root / "cot_dataset")))
    resources = {
        "data_store": DataStore(root_uri=str(root)),
        "launcher": TrainingLauncher(kind="slurm", nnodes=1, nproc_per_node=2, master_port=_free_port(),
                                     torchrun=str(Path(sys.executable).with_name("torchrun")),
                                     shared_dir=str(tmp_path / "shared"), env={"DS_ACCELERATOR": "cpu"}),
        "training": TrainingSettings(tiny_model=True, max_steps=2, lr=2e-3, per_device_batch_size=2, save_every=0,
                                     num_workers=0),
    }
    with dg.instance_for_test() as instance:
        result = dg.materialize([finetuned_model], instance=instance, resources=resources, raise_on_error=False)
    assert result.success
    (m,) = result.asset_materializations_for_node("finetuned_model")
    assert [p["step"] for p in m.metadata["loss_points"].value] == [1, 2]
    script = Path(m.metadata["launched"].value)
    assert script.name == "train.sbatch" and "#SBATCH --nodes=1" in script.read_text()
    assert (tmp_path / "shared" / "pipes" / "messages.jsonl").is_file()  # Pipes went through the shared folder
    assert m.tags["dagster/data_version"] == weights_digest(root / "finetuned_model" / "final")


def test_missing_dataset_fails_with_a_clear_message(tmp_path):
    resources = {"data_store": DataStore(root_uri=str(tmp_path)), "launcher": TrainingLauncher(kind="local", nproc_per_node=2),
                 "training": TrainingSettings(tiny_model=True, max_steps=1)}
    with dg.instance_for_test() as instance:
        result = dg.materialize([finetuned_model], instance=instance, resources=resources, raise_on_error=False)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "materialise cot_dataset first" in str(failure.event_specific_data.error)


def test_the_demo_deployment_trains_in_the_training_job():
    from definitions import RESOURCES, defs

    job = defs.resolve_job_def("training")
    assert {k.to_user_string() for k in job.asset_layer.executable_asset_keys} == {"finetuned_model"}
    launcher, training = RESOURCES["launcher"], RESOURCES["training"]
    assert (launcher.kind, launcher.nproc_per_node) == ("local", 2)
    # long enough to learn the four-stage format, short enough for the first run's few minutes
    assert training.tiny_model and training.tiny_model_size == "demo" and 100 <= training.max_steps <= 300
