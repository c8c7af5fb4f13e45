"""When a deployed instance runs what on its own (Dagster's declarative automation).

The raw folders are observed on a cron (`source_files`); every asset then runs when one of its
inputs has a new data version (a re-observed folder with the same fingerprint, or a re-run that
produced identical data, starts nothing) or when its own code version changed (new logic or new
configuration it reads, assets/versions.py); never while an input is missing or running, and never
past an input whose latest blocking check failed. So new raw data flows source -> raw_samples ->
subsample -> annotations -> validated, then the dataset, training and evaluation follow only when
their inputs really changed. The automation sensor that evaluates these conditions is on by default
in production and off in the demo (turn it on under Automation in the UI).
"""
from __future__ import annotations

import os

import dagster as dg

AC = dg.AutomationCondition
OBSERVE_CRON = os.environ.get("LLAVACOT_OBSERVE_CRON", "*/10 * * * *")


def observe_on_cron(cron: str = OBSERVE_CRON) -> dg.AutomationCondition:
    """Observe (fingerprint) the raw folders at every tick of `cron`."""
    return AC.cron_tick_passed(cron).since_last_handled().with_label(f"observe every {cron}")


def on_new_inputs() -> dg.AutomationCondition:
    return (
        (AC.any_deps_match(AC.data_version_changed()).with_label("an input has a new data version")
         | AC.code_version_changed()).since_last_handled()
        & ~AC.any_deps_missing()
        & ~AC.any_deps_in_progress()
        & ~AC.in_progress()
        # not all_deps_blocking_checks_passed(): for an unpartitioned asset that reads every
        # partition of an input, that holds when *some* partition passed; one failed partition
        # must be enough to wait
        & ~AC.any_deps_match(AC.any_checks_match(AC.check_failed(), blocking_only=True)).with_label(
            "an input's latest blocking check failed")
    ).with_label("on_new_inputs")
