"""The source assets materialised in-process against a temporary instance and data root."""
import json
from collections import Counter

import dagster as dg
import pyarrow.parquet as pq
import pytest
from dagster._core.event_api import PartitionKeyFilter

from assets.annotations import build_annotations_asset
from assets.sources import raw_samples, source_files, subsample
from pipeline import SOURCES
from resources import DataStore, QualityThresholds, SamplingPlan
from resources.teacher import Teacher

annotations = build_annotations_asset("offline-template")
from assets.validated import validated  # noqa: E402
from assets.dataset import cot_dataset  # noqa: E402
from resources import DatasetSettings  # noqa: E402


def resources(root, **quality):
    return {
        "data_store": DataStore(root_uri=str(root), embedded_sample=True),
        "sampling": SamplingPlan(scale=0.001, min_quota=10),
        "quality": QualityThresholds(**{"max_quarantine_rate": 0.5, **quality}),
        "teacher": Teacher(backend="offline", cache_dir=str(root / "teacher-cache")),
        "dataset": DatasetSettings(validation_fraction=0.1, shard_target_mb=0.5),
    }


def materialize_dataset(root, instance):
    return dg.materialize(
        [source_files, raw_samples, subsample, annotations, validated, cot_dataset], selection=[cot_dataset],
        instance=instance, resources=resources(root), raise_on_error=False,
    )


def materialize(root, instance, partition, **quality):
    return dg.materialize(
        [source_files, raw_samples, subsample, annotations, validated],
        selection=[raw_samples, subsample, annotations, validated],
        partition_key=partition,
        instance=instance,
        resources=resources(root, **quality),
        raise_on_error=False,
    )


def materialization(result, asset):
    (m,) = [m for m in result.asset_materializations_for_node(asset)]
    return m


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    """All ten partitions materialised twice on one temporary instance and data root."""
    root = tmp_path_factory.mktemp("data")
    with dg.instance_for_test() as instance:
        first = {p: materialize(root, instance, p) for p in SOURCES}
        first["dataset"] = materialize_dataset(root, instance)
        shards = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in (root / "cot_dataset" / "data").iterdir()}
        second = {p: materialize(root, instance, p) for p in SOURCES}
        second["dataset"] = materialize_dataset(root, instance)
        second["shards_before"] = shards
        yield root, instance, first, second


def test_every_partition_materialises_with_rows(graph):
    root, _, first, _ = graph
    for p in SOURCES:
        assert first[p].success, p
        raw = materialization(first[p], "raw_samples")
        assert raw.metadata["rows"].value >= 10, p
        sub = materialization(first[p], "subsample")
        assert 0 < sub.metadata["rows"].value <= raw.metadata["rows"].value
        assert (root / "subsample" / p / "samples.parquet").exists()


def test_every_planted_bad_row_is_quarantined_and_counted(graph):
    root, _, first, _ = graph
    for p in SOURCES:
        planted = json.loads((root / "raw" / p / ".demo.json").read_text())["planted"]
        assert planted, f"{p} plants no bad rows"
        quarantine = pq.read_table(root / "raw_samples" / p / "quarantine.parquet").to_pylist()
        assert Counter((r["native_id"], r["reason"]) for r in quarantine) == Counter(
            (x["native_id"], x["reason"]) for x in planted
        ), p
        meta = materialization(first[p], "raw_samples").metadata
        by_reason = Counter(x["reason"] for x in planted)
        assert meta["quarantined"].value == len(planted)
        for reason, n in by_reason.items():
            assert meta[f"quarantined/{reason}"].value == n, (p, reason)
        table = {r.data["reason"]: r.data["rows"] for r in meta["quarantined_by_reason"].value.records}
        assert table == dict(by_reason)


def test_checks_pass_on_the_embedded_sample(graph):
    _, _, first, _ = graph
    for p in SOURCES:
        evaluations = first[p].get_asset_check_evaluations()
        assert {(e.asset_key.path[-1], e.check_name) for e in evaluations} >= {
            ("raw_samples", "no_duplicate_ids"), ("raw_samples", "quarantine_rate"), ("subsample", "no_duplicate_ids")}
        assert all(e.passed for e in evaluations), [(e.check_name, e.metadata) for e in evaluations if not e.passed]


def test_offline_teacher_annotates_every_turn_of_every_partition(graph):
    root, _, first, second = graph
    for p in SOURCES:
        meta = materialization(first[p], "annotations").metadata
        sub_rows = materialization(first[p], "subsample").metadata["rows"].value
        assert meta["turns"].value >= sub_rows
        assert meta["status/ok"].value == meta["turns"].value, p
        assert meta["teacher_model"].value == "offline-template"
        rows = pq.read_table(root / "annotations" / p / "annotations.parquet").to_pylist()
        assert {r["teacher_model"] for r in rows} == {"offline-template"}
        again = materialization(second[p], "annotations").metadata
        assert again["calls_made"].value == 0 and again["kept_from_previous_run"].value == meta["turns"].value


def test_rerun_changes_no_data_version(graph):
    _, _, first, second = graph
    for p in SOURCES:
        for asset in ("raw_samples", "subsample", "annotations", "validated"):
            a = materialization(first[p], asset).tags["dagster/data_version"]
            b = materialization(second[p], asset).tags["dagster/data_version"]
            assert a == b, (p, asset)


def test_code_version_is_recorded(graph):
    _, _, first, _ = graph
    tags = materialization(first["clevr"], "raw_samples").tags
    assert tags["dagster/code_version"].startswith("ingest-")


def test_observation_fingerprints_each_source_and_notices_a_change(tmp_path):
    from jobs.main import observe_sources_job

    defs = dg.Definitions(assets=[source_files], jobs=[observe_sources_job], resources=resources(tmp_path))
    observe = defs.resolve_job_def("observe_sources")
    with dg.instance_for_test() as instance:
        assert observe.execute_in_process(instance=instance).success
        before = _observed_versions(instance)
        assert set(before) == set(SOURCES) and len(set(before.values())) == len(SOURCES)
        (tmp_path / "raw" / "clevr" / "extra.txt").write_text("new file")
        assert observe.execute_in_process(instance=instance).success
        after = _observed_versions(instance)
        assert after["clevr"] != before["clevr"]
        assert {k: v for k, v in after.items() if k != "clevr"} == {k: v for k, v in before.items() if k != "clevr"}


def _observed_versions(instance):
    records = instance.fetch_observations(dg.AssetKey("source_files"), limit=1000).records
    latest = {}
    for r in sorted(records, key=lambda r: r.storage_id):
        obs = r.asset_observation
        latest[obs.partition] = obs.tags["dagster/data_version"]
    return latest


def test_a_blocking_check_stops_downstream(tmp_path):
    with dg.instance_for_test() as instance:
        result = materialize(tmp_path, instance, "clevr", max_quarantine_rate=0.0)
        assert not result.success
        failed = [e for e in result.get_asset_check_evaluations() if not e.passed]
        assert [e.check_name for e in failed] == ["quarantine_rate"]
        assert not result.asset_materializations_for_node("subsample")
        assert not (tmp_path / "subsample" / "clevr").exists()


def test_a_failed_blocking_check_leaves_the_previous_output_and_runs_nothing_after_it(tmp_path):
    """The images of a source move away: every row is quarantined, quarantine_rate fails for that
    partition, the previous good output stays published and materialised, subsample does not run,
    and materialising another source leaves this partition's check failed."""
    import shutil

    with dg.instance_for_test() as instance:
        assert materialize(tmp_path, instance, "clevr").success
        published = (tmp_path / "raw_samples" / "clevr" / "samples.parquet").read_bytes()
        subsample_before = (tmp_path / "subsample" / "clevr" / "samples.parquet").read_bytes()
        good = instance.fetch_materializations(dg.AssetKey("raw_samples"), limit=1).records[0].storage_id

        images = tmp_path / "raw" / "clevr" / "images"
        shutil.move(images, tmp_path / "moved-images")
        images.mkdir()  # the folder is there, the files are not
        result = materialize(tmp_path, instance, "clevr")
        assert not result.success
        (failed,) = [e for e in result.get_asset_check_evaluations() if not e.passed]
        assert failed.check_name == "quarantine_rate" and failed.partition == "clevr"
        assert "not published" in failed.description and "quarantined" in failed.description
        assert not result.asset_materializations_for_node("raw_samples")
        assert not result.asset_materializations_for_node("subsample")
        assert (tmp_path / "raw_samples" / "clevr" / "samples.parquet").read_bytes() == published
        assert (tmp_path / "subsample" / "clevr" / "samples.parquet").read_bytes() == subsample_before
        assert pq.read_table(tmp_path / "raw_samples" / ".rejected" / "clevr" / "samples.parquet").num_rows == 0

        assert materialize(tmp_path, instance, "pisc").success  # another source: its own checks
        check = dg.AssetCheckKey(dg.AssetKey("raw_samples"), "quarantine_rate")
        latest = {p: instance.event_log_storage.get_latest_asset_check_execution_by_key(
            [check], partition_filter=PartitionKeyFilter(key=p))[check].status.value for p in ("clevr", "pisc")}
        assert latest == {"clevr": "FAILED", "pisc": "SUCCEEDED"}
        records = instance.fetch_materializations(dg.AssetRecordsFilter(
            asset_key=dg.AssetKey("raw_samples"), asset_partitions=["clevr"]), limit=1).records
        assert records[0].storage_id == good


def test_missing_source_folder_fails_with_a_clear_error(tmp_path):
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [source_files, raw_samples], selection=[raw_samples], partition_key="chartqa", instance=instance,
            resources={**resources(tmp_path), "data_store": DataStore(root_uri=str(tmp_path), raw_uri=str(tmp_path / "nowhere"))},
            raise_on_error=False,
        )
        assert not result.success
        (failure,) = [e for e in result.all_events if e.is_step_failure]
        message = failure.step_failure_data.user_failure_data.description
        assert "chartqa" in message and "does not exist" in message and "nowhere" in message


def test_validated_keeps_every_offline_annotation_and_passes_its_checks(graph):
    root, _, first, _ = graph
    for p in SOURCES:
        meta = materialization(first[p], "validated").metadata
        assert meta["validity_rate"].value == 1.0, p
        assert meta["samples_out"].value == materialization(first[p], "subsample").metadata["rows"].value
    rows = pq.read_table(root / "validated" / "clevr" / "samples.parquet").to_pylist()
    assert all("<CONCLUSION>" in t["value"] for r in rows for t in r["conversations"] if t["from"] == "gpt")


def test_a_low_validity_rate_blocks_the_partition(graph, tmp_path):
    import shutil

    import pyarrow as pa

    from pipeline import schema

    root, _, _, _ = graph
    copy = tmp_path / "data"
    shutil.copytree(root, copy)
    path = copy / "annotations" / "ai2d" / "annotations.parquet"
    rows = pq.read_table(path).to_pylist()
    for r in rows[: len(rows) // 2]:
        r["response"] = "no tags at all"
    pq.write_table(pa.Table.from_pylist(rows, schema=schema.ANNOTATION), path)
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [source_files, raw_samples, subsample, annotations, validated], selection=[validated],
            partition_key="ai2d", instance=instance, resources=resources(copy), raise_on_error=False,
        )
    assert not result.success
    (check,) = [e for e in result.get_asset_check_evaluations() if e.check_name == "validity_rate"]
    assert not check.passed and check.metadata["rate"].value < 0.9
    # not published: the rejected output (with its rejects and their reasons) is kept aside
    rejects = pq.read_table(copy / "validated" / ".rejected" / "ai2d" / "rejects.parquet").to_pylist()
    assert {r["reason"] for r in rejects} == {"format_no_tags"} and len(rejects) == len(rows) // 2
    assert (copy / "validated" / "ai2d" / "samples.parquet").read_bytes() == \
        (root / "validated" / "ai2d" / "samples.parquet").read_bytes()


def test_the_dataset_merges_every_source_and_a_rerun_rewrites_no_shard(graph):
    from pipeline.shards import verify_manifest
    from pipeline.storage import Root

    root, _, first, second = graph
    assert first["dataset"].success
    meta = materialization(first["dataset"], "cot_dataset").metadata
    validated_rows = sum(materialization(first[p], "validated").metadata["samples_out"].value for p in SOURCES)
    rejected = sum(r.data["samples"] for r in meta["rejects_by_reason"].value.records)
    assert meta["rows_train"].value + meta["rows_validation"].value + rejected == validated_rows
    assert meta["rows_validation"].value > 0
    assert {r.data["source"] for r in meta["rows_by_source"].value.records} == set(SOURCES)
    assert meta["teacher_models"].value == "offline-template"
    assert meta["stage_lengths"].value.startswith("![stage lengths](data:image/png;base64,")
    assert verify_manifest(Root(str(root / "cot_dataset"))) == []
    assert all(e.passed for e in first["dataset"].get_asset_check_evaluations())
    # second run: same data version, byte-identical shards left untouched (same mtime)
    again = materialization(second["dataset"], "cot_dataset")
    assert again.tags["dagster/data_version"] == materialization(first["dataset"], "cot_dataset").tags["dagster/data_version"]
    assert again.metadata["shards_rewritten"].value == 0
    after = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in (root / "cot_dataset" / "data").iterdir()}
    assert after == second["shards_before"]
    jsonl = (root / "cot_dataset" / "export" / "train.jsonl").read_text().splitlines()
    assert len(jsonl) == meta["rows_train"].value


def test_whole_annotations_and_samples_are_readable_in_the_ui(graph):
    """The preview table cuts long cells; the markdown beside it shows a few rows whole."""
    root, _, first, _ = graph
    md = materialization(first["clevr"], "annotations").metadata["annotations_in_full"].value
    response = pq.read_table(root / "annotations" / "clevr" / "annotations.parquet").to_pylist()[0]["response"]
    assert len(response) > 120 and response in md
    assert all(f"<{tag}>" in md for tag in ("SUMMARY", "CAPTION", "REASONING", "CONCLUSION"))
    samples = materialization(first["clevr"], "validated").metadata["samples_in_full"].value
    first_row = pq.read_table(root / "validated" / "clevr" / "samples.parquet").to_pylist()[0]
    assert first_row["id"] in samples and first_row["conversations"][-1]["value"] in samples
