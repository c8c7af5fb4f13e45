"""The training reporter on the Pipes wire: what rank 0 sends, and that it stays out of the way when
Dagster did not launch the run."""
import json

import pytest
from dagster_pipes import encode_param

from pipeline.train.report import JsonlReporter, load_reporter
from resources.pipes_reporter import REPORTER_SPEC, PipesReporter, reporter, weights_digest


def pipes_env(tmp_path, monkeypatch):
    context = {"asset_keys": ["finetuned_model"], "code_version_by_asset_key": None, "provenance_by_asset_key": None,
               "partition_key": None, "partition_key_range": None, "partition_time_window": None, "run_id": "r1",
               "job_name": "dataset", "retry_number": 0, "extras": {}}
    (tmp_path / "context.json").write_text(json.dumps(context))
    messages = tmp_path / "messages.jsonl"
    monkeypatch.setenv("DAGSTER_PIPES_CONTEXT", encode_param({"path": str(tmp_path / "context.json")}))
    monkeypatch.setenv("DAGSTER_PIPES_MESSAGES", encode_param({"path": str(messages)}))
    return messages


def test_outside_pipes_the_default_reporter_is_used(monkeypatch):
    monkeypatch.delenv("DAGSTER_PIPES_CONTEXT", raising=False)
    monkeypatch.delenv("DAGSTER_PIPES_MESSAGES", raising=False)
    monkeypatch.setenv("LLAVACOT_TRAIN_REPORTER", REPORTER_SPEC)
    assert isinstance(load_reporter(), JsonlReporter)  # the entry point loads the spec the launchers set
    assert isinstance(reporter(), JsonlReporter)
    with pytest.raises(RuntimeError, match="Pipes"):
        PipesReporter().open({})


def test_events_go_over_pipes_and_to_metrics_jsonl(tmp_path, monkeypatch):
    messages = pipes_env(tmp_path, monkeypatch)
    export = tmp_path / "out" / "final"
    export.mkdir(parents=True)
    (export / "model.safetensors").write_bytes(b"weights")
    (export / "config.json").write_text("{}")
    r = load_reporter(REPORTER_SPEC)
    assert isinstance(r, PipesReporter)
    r.open({"output_dir": str(tmp_path / "out"), "world_size": 2, "deepspeed_config": {"zero_optimization": {"stage": 3}}})
    r.log_metrics(1, {"loss": 2.5, "lr": 1e-5, "tokens_per_s": 100.0, "samples_per_s": 2.0, "grad_norm": float("nan")})
    r.log_checkpoint(1, str(tmp_path / "out" / "checkpoints" / "step-0000001"))
    r.close({"step": 1, "loss": 2.5, "export": str(export), "finished": True})
    r.close({})  # a second close is harmless

    sent = [json.loads(line) for line in messages.read_text().splitlines()]
    methods = [m["method"] for m in sent]
    assert methods[0] == "opened" and methods[-1] == "closed"
    custom = [m["params"]["payload"] for m in sent if m["method"] == "report_custom_message"]
    assert [c["event"] for c in custom] == ["open", "metrics", "checkpoint", "final"]
    assert custom[1] == {"event": "metrics", "step": 1, "metrics": {"loss": 2.5, "lr": 1e-5, "tokens_per_s": 100.0,
                                                                    "samples_per_s": 2.0, "grad_norm": None}}
    logs = [m["params"]["message"] for m in sent if m["method"] == "log"]
    assert any(line.startswith("step 1: loss 2.5") for line in logs)
    (mat,) = [m["params"] for m in sent if m["method"] == "report_asset_materialization"]
    assert mat["data_version"] == weights_digest(export)
    assert mat["metadata"]["final/loss"]["raw_value"] == 2.5
    # the same record on disk as the default reporter leaves
    on_disk = [json.loads(x)["event"] for x in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert on_disk == ["open", "metrics", "checkpoint", "close"]


def test_weights_digest_covers_weights_only(tmp_path):
    (tmp_path / "model-00001.safetensors").write_bytes(b"a")
    (tmp_path / "config.json").write_text("{}")
    first = weights_digest(tmp_path)
    (tmp_path / "config.json").write_text('{"changed": true}')
    assert weights_digest(tmp_path) == first
    (tmp_path / "model-00001.safetensors").write_bytes(b"b")
    assert weights_digest(tmp_path) != first
    assert weights_digest(tmp_path / "missing") is None
