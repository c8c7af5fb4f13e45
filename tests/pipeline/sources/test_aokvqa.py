"""A-OKVQA reader: the embedded sample end to end, determinism, broken inputs, A-OKVQA specifics."""
from __future__ import annotations

import json

import pytest

from pipeline.demo import write_source
from pipeline.quarantine import Reject
from pipeline.sources import SourceLayoutError, get_reader
from pipeline.sources.base import Sample, Skip
from pipeline.storage import Root
from tests.pipeline.sources.helpers import ingest_demo, reject_key

SOURCE = "aokvqa"


def _ingest(tmp_path, seed=0):
    return ingest_demo(SOURCE, tmp_path, seed)


_key = reject_key


def test_demo_ingests_with_exact_rows_and_planted_rejects(tmp_path):
    src, planted, summary, rows, rejects = _ingest(tmp_path)
    assert summary.rows == 28 == len(rows)
    assert summary.splits == {"train": 21, "val": 7}
    assert set(summary.skipped_splits) == {"test"}
    assert _key((r["native_id"], r["reason"]) for r in rejects) == _key((p.native_id, p.reason) for p in planted)
    assert {p.reason for p in planted} == {
        "missing_image", "unreadable_image", "malformed_record", "empty_question", "bad_option_index", "duplicate_id",
    }

    with src.open("aokvqa_v1p0_train.json", "r") as f:
        first = json.load(f)[0]
    r = rows[f"aokvqa/{first['question_id']}"]
    assert r["split"] == "train"
    assert r["image_path"] == "coco/train2017/000000000113.jpg"
    assert r["question"] == "What season is it most likely to be?"
    assert r["options"] == first["choices"] and sorted(r["options"]) == ["autumn", "spring", "summer", "winter"]
    assert r["answer"] == "ABCD"[r["options"].index("winter")]
    assert r["hints"] == first["rationales"] and len(r["hints"]) == 3
    human, gpt = r["conversations"]
    assert gpt == {"from": "gpt", "value": r["answer"]}
    assert human["value"] == "<image>\nWhat season is it most likely to be?\nOptions:\n" + "\n".join(
        f"{'ABCD'[i]}. {o}" for i, o in enumerate(r["options"])
    )
    meta = json.loads(r["meta"])
    assert meta["answer_text"] == "winter" and meta["image_id"] == 113
    assert meta["direct_answers"].count("winter") == 8 and len(meta["direct_answers"]) == 10
    assert meta["difficult_direct_answer"] is False


def test_every_answer_letter_points_at_the_answer_text(tmp_path):
    _, _, _, rows, _ = _ingest(tmp_path)
    for r in rows.values():
        meta = json.loads(r["meta"])
        assert r["options"]["ABCD".index(r["answer"])] == meta["answer_text"]
        assert meta["answer_text"] in meta["direct_answers"]
    val = [r for r in rows.values() if r["split"] == "val"]
    assert val and all(r["image_path"].startswith("coco/val2017/") for r in val)


def test_same_seed_gives_identical_files(tmp_path):
    a, b, c = (Root(str(tmp_path / n)) for n in "abc")
    write_source(SOURCE, a, seed=5)
    write_source(SOURCE, b, seed=5)
    write_source(SOURCE, c, seed=6)
    files_a = {p: a.open(p).read() for p, _ in a.walk_files()}
    assert files_a == {p: b.open(p).read() for p, _ in b.walk_files()} and len(files_a) > 20
    assert files_a != {p: c.open(p).read() for p, _ in c.walk_files()}


def test_missing_folder_and_wrong_layout_raise(tmp_path):
    reader = get_reader(SOURCE)
    with pytest.raises(SourceLayoutError, match="aokvqa_v1p0_\\*.json"):
        reader.check_layout(Root(str(tmp_path / "nope")))
    (tmp_path / "wrong" / "coco" / "train2017").mkdir(parents=True)
    (tmp_path / "wrong" / "aokvqa_train.json").write_text("[]")
    with pytest.raises(SourceLayoutError, match="aokvqa_v1p0_\\*.json"):
        reader.check_layout(Root(str(tmp_path / "wrong")))


def _good(**kw):
    rec = {
        "split": "train", "image_id": 42, "question_id": "q1", "question": "What is it?",
        "choices": ["a", "b", "c", "d"], "correct_choice_idx": 2, "direct_answers": ["c"] * 10,
        "difficult_direct_answer": True, "rationales": ["r1", " ", "r3"],
    }
    rec.update(kw)
    return rec


def _read(tmp_path, split, payload, images_dir=None):
    root_dir = tmp_path / "src"
    root_dir.mkdir(parents=True, exist_ok=True)
    if images_dir:
        (root_dir / images_dir).mkdir(parents=True, exist_ok=True)
    (root_dir / f"aokvqa_v1p0_{split}.json").write_text(payload if isinstance(payload, str) else json.dumps(payload))
    root = Root(str(root_dir))
    reader = get_reader(SOURCE)
    reader.check_layout(root)
    return list(reader.read(root))


def test_broken_inputs_become_rejects(tmp_path):
    missing_idx = _good(question_id="q4")
    del missing_idx["correct_choice_idx"]
    items = _read(tmp_path, "train", [
        _good(question_id="q1", image_id="42"),
        _good(question_id="q2", choices="a b c d"),
        _good(question_id="q3", choices=["a", 2, "c", "d"]),
        missing_idx,
        _good(question_id="q5", correct_choice_idx=True),
        _good(question_id="q6", correct_choice_idx=-1),
        _good(question_id="q7", correct_choice_idx=4),
        {"question": "no id"},
        "text",
        _good(question_id="q8", rationales=None, direct_answers=None, difficult_direct_answer=None),
    ])
    rejects = [i for i in items if isinstance(i, Reject)]
    assert [(r.native_id, r.reason) for r in rejects] == [
        ("q1", "malformed_record"), ("q2", "malformed_record"), ("q3", "malformed_record"),
        ("q4", "malformed_record"), ("q5", "malformed_record"), ("q6", "bad_option_index"),
        ("q7", "bad_option_index"), (None, "malformed_record"), (None, "malformed_record"),
    ]
    assert rejects[6].location == "aokvqa_v1p0_train.json[6]" and "outside" in rejects[6].detail
    (s,) = [i for i in items if isinstance(i, Sample)]  # optional fields missing: still a row
    assert s.native_id == "q8" and s.answer == "C" and s.hints == [] and s.meta["direct_answers"] == []


def test_hints_drop_blank_rationales_and_test_split_is_skipped(tmp_path):
    _read(tmp_path, "test", [{"split": "test", "image_id": 1, "question_id": "t1", "question": "Q?",
                              "choices": ["a", "b", "c", "d"]}])
    items = _read(tmp_path, "val", [_good(split="val")])
    (skip, s) = items  # nothing from the test file: it is reported as skipped
    assert isinstance(skip, Skip) and skip.location == "aokvqa_v1p0_test.json" and "not public" in skip.reason
    assert s.split == "val" and s.hints == ["r1", "r3"] and s.meta["difficult_direct_answer"] is True


def test_image_paths_are_the_same_for_every_coco_layout(tmp_path):
    """COCO inside, flat, or absent: image paths are coco/{split}2017/... (the COCO folder found is
    mounted at coco/ by the layout step)."""
    (s,) = _read(tmp_path / "flat", "train", [_good()], images_dir="train2017")
    assert s.image_path == "coco/train2017/000000000042.jpg"
    (s,) = _read(tmp_path / "nested", "train", [_good()], images_dir="coco/train2017")
    assert s.image_path == "coco/train2017/000000000042.jpg"
    (s,) = _read(tmp_path / "none", "train", [_good()])  # neither: the README's layout is reported
    assert s.image_path == "coco/train2017/000000000042.jpg"


def test_non_json_file_is_one_reject(tmp_path):
    items = _read(tmp_path, "train", "[{\"split\": \"train\", ")
    assert [(i.native_id, i.reason, i.location) for i in items] == [
        (None, "unreadable_file", "aokvqa_v1p0_train.json"),
    ]
