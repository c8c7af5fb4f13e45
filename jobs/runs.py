"""Runs of the main command, made through the instance the way the UI makes them.

Each run is created from the code location `definitions` (the name workspace.yaml gives it), so it
carries the same origin as a run launched from the UI and shows on its job's page. Then either
- the instance's run queue takes it (a QueuedRunCoordinator with a live dagster-daemon, as in a
  team deployment: pools, tag limits and the run launcher, e.g. Kubernetes, apply) and this command
  waits for it, or
- nothing serves a queue (the local demo instance, no daemon): the run executes in this process,
  as `dagster job execute` does, without a process start per run.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
from dagster._core.events import DagsterEventType
from dagster._core.remote_origin import InProcessCodeLocationOrigin
from dagster._core.definitions.selector import JobSubsetSelector
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

LOCATION = "definitions"  # the code location's name in workspace.yaml (module `definitions`)
REPO_ROOT = Path(__file__).resolve().parents[1]
DAEMON_FRESH_S = 90.0  # a queue daemon whose last heartbeat is older than this is not serving
COMMAND_TAG = "llavacot/command"
# progress lines of the run (INFO) on the console; every DEBUG event is still in the event log
RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


@dataclass
class Outcome:
    run_id: str
    success: bool
    seconds: float = 0.0
    materialized: list[tuple[dg.AssetKey, str | None]] = field(default_factory=list)
    failed_checks: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def queue_is_served(instance: dg.DagsterInstance) -> bool:
    """A QueuedRunCoordinator whose daemon sent a heartbeat recently."""
    if not isinstance(instance.run_coordinator, QueuedRunCoordinator):
        return False
    beat = instance.get_daemon_heartbeats().get("QUEUED_RUN_COORDINATOR")
    return beat is not None and time.time() - beat.timestamp < DAEMON_FRESH_S


class Runs:
    def __init__(self, instance: dg.DagsterInstance, queue: bool | None = None) -> None:
        self.instance = instance
        self.queue = queue_is_served(instance) if queue is None else queue
        self._location = None

    @property
    def how(self) -> str:
        return ("submitted to the instance's run queue (the daemon launches them)" if self.queue
                else "executed in this process (no daemon serves a run queue)")

    def _repository(self):
        if self._location is None:
            origin = InProcessCodeLocationOrigin(
                LoadableTargetOrigin(executable_path=sys.executable, module_name="definitions",
                                     working_directory=str(REPO_ROOT)),
                location_name=LOCATION,
            )
            self._location = origin.create_location(self.instance)
        return self._location, self._location.get_repository("__repository__")

    def create(self, job_name: str, keys: list[dg.AssetKey] | None, partition: str | None) -> dg.DagsterRun:
        """A run of `job_name` for `keys` (None: the whole job) and `partition`, not yet started."""
        location, repo = self._repository()
        checks = None if keys is None else [ck for ck in repo.asset_graph.asset_check_keys if ck.asset_key in set(keys)]
        selector = JobSubsetSelector(location_name=LOCATION, repository_name=repo.name, job_name=job_name,
                                     op_selection=None, asset_selection=keys, asset_check_selection=checks)
        remote_job = location.get_job(selector)
        plan = location.get_execution_plan(remote_job, RUN_CONFIG, step_keys_to_execute=None, known_state=None,
                                           instance=self.instance)
        tags = {**remote_job.tags, COMMAND_TAG: "llavacot run"}
        if partition is not None:
            tags["dagster/partition"] = partition
        return self.instance.create_run(
            job_name=job_name, run_id=None, run_config=RUN_CONFIG, status=dg.DagsterRunStatus.NOT_STARTED,
            tags=tags, root_run_id=None, parent_run_id=None,
            step_keys_to_execute=plan.execution_plan_snapshot.step_keys_to_execute,
            job_snapshot=remote_job.job_snapshot, execution_plan_snapshot=plan.execution_plan_snapshot,
            parent_job_snapshot=remote_job.parent_job_snapshot, op_selection=None, resolved_op_selection=None,
            asset_selection=frozenset(keys) if keys else None,
            asset_check_selection=frozenset(checks) if checks is not None else None,
            remote_job_origin=remote_job.get_remote_origin(), job_code_origin=remote_job.get_python_origin(),
            asset_graph=repo.asset_graph,
        )

    def start(self, run: dg.DagsterRun) -> None:
        """Queue the run, or execute it here (returns when it ended)."""
        if self.queue:
            self.instance.submit_run(run.run_id, workspace=None)  # the queue needs no workspace to enqueue
            return
        from dagster._core.execution.api import execute_run
        from dagster._utils.hosted_user_process import recon_job_from_origin

        execute_run(recon_job_from_origin(run.job_code_origin), run, self.instance)

    def wait(self, run_ids: list[str], poll_s: float = 1.0) -> None:
        """Until every run has ended; prints each run's INFO messages as they arrive (queued runs log
        to the instance, not to this terminal)."""
        cursors = dict.fromkeys(run_ids)
        pending = set(run_ids)
        while pending:
            for run_id in sorted(pending):
                connection = self.instance.get_records_for_run(run_id, cursor=cursors[run_id])
                for record in connection.records:
                    entry = record.event_log_entry
                    if entry.dagster_event is None and entry.level >= 20 and entry.user_message:
                        print(f"    [{run_id[:8]}] {entry.user_message}", flush=True)
                cursors[run_id] = connection.cursor
                run = self.instance.get_run_by_id(run_id)
                if run is not None and run.is_finished:
                    pending.discard(run_id)
            if pending:
                time.sleep(poll_s)

    def outcome(self, run_id: str) -> Outcome:
        record = self.instance.get_run_record_by_id(run_id)
        run = record.dagster_run if record else None
        seconds = (record.end_time - record.start_time) if record and record.start_time and record.end_time else 0.0
        out = Outcome(run_id, run is not None and run.status == dg.DagsterRunStatus.SUCCESS, seconds)
        kinds = {DagsterEventType.ASSET_MATERIALIZATION, DagsterEventType.ASSET_CHECK_EVALUATION,
                 DagsterEventType.STEP_FAILURE, DagsterEventType.RUN_FAILURE}
        for record in self.instance.get_records_for_run(run_id, of_type=kinds).records:
            event = record.event_log_entry.dagster_event
            data = event.event_specific_data
            if event.event_type == DagsterEventType.ASSET_MATERIALIZATION:
                out.materialized.append((data.materialization.asset_key, data.materialization.partition))
            elif event.event_type == DagsterEventType.ASSET_CHECK_EVALUATION and not data.passed:
                where = data.asset_key.to_user_string() + (f"[{data.partition}]" if data.partition else "")
                out.failed_checks.append(f"check {data.check_name} of {where} failed: {data.description or ''}")
            elif event.event_type == DagsterEventType.STEP_FAILURE:
                user = data.user_failure_data
                if user is not None and user.description:
                    out.failures.append(f"{event.step_key}: {user.description}")
                elif data.error is not None and "blocking asset check" not in data.error.message:
                    out.failures.append(f"{event.step_key}: {data.error.message.strip().splitlines()[-1]}")
            elif event.event_type == DagsterEventType.RUN_FAILURE and not out.failures and not out.failed_checks:
                out.failures.append(event.message or "the run failed")
        return out
