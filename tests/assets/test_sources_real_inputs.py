"""The source assets on trees laid out as published (not the demo): the checks fail a source that
loses a whole file, duplicates never reach the teacher, and the demo never writes over user data."""
from __future__ import annotations

import json
import shutil

import dagster as dg
import pyarrow.parquet as pq

from assets.annotations import build_annotations_asset
from assets.sources import raw_samples, source_files, subsample
from pipeline.sampling import dedup_key
from resources import DataStore, QualityThresholds, SamplingPlan
from resources.teacher import Teacher
from tests.pipeline.sources import trees

annotations = build_annotations_asset("offline-template")


def resources(root, raw, **store):
    return {
        "data_store": DataStore(root_uri=str(root), raw_uri=str(raw), **store),
        "sampling": SamplingPlan(scale=1.0),
        "quality": QualityThresholds(max_quarantine_rate=0.5),
        "teacher": Teacher(backend="offline", cache_dir=str(root / "teacher-cache")),
    }


def run(root, raw, instance, partition, selection=(raw_samples, subsample, annotations), **store):
    return dg.materialize([source_files, raw_samples, subsample, annotations], selection=list(selection),
                          partition_key=partition, instance=instance, resources=resources(root, raw, **store),
                          raise_on_error=False)


def only(result, asset):
    (m,) = result.asset_materializations_for_node(asset)
    return m.metadata


def test_a_file_with_the_wrong_shape_fails_the_check_instead_of_passing_empty(tmp_path):
    tree = trees.docvqa(tmp_path / "t")
    shutil.move(str(tree.folders["extraction root"]), str(tmp_path / "raw" / "docvqa"))
    qas = tmp_path / "raw" / "docvqa" / "spdocvqa_qas" / "train_v1.0_withQT.json"
    qas.write_text(json.dumps(json.loads(qas.read_text())["data"] * 3))  # rewritten as a bare list of 3
    with dg.instance_for_test() as instance:
        result = run(tmp_path / "data", tmp_path / "raw", instance, "docvqa", selection=[raw_samples])
    (check,) = [e for e in result.get_asset_check_evaluations() if e.check_name == "quarantine_rate"]
    assert not check.passed and check.metadata["rows_read"].value == 3 and check.metadata["rows"].value == 0
    meta = check.metadata  # nothing is materialised: the failed check carries the step's metadata
    assert meta["quarantined/wrong_shape"].value == 1 and meta["quarantined_rows_by_reason"].value == {"wrong_shape": 3}


def test_no_duplicate_reaches_the_teacher_and_the_removals_are_counted(tmp_path):
    raw = tmp_path / "raw"
    for source, build in (("chartqa", trees.chartqa), ("aokvqa", trees.aokvqa), ("geoqa_plus", trees.geoqa_plus),
                          ("clevr_math", trees.clevr_math)):
        tree = build(tmp_path / "t" / source)
        shutil.move(str(next(iter(tree.folders.values()))), str(raw / source))
    # the same picture and question in ChartQA (earlier in priority) and A-OKVQA
    shared = (raw / "aokvqa" / "coco" / "val2017" / "000000000042.jpg").read_bytes()
    (raw / "chartqa" / "ChartQA Dataset" / "train" / "png" / "shared.png").write_bytes(shared)
    human = raw / "chartqa" / "ChartQA Dataset" / "train" / "train_human.json"
    human.write_text(json.dumps(json.loads(human.read_text()) + [
        {"imgname": "shared.png", "query": trees.aokvqa_record("x", 42, "val")["question"].upper(), "label": "a kite"}]))
    with dg.instance_for_test() as instance:
        results = {p: run(tmp_path / "data", raw, instance, p) for p in ("chartqa", "aokvqa", "geoqa_plus", "clevr_math")}
    assert all(r.success for r in results.values())
    sub = {p: only(r, "subsample") for p, r in results.items()}
    assert sub["aokvqa"]["duplicates_of_other_sources"].value == {"chartqa": 1}
    assert sub["geoqa_plus"]["duplicates_within_source"].value == 2  # GeoQA-train.pk is inside Mix-train.pk
    assert sub["clevr_math"]["duplicates_within_source"].value == 1  # general and multihop repeat a question
    keys = {}
    for p in results:
        rows = pq.read_table(tmp_path / "data" / "subsample" / p / "samples.parquet").to_pylist()
        annotated = set(pq.read_table(tmp_path / "data" / "annotations" / p / "annotations.parquet")
                        .column("sample_id").to_pylist())
        assert annotated == {r["id"] for r in rows}
        for r in rows:
            key = dedup_key(r["image_sha256"], r["question"])
            assert key not in keys, (r["id"], keys.get(key))
            keys[key] = r["id"]


def test_the_demo_refuses_a_folder_holding_the_users_files(tmp_path):
    user = tmp_path / "data" / "raw" / "clevr"
    user.mkdir(parents=True)
    (user / "my_notes.txt").write_text("mine")
    with dg.instance_for_test() as instance:
        result = dg.materialize([source_files, raw_samples], selection=[raw_samples], partition_key="clevr",
                                instance=instance, raise_on_error=False, resources={
                                    **resources(tmp_path / "data", ""),
                                    "data_store": DataStore(root_uri=str(tmp_path / "data"), embedded_sample=True)})
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    assert "embedded_sample to false" in failure.step_failure_data.user_failure_data.description
    assert [p.name for p in user.iterdir()] == ["my_notes.txt"]
