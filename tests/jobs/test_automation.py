"""The automation conditions of a deployed instance, tick by tick (Dagster's evaluator, the same
code the automation sensor runs): new raw data flows source -> ... -> validated, the dataset runs
only when its inputs really changed, and never past a failed blocking check."""
import datetime
import importlib

import dagster as dg
import pytest

from pipeline import SOURCES

pytestmark = pytest.mark.slow
KEY = dg.AssetKey


class Ticks:
    def __init__(self, defs, instance):
        self.defs, self.instance = defs, instance
        self.time = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
        self.cursor = None

    def __call__(self, minutes: float = 0.5) -> dict[str, set]:
        """One evaluation `minutes` after the previous one: what it requests."""
        self.time += datetime.timedelta(minutes=minutes)
        result = dg.evaluate_automation_conditions(self.defs, self.instance, evaluation_time=self.time,
                                                   cursor=self.cursor)
        self.cursor = result.cursor
        return {r.key.to_user_string(): set(result.get_requested_partitions(r.key))
                for r in result.results if r.true_subset.size}

    def run(self, job: str, partition: str | None = None, defs=None) -> dg.ExecuteInProcessResult:
        return (defs or self.defs).resolve_job_def(job).execute_in_process(
            instance=self.instance, partition_key=partition, raise_on_error=False)


@pytest.fixture
def ticks(tmp_path, monkeypatch):
    monkeypatch.setenv("LLAVACOT_DATA_ROOT", str(tmp_path / "data"))
    monkeypatch.setenv("LLAVACOT_BENCHMARKS", "AI2D_TEST")
    monkeypatch.setenv("LLAVACOT_STRATEGIES", "direct")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    import definitions

    importlib.reload(definitions)
    for source in SOURCES:
        definitions.RESOURCES["data_store"].raw(source)
    with dg.instance_for_test() as instance:
        yield Ticks(definitions.defs, instance), definitions, tmp_path / "data"
    monkeypatch.undo()
    importlib.reload(definitions)


def _version(instance, key: str, partition: str | None = None) -> str:
    flt = dg.AssetRecordsFilter(asset_key=KEY(key), asset_partitions=[partition] if partition else None)
    return instance.fetch_materializations(flt, limit=1).records[0].asset_materialization.tags["dagster/data_version"]


def test_new_raw_data_flows_through_and_the_dataset_runs_only_on_changed_data_past_passed_checks(ticks):
    tick, definitions, data = ticks
    from resources import QualityThresholds

    assert tick() == {}  # the first evaluation starts the cursor
    assert tick(minutes=11) == {"source_files": set(SOURCES)}  # the observation cron
    assert tick.run("observe_sources").success
    assert tick() == {"raw_samples": set(SOURCES)}
    first = SOURCES[0]  # first in priority: its subsample reads no other source's rows
    assert tick.run("sources", first).success  # one source's chain, as the daemon would launch it
    requested = tick()
    assert "cot_dataset" not in requested  # nine sources are still missing
    assert not any(p == first for parts in requested.values() for p in parts)
    for source in SOURCES[1:]:  # in priority order, as the main command runs them
        assert tick.run("sources", source).success
    assert tick() == {"cot_dataset": {None}}
    assert tick.run("dataset").success
    assert tick() == {"finetuned_model": {None}}

    # the same folders observed again: same data versions, nothing to do
    assert tick(minutes=11) == {"source_files": set(SOURCES)}
    assert tick.run("observe_sources").success
    assert tick() == {}

    # a touched file: a new fingerprint, so that source runs; its rows are the same, so the
    # dataset does not
    (data / "raw" / "pisc" / "relationship.json").touch()
    assert tick(minutes=11) == {"source_files": set(SOURCES)}
    assert tick.run("observe_sources").success
    assert tick() == {"raw_samples": {"pisc"}}
    assert tick.run("sources", "pisc").success
    assert tick() == {}

    # a blocking check of one source fails; new data in another source does not reach the dataset
    strict = QualityThresholds(**{**definitions.RESOURCES["quality"].model_dump(), "min_validity_rate": 1.01})
    strict_defs = definitions.build_defs({**definitions.RESOURCES, "quality": strict})
    failed = strict_defs.resolve_job_def("sources").execute_in_process(
        instance=tick.instance, partition_key="clevr", raise_on_error=False, asset_selection=[KEY("validated")])
    assert not failed.success
    before = _version(tick.instance, "validated", "sharegpt4v")
    next((data / "raw" / "sharegpt4v" / "coco" / "train2017").iterdir()).unlink()  # one sample quarantined
    assert tick.run("observe_sources").success
    assert tick.run("sources", "sharegpt4v").success
    assert _version(tick.instance, "validated", "sharegpt4v") != before
    assert "cot_dataset" not in tick()  # validated[clevr]'s latest blocking check failed

    assert tick.run("sources", "clevr").success  # the normal threshold again: the check passes
    assert "cot_dataset" in tick()
