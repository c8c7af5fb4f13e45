import dagster as dg

from jobs.annotation import reannotate_job, reannotate_schedule
from pipeline import SOURCES


def test_reannotation_schedule_asks_for_every_source_with_the_retry_policy():
    import datetime

    when = datetime.datetime(2026, 11, 22, 3, 0, tzinfo=datetime.timezone.utc)
    requests = list(reannotate_schedule(dg.build_schedule_context(scheduled_execution_time=when)))
    assert all("2026-11-22T03:00" in r.run_key for r in requests)
    assert sorted(r.partition_key for r in requests) == sorted(SOURCES)
    assert reannotate_job.config["ops"]["annotations"]["config"]["policy"] == "retry_failed"
