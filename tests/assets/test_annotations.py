"""The annotation asset through definitions.py with the real openai client (OPENAI_API_KEY and
OPENAI_BASE_URL set, pointing at the local fake server), under faults; then a search of
everything the run wrote for the API key."""
import importlib
from pathlib import Path

import dagster as dg

from tests.fakes.openai_server import FakeOpenAI

KEY = "sk-proj-TESTKEY-4f1c9e2b7a6d5c3e8f0a1b2c3d4e5f60"


def _files_containing(folder: Path, needle: bytes) -> list[str]:
    hits = []
    for p in folder.rglob("*"):
        if p.is_file():
            try:
                if needle in p.read_bytes():
                    hits.append(str(p))
            except OSError:
                continue
    return hits


def test_env_key_selects_the_real_client_and_the_key_is_never_written(tmp_path, monkeypatch, capfd):
    data = tmp_path / "data"
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    with FakeOpenAI(api_key=KEY, latency=0.01, retry_after=0.05, timeout_hold=1.0,
                    fault_rate=0.2, fault_kinds=["rate_limit", "server_error", "malformed", "refusal"]) as fake:
        monkeypatch.setenv("OPENAI_API_KEY", KEY)
        monkeypatch.setenv("OPENAI_BASE_URL", fake.base_url)
        monkeypatch.setenv("LLAVACOT_DATA_ROOT", str(data))
        monkeypatch.setenv("DAGSTER_HOME", str(home))
        import definitions

        defs = importlib.reload(definitions).defs
        try:
            assert defs.resources["teacher"].effective_backend() == "openai"
            instance = dg.DagsterInstance.get()
            job = defs.resolve_job_def("sources")
            result = job.execute_in_process(partition_key="clevr", instance=instance, raise_on_error=False)
            assert result.success
            (m,) = result.asset_materializations_for_node("annotations")
            assert m.metadata["teacher_model"].value == "gpt-4o"
            assert m.metadata["calls_made"].value > 0 and m.metadata["cost_usd_this_run"].value > 0
            assert m.metadata["usd_per_accepted_turn"].value > 0
            estimate = m.metadata["estimate"].value
            assert estimate["requests"] >= estimate["generation_requests"] > 0 and estimate["usd"] > 0
            assert fake.stats()["received"] >= m.metadata["turns"].value
            assert sum(fake.stats()["faults_by_kind"].values()) > 0
            # the event log, as the UI reads it
            records = instance.get_records_for_run(result.run_id).records
            assert all(KEY not in str(r.event_log_entry) for r in records)
            instance.dispose()
        finally:
            monkeypatch.delenv("OPENAI_API_KEY")
            monkeypatch.delenv("OPENAI_BASE_URL")
            importlib.reload(definitions)
    out, err = capfd.readouterr()
    assert KEY not in out and KEY not in err
    assert out or err  # the run did print (progress), so the search above searched something
    for folder in (data, home):
        assert _files_containing(folder, KEY.encode()) == []
    assert list(data.rglob("*.sqlite")), "the request cache was written under the data root"


def test_a_dead_account_fails_the_run_at_once_with_the_reason(tmp_path, monkeypatch):
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    with FakeOpenAI(api_key=KEY, insufficient_quota=1.0) as fake:
        monkeypatch.setenv("OPENAI_API_KEY", KEY)
        monkeypatch.setenv("OPENAI_BASE_URL", fake.base_url)
        monkeypatch.setenv("LLAVACOT_DATA_ROOT", str(tmp_path / "data"))
        monkeypatch.setenv("DAGSTER_HOME", str(home))
        import definitions

        defs = importlib.reload(definitions).defs
        try:
            instance = dg.DagsterInstance.get()
            result = defs.resolve_job_def("sources").execute_in_process(
                partition_key="clevr", instance=instance, raise_on_error=False)
            assert not result.success
            failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
            assert [e.step_key for e in failures] == ["annotations"]
            text = str(failures[0].event_specific_data.error)
            assert "no quota left" in text and KEY not in text
            assert fake.stats()["requests"] <= 32 + 1  # the requests already in flight; nothing retried
            assert not result.asset_materializations_for_node("validated")
            instance.dispose()
        finally:
            monkeypatch.delenv("OPENAI_API_KEY")
            monkeypatch.delenv("OPENAI_BASE_URL")
            importlib.reload(definitions)
