import dagster as dg

from jobs.annotation import raw_data_sensor, reannotate_job, reannotate_schedule
from pipeline import SOURCES
from pipeline.demo import write_demo
from pipeline.storage import Root
from resources import DataStore


def test_reannotation_schedule_asks_for_every_source_with_the_retry_policy():
    import datetime

    when = datetime.datetime(2026, 11, 22, 3, 0, tzinfo=datetime.timezone.utc)
    requests = list(reannotate_schedule(dg.build_schedule_context(scheduled_execution_time=when)))
    assert all("2026-11-22T03:00" in r.run_key for r in requests)
    assert sorted(r.partition_key for r in requests) == sorted(SOURCES)
    assert reannotate_job.config["ops"]["annotations"]["config"]["policy"] == "retry_failed"


def test_sensor_notices_new_raw_data_per_source(tmp_path):
    write_demo(Root(str(tmp_path / "raw")))
    store = DataStore(root_uri=str(tmp_path))
    ctx = dg.build_sensor_context(resources={"data_store": store})
    first = list(raw_data_sensor(ctx))
    assert sorted(r.partition_key for r in first) == sorted(SOURCES)
    ctx = dg.build_sensor_context(resources={"data_store": store}, cursor=ctx.cursor)
    assert list(raw_data_sensor(ctx)) == []
    (tmp_path / "raw" / "docvqa" / "new.json").write_text("[]")
    ctx = dg.build_sensor_context(resources={"data_store": store}, cursor=ctx.cursor)
    (again,) = list(raw_data_sensor(ctx))
    assert again.partition_key == "docvqa"
