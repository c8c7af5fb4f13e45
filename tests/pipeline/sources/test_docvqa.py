"""DocVQA reader: the embedded sample end to end in both layouts, determinism, broken inputs."""
from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from pipeline.demo import docvqa as demo
from pipeline.demo import write_source
from pipeline.demo.common import DemoWriter
from pipeline.ingest import ingest_source
from pipeline.quarantine import Reject
from pipeline.sources import SourceLayoutError, get_reader
from pipeline.sources.base import Sample
from pipeline.storage import Root

SOURCE = "docvqa"


def _ingest(src: Root, out: Root):
    summary = ingest_source(SOURCE, src, out)
    rows = {r["id"]: r for r in pq.read_table(out.path("samples.parquet")).to_pylist()}
    rejects = pq.read_table(out.path("quarantine.parquet")).to_pylist()
    return summary, rows, rejects


def _key(pairs):
    return sorted(pairs, key=lambda p: (p[0] or "", p[1]))


def test_demo_ingests_with_exact_rows_and_planted_rejects(tmp_path):
    src = Root(str(tmp_path / "src"))
    planted = write_source(SOURCE, src, seed=0)
    assert src.exists("spdocvqa_qas/train_v1.0_withQT.json") and src.exists("spdocvqa_qas/test_v1.0.json")
    summary, rows, rejects = _ingest(src, Root(str(tmp_path / "out")))
    assert summary.rows == 30 == len(rows)
    assert summary.splits == {"train": 22, "val": 8}
    assert set(summary.skipped_splits) == {"test"}
    assert _key((r["native_id"], r["reason"]) for r in rejects) == _key((p.native_id, p.reason) for p in planted)
    assert {p.reason for p in planted} == {
        "missing_image", "unreadable_image", "malformed_record", "empty_question", "empty_answer", "no_image",
        "duplicate_id",
    }

    with src.open("spdocvqa_qas/train_v1.0_withQT.json", "r") as f:
        first = json.load(f)["data"][0]
    assert first["image"].startswith("documents/")
    r = rows[f"docvqa/train/{first['questionId']}"]
    assert r["split"] == "train"
    assert r["image_path"] == "spdocvqa_images/" + first["image"][len("documents/"):]
    assert r["question"] == "What is the invoice number?"
    assert r["answer"] == first["answers"][0] and r["answer"].isdigit() and len(r["answer"]) == 5
    assert r["options"] == [] and r["hints"] == []
    assert r["conversations"] == [
        {"from": "human", "value": "<image>\nWhat is the invoice number?"}, {"from": "gpt", "value": r["answer"]},
    ]
    meta = json.loads(r["meta"])
    assert meta["answers"] == first["answers"] and meta["question_types"] == ["form"]
    assert meta["docId"] == 1001 and meta["layout"] == "current"
    assert meta["ucsf_document_id"] == first["ucsf_document_id"]

    # several accepted answers: the first is the standard answer, all are kept
    total = next(r for r in rows.values() if r["question"] == "What is the total amount?")
    answers = json.loads(total["meta"])["answers"]
    assert total["answer"] == answers[0] and answers[1] == answers[0].lstrip("$")


def test_original_layout_gives_the_same_rows(tmp_path):
    current, original = Root(str(tmp_path / "current")), Root(str(tmp_path / "original"))
    planted_c = demo.write(DemoWriter(current, 0))
    planted_o = demo.write(DemoWriter(original, 0), layout="original")
    assert original.exists("train/train_v1.0.json") and original.exists("val/documents")
    assert not original.exists("spdocvqa_qas")
    sc, rows_c, _ = _ingest(current, Root(str(tmp_path / "out_c")))
    so, rows_o, rejects_o = _ingest(original, Root(str(tmp_path / "out_o")))
    assert so.rows == sc.rows == 30 and so.splits == sc.splits
    assert _key((r["native_id"], r["reason"]) for r in rejects_o) == _key((p.native_id, p.reason) for p in planted_o)
    assert planted_o == planted_c
    assert rows_o.keys() == rows_c.keys()
    for key, rc in rows_c.items():
        ro = rows_o[key]
        assert (ro["question"], ro["answer"], ro["split"]) == (rc["question"], rc["answer"], rc["split"])
        stem = rc["image_path"].split("/")[-1]
        assert rc["image_path"] == f"spdocvqa_images/{stem}"
        assert ro["image_path"] == f"{ro['split']}/documents/{stem}"
        assert json.loads(ro["meta"])["layout"] == "original"


def test_same_seed_gives_identical_files(tmp_path):
    a, b, c = (Root(str(tmp_path / n)) for n in "abc")
    write_source(SOURCE, a, seed=7)
    write_source(SOURCE, b, seed=7)
    write_source(SOURCE, c, seed=8)
    files_a = {p: a.open(p).read() for p, _ in a.walk_files()}
    assert files_a == {p: b.open(p).read() for p, _ in b.walk_files()} and len(files_a) > 8
    assert files_a != {p: c.open(p).read() for p, _ in c.walk_files()}


def test_missing_folder_and_wrong_layout_raise(tmp_path):
    reader = get_reader(SOURCE)
    with pytest.raises(SourceLayoutError, match="spdocvqa_qas/"):
        reader.check_layout(Root(str(tmp_path / "nope")))
    (tmp_path / "wrong" / "spdocvqa_images").mkdir(parents=True)
    (tmp_path / "wrong" / "train_v1.0_withQT.json").write_text("{}")  # qas not in their folder
    with pytest.raises(SourceLayoutError, match="spdocvqa_qas/\\*_v1.0\\*.json"):
        reader.check_layout(Root(str(tmp_path / "wrong")))


def _good(**kw):
    rec = {
        "questionId": 9, "question": "What is the date?", "question_types": ["layout"],
        "image": "documents/abcd0001_1.png", "docId": 5, "ucsf_document_id": "abcd0001",
        "ucsf_document_page_no": "1", "answers": ["May 1, 1990", "1 May 1990"], "data_split": "train",
    }
    rec.update(kw)
    return rec


def _read(tmp_path, rel, payload):
    path = tmp_path / "src" / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if not isinstance(payload, str):
        payload = json.dumps({"dataset_name": "SP-DocVQA", "dataset_split": "train", "dataset_version": "1.0",
                              "data": payload})
    path.write_text(payload)
    root = Root(str(tmp_path / "src"))
    reader = get_reader(SOURCE)
    reader.check_layout(root)
    return list(reader.read(root))


def test_broken_inputs_become_rejects(tmp_path):
    no_answers = _good(questionId=3)
    del no_answers["answers"]
    items = _read(tmp_path, "spdocvqa_qas/train_v1.0_withQT.json", [
        _good(questionId=1, question=None),
        _good(questionId=2, image=["documents/a.png"]),
        no_answers,
        _good(questionId=4, answers="May 1, 1990"),
        _good(questionId=5, answers=["ok", 3]),
        _good(questionId=None),
        "record",
        _good(questionId=6, question_types=None, docId=None),  # optional fields: still a row
    ])
    rejects = [i for i in items if isinstance(i, Reject)]
    assert [(r.native_id, r.reason) for r in rejects] == [
        ("train/1", "malformed_record"), ("train/2", "malformed_record"), ("train/3", "malformed_record"),
        ("train/4", "malformed_record"), ("train/5", "malformed_record"), (None, "malformed_record"),
        (None, "malformed_record"),
    ]
    assert rejects[2].location == "spdocvqa_qas/train_v1.0_withQT.json[data][2]"
    (s,) = [i for i in items if isinstance(i, Sample)]
    assert s.native_id == "train/6" and s.answer == "May 1, 1990" and "question_types" not in s.meta
    assert s.meta["answers"] == ["May 1, 1990", "1 May 1990"]


def test_non_json_file_is_one_reject_and_test_is_skipped(tmp_path):
    _read(tmp_path, "spdocvqa_qas/test_v1.0.json", [{"questionId": 1, "question": "Q?", "image": "documents/x.png"}])
    _read(tmp_path, "spdocvqa_qas/val_v1.0_withQT.json", [_good(questionId=77)])
    items = _read(tmp_path, "spdocvqa_qas/train_v1.0_withQT.json", "not json at all")
    assert [(i.native_id, i.reason, i.location) for i in items if isinstance(i, Reject)] == [
        (None, "unreadable_file", "spdocvqa_qas/train_v1.0_withQT.json"),
    ]
    assert [(i.native_id, i.split) for i in items if isinstance(i, Sample)] == [("val/77", "val")]


def test_both_layouts_in_one_folder_are_both_read(tmp_path):
    _read(tmp_path, "spdocvqa_qas/val_v1.0_withQT.json", [_good(questionId=1)])
    items = _read(tmp_path, "train/train_v1.0.json", [_good(questionId=2)])
    assert sorted((i.native_id, i.image_path, i.meta["layout"]) for i in items) == [
        ("train/2", "train/documents/abcd0001_1.png", "original"),
        ("val/1", "spdocvqa_images/abcd0001_1.png", "current"),
    ]
