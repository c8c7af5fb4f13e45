"""The team deployment on a real PostgreSQL: deploy/dagster.yaml as is, a dagster-daemon serving
its run queue, and `llavacot run` submitting two sources that run at the same time; the instance
in PostgreSQL then holds the lineage and the per-partition checks, and the teacher's pool held."""
from __future__ import annotations

import importlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.events import DagsterEventType
from dagster._core.event_api import PartitionKeyFilter

from tests.postgres import binaries, throwaway_server

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
SOURCES = ("clevr", "pisc")
DAEMON_START_S = 180


@pytest.fixture(scope="module")
def server():
    bin_dir = binaries()
    if bin_dir is None:
        if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
            pytest.fail("PostgreSQL is not installed (scripts/test.sh installs Debian's postgresql)", pytrace=False)
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql; scripts/test.sh does)")
    with throwaway_server(bin_dir) as srv:
        yield srv


@pytest.fixture
def team_instance(server, tmp_path, monkeypatch):
    """DAGSTER_HOME with deploy/dagster.yaml, and a dagster-daemon serving it."""
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(REPO / "deploy" / "dagster.yaml", home / "dagster.yaml")
    env = {**server.env(), "DAGSTER_HOME": str(home), "LLAVACOT_DATA_ROOT": str(tmp_path / "data"),
           "LLAVACOT_BENCHMARKS": "AI2D_TEST", "LLAVACOT_STRATEGIES": "direct"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    import definitions

    importlib.reload(definitions)  # this environment's deployment, as the daemon's code server loads it
    log = open(tmp_path / "daemon.log", "wb")
    daemon = subprocess.Popen([sys.executable, "-m", "dagster._daemon", "run", "-w", "workspace.yaml"],
                              cwd=REPO, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    instance = dg.DagsterInstance.get()
    try:
        from jobs.runs import queue_is_served

        deadline = time.monotonic() + DAEMON_START_S
        while not queue_is_served(instance):
            if daemon.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"dagster-daemon did not serve the queue:\n{(tmp_path / 'daemon.log').read_text()[-4000:]}")
            time.sleep(1)
        yield instance, tmp_path
    finally:
        instance.dispose()
        os.killpg(daemon.pid, signal.SIGTERM)
        try:
            daemon.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)
            daemon.wait(10)
        log.close()
        monkeypatch.undo()
        importlib.reload(definitions)


def _span(instance, run_id: str, step: str | None = None) -> tuple[float, float]:
    """When a run was launched (left the queue) and ended, or one of its steps started and ended,
    from the event log."""
    if step is None:
        start, end = DagsterEventType.RUN_STARTING, DagsterEventType.RUN_SUCCESS
    else:
        start, end = DagsterEventType.STEP_START, DagsterEventType.STEP_SUCCESS
    times = {}
    for kind in (start, end):
        records = instance.get_records_for_run(run_id, of_type=kind).records
        times[kind] = [r.event_log_entry.timestamp for r in records
                       if step is None or r.event_log_entry.step_key == step]
    (a,), (b,) = times[start], times[end]
    return a, b


def test_two_sources_run_at_once_through_the_queue_and_postgres_records_it_all(team_instance, capsys):
    instance, tmp_path = team_instance
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage

    assert isinstance(instance.run_storage, PostgresRunStorage)
    assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
    from jobs import cli

    code = cli.main(["run", *[arg for s in SOURCES for arg in ("--partition", s)]])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "submitted to the instance's run queue" in out
    runs = {r.tags["dagster/partition"]: r for r in instance.get_runs(dg.RunsFilter(job_name="sources"))}
    assert set(runs) == set(SOURCES)
    for run in runs.values():
        assert run.status == dg.DagsterRunStatus.SUCCESS
        kinds = {r.event_log_entry.dagster_event_type for r in instance.get_records_for_run(run.run_id).records}
        assert DagsterEventType.RUN_ENQUEUED in kinds, "not through the queue"
    # the queue launched the second run before the first ended (both in flight at once) ...
    (a0, a1), (b0, b1) = (_span(instance, runs[s].run_id) for s in SOURCES)
    assert a0 < b1 and b0 < a1, "the queue ran the two sources one after the other"
    # ... but the teacher_api pool (one slot) let one annotations step run at a time
    (s0, s1), (t0, t1) = (_span(instance, runs[s].run_id, "annotations") for s in SOURCES)
    assert s1 <= t0 or t1 <= s0, "two annotations steps held the teacher's pool at once"

    import definitions
    from jobs.plan import Records

    records = Records(instance, definitions.defs.resolve_asset_graph())
    for source in SOURCES:
        # lineage: validated[source] records which annotations materialisation it read, and
        # Dagster's stale status, computed from those records in PostgreSQL, finds it current
        mat = instance.fetch_materializations(dg.AssetRecordsFilter(
            asset_key=dg.AssetKey("validated"), asset_partitions=[source]), limit=1).records[0]
        ann = instance.fetch_materializations(dg.AssetRecordsFilter(
            asset_key=dg.AssetKey("annotations"), asset_partitions=[source]), limit=1).records[0]
        tags = mat.asset_materialization.tags
        assert tags["dagster/input_event_pointer/annotations"] == str(ann.storage_id)
        assert tags["dagster/input_data_version/annotations"]
        for key in ("raw_samples", "subsample", "annotations", "validated"):
            assert records.stale.get_status(dg.AssetKey(key), source).value == "FRESH", \
                (key, source, records.stale.get_stale_causes(dg.AssetKey(key), source))
        # the per-partition checks
        checks = [dg.AssetCheckKey(dg.AssetKey("validated"), n) for n in ("validity_rate", "no_duplicate_ids")]
        latest = instance.event_log_storage.get_latest_asset_check_execution_by_key(
            checks, partition_filter=PartitionKeyFilter(key=source))
        assert {k.name: v.status.value for k, v in latest.items()} == {"validity_rate": "SUCCEEDED",
                                                                         "no_duplicate_ids": "SUCCEEDED"}
    assert (tmp_path / "data" / "validated" / "clevr" / "samples.parquet").exists()
