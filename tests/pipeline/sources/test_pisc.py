"""PISC reader: one multiple-choice question per annotated pair, splits, positions, broken inputs."""
import json

import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline.demo import write_source
from pipeline.ingest import ingest_source
from pipeline.sources import SourceLayoutError, get_reader
from pipeline.sources.pisc import OPTIONS
from pipeline.storage import Root


def ingest(tmp_path, src):
    out = Root(str(tmp_path / "out"))
    summary = ingest_source("pisc", src, out)
    rows = pq.read_table(out.path("samples.parquet")).to_pylist()
    rejects = pq.read_table(out.path("quarantine.parquet")).to_pylist()
    return summary, {r["id"]: r for r in rows}, rejects


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pisc")
    src = Root(str(tmp / "src"))
    planted = write_source("pisc", src, seed=0)
    return (src, planted) + ingest(tmp, src)


def test_demo_rows_and_known_values(demo):
    _, _, summary, rows, _ = demo
    assert summary.rows == 21
    assert summary.splits == {"train": 10, "val": 5, "test": 5, "unassigned": 1}
    r = rows["pisc/1327/1-2"]
    assert r["split"] == "train"
    assert r["image_path"] == "image/01327.jpg"
    assert r["question"] == (
        "What is the social relationship between the person on the left (box [132, 95, 187, 215]) and the "
        "person on the right (box [162, 103, 213, 215])? Boxes are pixel coordinates [x1, y1, x2, y2].")
    assert r["options"] == ["Friends", "Family", "Couple", "Professional", "Commercial", "No relation"]
    assert r["answer"] == "C"
    assert r["hints"] == []
    assert r["conversations"] == [
        {"from": "human", "value": "<image>\n" + r["question"] + "\nOptions:\nA. Friends\nB. Family\nC. Couple\n"
                                   "D. Professional\nE. Commercial\nF. No relation"},
        {"from": "gpt", "value": "C"}]
    meta = json.loads(r["meta"])
    assert meta["answer_text"] == "Couple" and meta["label"] == 3
    assert meta["boxes"] == [[132, 95, 187, 215], [162, 103, 213, 215]]
    assert meta["pair"] == [1, 2] and meta["persons"] == [1, 2] and meta["num_people"] == 2
    assert get_reader("pisc").stratify_key == "answer_text"


def test_answers_match_the_drawn_scenes(demo):
    src, _, _, rows, _ = demo
    with src.open("annotation_image_info.json") as f:
        info = {str(e["id"]): e for e in json.load(f)}
    labels = {}
    for r in rows.values():
        meta = json.loads(r["meta"])
        assert r["options"][ord(r["answer"]) - 65] == meta["answer_text"]
        labels.setdefault(meta["image_id"], set()).add(meta["answer_text"])
        boxes = info[meta["image_id"]]["bbox"]
        assert meta["boxes"] == [boxes[p - 1] for p in meta["persons"]]
        with src.open(r["image_path"]) as f:
            im = Image.open(f).convert("RGB")
        for x1, y1, x2, y2 in meta["boxes"]:  # a figure is drawn in each box: its head is skin-coloured
            cx = (x1 + x2) // 2
            head = [im.getpixel((cx, y)) for y in range(y1 + 3, y1 + 12)]
            assert any(abs(p[0] - 236) < 25 and abs(p[1] - 196) < 25 and abs(p[2] - 160) < 25 for p in head)
    # a shop scene mixes two relationships: the customer and the friend, the keeper and the customer
    assert {"Commercial", "Friends"} in labels.values()


def test_quarantine_is_exactly_the_planted_rows(demo):
    _, planted, summary, _, rejects = demo
    assert {(r["native_id"], r["reason"]) for r in rejects} == {(p.native_id, p.reason) for p in planted}
    assert len(rejects) == len(planted)
    assert {p.reason for p in planted} == {"missing_image", "unreadable_image", "malformed_record"}
    details = " | ".join(r["detail"] for r in rejects)
    assert "unknown relationship label 9" in details
    assert "outside the image's 2 person boxes" in details
    assert "no entry in annotation_image_info.json" in details


def test_same_seed_same_bytes(tmp_path):
    a, b, c = (Root(str(tmp_path / n)) for n in "abc")
    write_source("pisc", a, seed=0)
    write_source("pisc", b, seed=0)
    write_source("pisc", c, seed=1)
    files_a = dict(a.walk_files())
    assert files_a.keys() == dict(b.walk_files()).keys()
    for rel in files_a:
        with a.open(rel) as fa, b.open(rel) as fb:
            assert fa.read() == fb.read(), rel
    with a.open("relationship.json") as fa, c.open("relationship.json") as fc:
        assert fa.read() != fc.read()


def test_missing_folder_and_wrong_layout(tmp_path):
    reader = get_reader("pisc")
    with pytest.raises(SourceLayoutError, match="annotation_image_info.json"):
        reader.check_layout(Root(str(tmp_path / "nowhere")))
    src = tmp_path / "wrong"
    (src / "image").mkdir(parents=True)
    (src / "annotation_image_info.json").write_text("[]")
    (src / "relationship.json").write_text("{}")
    (src / "relation_trainidx.json").write_text("[]")  # not under relationship_split/
    with pytest.raises(SourceLayoutError, match=r"relationship_split/relation_\*idx\.json"):
        reader.check_layout(Root(str(src)))


def _source(tmp_path, info, relationship, splits, images=(), raw=None):
    src = tmp_path / "src"
    (src / "image").mkdir(parents=True)
    (src / "relationship_split").mkdir()
    for image_id in images:
        Image.new("RGB", (200, 100), (9, 9, 9)).save(src / "image" / f"{image_id:05d}.jpg")
    (src / "annotation_image_info.json").write_text(json.dumps(info))
    (src / "relationship.json").write_text(json.dumps(relationship))
    for split, ids in splits.items():
        (src / "relationship_split" / f"relation_{split}idx.json").write_text(
            ids if isinstance(ids, str) else json.dumps(ids))
    for rel, text in (raw or {}).items():
        (src / rel).write_text(text)
    return Root(str(src))


def test_positions_splits_and_bad_annotations(tmp_path):
    info = [
        {"id": 7, "imgW": 200, "imgH": 100, "bbox": [[120, 10, 160, 90], [20, 10, 60, 90], [20, 0, 60, 40]]},
        {"id": 8, "imgW": 200, "imgH": 100, "bbox": [[0, 0, 10, 10], "not a box"]},
        {"imgW": 1},  # no id
    ]
    relationship = {
        "7": {"1 2": 4, "2 3": "2", "1 3": 0},
        "8": {"1 2": 1},
        "abc": {"1 2": 1},
        "9": [1, 2],
    }
    src = _source(tmp_path, info, relationship, {"train": ["7"], "val": [7, "8"], "test": []}, images=(7, 8))
    summary, rows, rejects = ingest(tmp_path, src)
    assert sorted(rows) == ["pisc/7/1-2", "pisc/7/2-3"]
    a = rows["pisc/7/1-2"]
    assert a["split"] == "train"  # listed in train and val: the first wins
    assert a["answer"] == "D" and json.loads(a["meta"])["answer_text"] == "Professional"
    # person 1 stands on the right, so person 2 is mentioned first
    assert a["question"].startswith(
        "What is the social relationship between the person on the left (box [20, 10, 60, 90]) "
        "and the person on the right (box [120, 10, 160, 90])?")
    assert json.loads(a["meta"])["persons"] == [2, 1]
    b = rows["pisc/7/2-3"]  # the same column: described top to bottom; a label given as a string
    assert "the person higher in the picture (box [20, 0, 60, 40])" in b["question"]
    assert "the person lower in the picture (box [20, 10, 60, 90])" in b["question"]
    assert b["answer"] == "B" and b["options"] == OPTIONS
    got = {(r["native_id"], r["reason"]) for r in rejects}
    assert got == {("7/1-3", "malformed_record"), ("8/1-2", "malformed_record"), ("abc", "malformed_record"),
                   ("9", "malformed_record"), (None, "malformed_record")}


def test_unassigned_split_and_non_json_files(tmp_path):
    info = [{"id": 3, "imgW": 200, "imgH": 100, "bbox": [[0, 0, 50, 90], [100, 0, 150, 90]]}]
    src = _source(tmp_path, info, {"3": {"1 2": 6}}, {"train": "no json here", "test": ["12"]}, images=(3,))
    summary, rows, rejects = ingest(tmp_path, src)
    assert rows["pisc/3/1-2"]["split"] == "unassigned"
    assert rows["pisc/3/1-2"]["answer"] == "F"
    assert [(r["native_id"], r["reason"], r["location"]) for r in rejects] == [
        (None, "unreadable_file", "relationship_split/relation_trainidx.json")]
    # a relationship file that is not JSON: one reject, not a crash
    src2 = _source(tmp_path / "b", info, {}, {"train": ["3"]}, images=(3,), raw={"relationship.json": "{oops"})
    _, rows2, rejects2 = ingest(tmp_path / "b", src2)
    assert rows2 == {}
    assert [(r["native_id"], r["reason"], r["location"]) for r in rejects2] == [
        (None, "unreadable_file", "relationship.json")]
