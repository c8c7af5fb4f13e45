"""Re-annotation on a schedule, and a sensor that notices new raw data."""
import json
import os

import dagster as dg

from pipeline import SOURCES
from pipeline.fingerprint import fingerprint
from resources import DataStore

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


@dg.sensor(
    job_name="main",
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Fingerprints every raw source folder; when one changes, runs the main job for "
    "that source (unchanged downstream work is then served from caches).",
)
def raw_data_sensor(context: dg.SensorEvaluationContext, data_store: DataStore):
    store = data_store
    seen = json.loads(context.cursor) if context.cursor else {}
    now = dict(seen)
    for source in SOURCES:
        root = store.raw_root().child(source)
        digest, files, _ = fingerprint(root)
        if digest == "missing":
            continue
        now[source] = digest
        if seen.get(source) != digest:
            yield dg.RunRequest(run_key=f"raw-{source}-{digest}", partition_key=source,
                                tags={"trigger": "raw_data_changed", "files": str(files)})
    context.update_cursor(json.dumps(now, sort_keys=True))
