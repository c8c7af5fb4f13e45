"""What a run costs the main command beyond its work, three ways, on the same light job
(observe_sources: fingerprint ten raw folders):

- in process    `job.execute_in_process` (the old command: runs without a code-location origin, so
                absent from the job pages)
- here          `llavacot run` without a daemon: the run is made from the code location, as the UI
                makes it (on the job page), then executed in the command's process
- queued        `llavacot run` with a dagster-daemon serving the queue: submitted, launched by the
                daemon in a new process (DefaultRunLauncher), waited for

    python benchmarks/run_overhead.py [--runs 5] [--no-queue] [--readme]
"""
from __future__ import annotations

import argparse
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from readme import write_readme_section  # noqa: E402  benchmarks/readme.py (the script's folder is on sys.path)


def _timed(fn, runs: int) -> float:
    fn()  # warm: imports, first snapshot
    t0 = time.perf_counter()
    for _ in range(runs):
        fn()
    return (time.perf_counter() - t0) / runs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-queue", action="store_true", help="skip the daemon measurement")
    parser.add_argument("--readme", action="store_true", help="write the figures into benchmarks/README.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.update(DAGSTER_HOME=f"{tmp}/home", LLAVACOT_DATA_ROOT=f"{tmp}/data")
        os.environ.pop("OPENAI_API_KEY", None)
        from jobs.cli import write_local_instance

        write_local_instance()
        import dagster as dg

        import definitions
        from jobs.runs import Runs, queue_is_served
        from pipeline import SOURCES

        for source in SOURCES:
            definitions.RESOURCES["data_store"].raw(source)
        instance = dg.DagsterInstance.get()
        job = definitions.defs.resolve_job_def("observe_sources")
        here = Runs(instance, queue=False)

        def made_here():
            run = here.create("observe_sources", None, None)
            here.start(run)
            assert here.outcome(run.run_id).success

        results = {"in process": _timed(lambda: job.execute_in_process(instance=instance), args.runs),
                   "here": _timed(made_here, args.runs)}
        if not args.no_queue:
            daemon = subprocess.Popen([sys.executable, "-m", "dagster._daemon", "run", "-w", "workspace.yaml"],
                                      cwd=REPO, env=dict(os.environ), stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL, start_new_session=True)
            try:
                while not queue_is_served(instance):
                    time.sleep(1)
                queued = Runs(instance, queue=True)

                def made_queued():
                    run = queued.create("observe_sources", None, None)
                    queued.start(run)
                    queued.wait([run.run_id], poll_s=0.2)
                    assert queued.outcome(run.run_id).success

                results["queued"] = _timed(made_queued, args.runs)
            finally:
                os.killpg(daemon.pid, signal.SIGTERM)
                daemon.wait(30)
        instance.dispose()
    base = results["in process"]
    lines = [f"{name:<11} {seconds:6.2f} s per run   x{seconds / base:5.2f} of in process"
             for name, seconds in results.items()]
    print("\n".join(lines))
    if args.readme:
        machine = f"{os.cpu_count()} CPUs, Python {platform.python_version()}, {platform.machine()}, shared machine"
        write_readme_section(
            "run_overhead",
            "What one run costs the main command beyond its work, on a light job (observe_sources): "
            "`in process` is the old `execute_in_process` (no code-location origin: absent from the job "
            "pages); `here` is `llavacot run` without a daemon (the run made from the code location as "
            "the UI makes it, then executed in the command's process); `queued` is `llavacot run` with a "
            "dagster-daemon serving the queue (a new process per run, launched by the daemon).\n\n"
            f"Command (from the repository root, venv active): `python benchmarks/run_overhead.py --readme`\n\n"
            f"Latest run ({time.strftime('%Y-%m-%d')}, {machine}):\n\n```\n" + "\n".join(lines) + "\n```\n\n"
            "`here` records what `in process` records, and the run's snapshots taken from the code location "
            "(what puts it on the job page); the two differ by noise on this shared machine. The main command makes one "
            "run per source and one per later stage (the 30 evaluation assets are one run), about 15 on a "
            "first run and none on a run with nothing to do; `queued` pays a Python start-up per run, "
            "which is why the command executes runs itself when no daemon serves the queue.\n",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
