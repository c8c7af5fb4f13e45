"""Re-annotation on a schedule. (New raw data is noticed by the automation conditions:
assets/automation.py.)"""
import os

import dagster as dg

from pipeline import SOURCES

reannotate_job = dg.define_asset_job(
    "reannotate",
    selection=dg.AssetSelection.assets("annotations"),
    config={"ops": {"annotations": {"config": {"policy": "retry_failed"}}}},
    description="Send again only the turns that failed, were refused, or were written under an "
    "older prompt version; everything already accepted is kept and nothing paid for is re-bought.",
)

REANNOTATE_CRON = os.environ.get("LLAVACOT_REANNOTATE_CRON", "0 3 * * *")


@dg.schedule(
    job=reannotate_job,
    cron_schedule=REANNOTATE_CRON,
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Re-annotates failed, refused and stale-prompt turns of every source (cron from "
    "LLAVACOT_REANNOTATE_CRON).",
)
def reannotate_schedule(context: dg.ScheduleEvaluationContext):
    tick = context.scheduled_execution_time.isoformat() if context.scheduled_execution_time else "manual"
    for source in SOURCES:
        yield dg.RunRequest(run_key=f"reannotate-{source}-{tick}", partition_key=source)
