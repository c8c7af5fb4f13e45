"""ChartQA reader: the embedded sample end to end, determinism, broken inputs, ChartQA specifics."""
from __future__ import annotations

import csv
import json

import pytest

from pipeline.demo import write_source
from pipeline.quarantine import Reject
from pipeline.sources import SourceLayoutError, get_reader
from pipeline.sources.base import Sample, Skip
from pipeline.sources.layout import locate
from pipeline.sources.chartqa import list_items
from pipeline.storage import Root
from tests.pipeline.sources.helpers import ingest_demo, read_located, reject_key

SOURCE = "chartqa"
TOP = "ChartQA Dataset"


def _ingest(tmp_path, seed=0):
    return ingest_demo(SOURCE, tmp_path, seed)


_key = reject_key


def test_demo_ingests_with_exact_rows_and_planted_rejects(tmp_path):
    _, planted, summary, rows, rejects = _ingest(tmp_path)
    assert summary.rows == 32 == len(rows)
    assert summary.splits == {"test": 8, "train": 16, "val": 8}  # test answers are public: read
    assert summary.skipped_splits == {}
    assert _key((r["native_id"], r["reason"]) for r in rejects) == _key((p.native_id, p.reason) for p in planted)
    assert {p.reason for p in planted} == {
        "missing_image", "unreadable_image", "malformed_record", "empty_question", "empty_answer", "no_image",
    }

    r = rows["chartqa/test/human/0"]
    assert r["split"] == "test"
    assert r["image_path"] == "test/png/1049.png"  # relative to the 'ChartQA Dataset' folder
    assert r["question"] == "What is the value of Ghana?"
    assert r["answer"] == "18"
    assert r["options"] == [] and r["hints"] == []
    assert r["conversations"] == [
        {"from": "human", "value": "<image>\nWhat is the value of Ghana?"}, {"from": "gpt", "value": "18"},
    ]
    assert json.loads(r["meta"]) == {"origin": "human", "imgname": "1049.png"}
    assert rows["chartqa/test/augmented/0"]["answer"] == "25"  # Peru 43 - Ghana 18
    assert json.loads(rows["chartqa/train/augmented/0"]["meta"])["origin"] == "augmented"


def _table(src, split, imgname):
    stem = imgname.rsplit(".", 1)[0]
    with src.open(f"{TOP}/{split}/tables/{stem}.csv", "r") as f:
        return list(csv.reader(f))


def test_answers_agree_with_the_chart_tables(tmp_path):
    src, _, _, rows, _ = _ingest(tmp_path)
    checked = 0
    for r in rows.values():
        meta = json.loads(r["meta"])
        table = _table(src, r["split"], meta["imgname"])
        q = r["question"]
        if q.startswith("What is the value of ") and " in " not in q:  # simple chart
            name = q[len("What is the value of "):-1]
            assert {row[0]: row[1] for row in table[1:]}[name] == r["answer"]
            checked += 1
        elif q.startswith("What is the value of ") and q.endswith(" in 2019?"):  # grouped chart
            series = q[len("What is the value of "):-len(" in 2019?")]
            col = table[0].index(series)
            assert {row[0]: row[col] for row in table[1:]}["2019"] == r["answer"]
            checked += 1
    assert checked == 8


def test_list_like_labels_keep_their_text_and_items(tmp_path):
    _, _, _, rows, _ = _ingest(tmp_path)
    listed = [r for r in rows.values() if r["answer"].startswith("[")]
    assert len(listed) == 4
    for r in listed:
        items = json.loads(r["meta"])["answer_items"]
        assert r["answer"] == "[" + ", ".join(items) + "]" and len(items) == 2
    assert list_items("[Madagascar, Central Europe]") == ["Madagascar", "Central Europe"]
    assert list_items("[63, 26]") == ["63", "26"]
    assert list_items("63") is None and list_items("[]") == []


def test_same_seed_gives_identical_files(tmp_path):
    a, b, c = (Root(str(tmp_path / n)) for n in "abc")
    write_source(SOURCE, a, seed=1)
    write_source(SOURCE, b, seed=1)
    write_source(SOURCE, c, seed=2)
    files_a = {p: a.open(p).read() for p, _ in a.walk_files()}
    assert files_a == {p: b.open(p).read() for p, _ in b.walk_files()} and len(files_a) > 20
    assert files_a != {p: c.open(p).read() for p, _ in c.walk_files()}


def test_missing_folder_and_wrong_layout_raise(tmp_path):
    reader = get_reader(SOURCE)
    with pytest.raises(SourceLayoutError, match="does not exist"):
        locate(reader, Root(str(tmp_path / "nope")))
    wrong = tmp_path / "wrong" / "ChartQA_Dataset" / "train" / "extra"  # underscore, one level too deep
    wrong.mkdir(parents=True)
    (wrong / "train_human.json").write_text("[]")
    with pytest.raises(SourceLayoutError, match="One level down, .* holds: ChartQA_Dataset/"):
        locate(reader, Root(str(tmp_path / "wrong")))


def _read(tmp_path, split, origin, payload):
    folder = tmp_path / "src" / TOP / split
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{split}_{origin}.json").write_text(payload if isinstance(payload, str) else json.dumps(payload))
    return read_located(SOURCE, Root(str(tmp_path / "src")))


def test_broken_inputs_become_rejects(tmp_path):
    items = _read(tmp_path, "val", "human", [
        {"imgname": "1.png", "query": "Q?"},  # no label
        {"imgname": "1.png", "query": 5, "label": "3"},
        {"query": "Q?", "label": "3"},  # no imgname
        {"imgname": "1.png", "query": "Q?", "label": ["3"]},
        7,
        {"imgname": "1.png", "query": "Max?", "label": 12},  # a number: written as text
        {"imgname": "1.png", "query": "Ratio?", "label": 0.72},
    ])
    rejects = [i for i in items if isinstance(i, Reject)]
    assert [(r.native_id, r.reason) for r in rejects] == [
        ("val/human/0", "malformed_record"), ("val/human/1", "malformed_record"),
        ("val/human/2", "malformed_record"), ("val/human/3", "malformed_record"),
        ("val/human/4", "malformed_record"),
    ]
    assert "label" in rejects[0].detail and rejects[0].location == "val/val_human.json[0]"
    samples = [i for i in items if isinstance(i, Sample)]
    assert [(s.native_id, s.answer, s.image_path) for s in samples] == [
        ("val/human/5", "12", "val/png/1.png"), ("val/human/6", "0.72", "val/png/1.png"),
    ]


def test_non_json_file_is_one_reject_and_the_other_file_still_read(tmp_path):
    _read(tmp_path, "train", "augmented", [{"imgname": "a.png", "query": "Q?", "label": "1"}])
    items = _read(tmp_path, "train", "human", "<html>not json</html>")
    assert [(i.native_id, i.reason, i.location) for i in items if isinstance(i, Reject)] == [
        (None, "unreadable_file", "train/train_human.json"),
    ]
    assert [i.native_id for i in items if isinstance(i, Sample)] == ["train/augmented/0"]


def test_files_of_another_split_name_are_skipped_and_reported(tmp_path):
    items = _read(tmp_path, "train", "human", [{"imgname": "a.png", "query": "Q?", "label": "1"}])
    (tmp_path / "src" / TOP / "train" / "val_human.json").write_text("[{}]")  # misplaced copy
    items = read_located(SOURCE, Root(str(tmp_path / "src")))
    assert [i.native_id for i in items if isinstance(i, Sample)] == ["train/human/0"]
    assert [(i.location, "not a ChartQA annotation file name" in i.reason) for i in items if isinstance(i, Skip)] == [
        ("train/val_human.json", True)]
