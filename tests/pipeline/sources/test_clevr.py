"""CLEVR reader: the embedded sample end to end, determinism, broken inputs, answers true to the scene."""
import json

import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline.demo import write_source
from pipeline.demo.common import COLOURS
from pipeline.ingest import ingest_source
from pipeline.sources import SourceLayoutError, get_reader
from pipeline.storage import Root


def ingest(tmp_path, src):
    out = Root(str(tmp_path / "out"))
    summary = ingest_source("clevr", src, out)
    rows = pq.read_table(out.path("samples.parquet")).to_pylist()
    rejects = pq.read_table(out.path("quarantine.parquet")).to_pylist()
    return summary, {r["id"]: r for r in rows}, rejects


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("clevr")
    src = Root(str(tmp / "src"))
    planted = write_source("clevr", src, seed=0)
    summary, rows, rejects = ingest(tmp, src)
    return src, planted, summary, rows, rejects


def test_demo_rows_and_known_values(demo):
    _, _, summary, rows, _ = demo
    assert summary.rows == 24
    assert summary.splits == {"train": 15, "val": 9}
    assert summary.skipped_splits == {"test": "CLEVR test questions have no public answers"}
    r = rows["clevr/train/0"]
    assert r["split"] == "train"
    assert r["image_path"] == "images/train/CLEVR_train_000000.png"
    assert r["question"] == "How many cubes are there?"
    assert r["answer"] == "3"
    assert r["options"] == [] and r["hints"] == []
    assert r["conversations"] == [
        {"from": "human", "value": "<image>\nHow many cubes are there?"}, {"from": "gpt", "value": "3"}]
    meta = json.loads(r["meta"])
    assert meta["question_family_index"] == 1 and meta["image_index"] == 0
    assert [p["function"] for p in meta["program"]] == ["scene", "filter_shape", "count"]
    assert rows["clevr/val/8"]["answer"] == "metal"
    assert get_reader("clevr").stratify_key == "question_family_index"


def test_quarantine_is_exactly_the_planted_rows(demo):
    _, planted, summary, _, rejects = demo
    assert {(r["native_id"], r["reason"]) for r in rejects} == {(p.native_id, p.reason) for p in planted}
    kinds = {p.reason for p in planted}
    assert kinds == {"missing_image", "unreadable_image", "malformed_record", "empty_question", "no_image",
                     "duplicate_id"}
    assert sum(summary.quarantined.values()) == len(planted)


def _run(program, objects):
    """A small executor of CLEVR programs over a scene's objects (the functions the sample uses)."""
    out = []
    for node in program:
        f, args, vals = node["function"], [out[i] for i in node["inputs"]], node["value_inputs"]
        if f == "scene":
            out.append(list(objects))
        elif f.startswith("filter_"):
            out.append([o for o in args[0] if o[f[len("filter_"):]] == vals[0]])
        elif f == "count":
            out.append(len(args[0]))
        elif f == "exist":
            out.append("yes" if args[0] else "no")
        elif f == "unique":
            assert len(args[0]) == 1
            out.append(args[0][0])
        elif f.startswith("query_"):
            out.append(args[0][f[len("query_"):]])
        elif f == "greater_than":
            out.append("yes" if args[0] > args[1] else "no")
    return str(out[-1])


def test_answers_are_true_for_the_drawn_scene(demo):
    src, _, _, rows, _ = demo
    for split in ("train", "val"):
        with src.open(f"scenes/CLEVR_{split}_scenes.json") as f:
            scenes = {s["image_index"]: s for s in json.load(f)["scenes"]}
        for r in rows.values():
            if r["split"] != split:
                continue
            meta = json.loads(r["meta"])
            scene = scenes[meta["image_index"]]
            assert _run(meta["program"], scene["objects"]) == r["answer"], r["question"]
        # and the picture shows each object in its colour at its position
        for scene in scenes.values():
            with src.open(f"images/{split}/{scene['image_filename']}") as f:
                im = Image.open(f).convert("RGB")
            for o in scene["objects"]:
                x, y, _ = o["pixel_coords"]
                assert im.getpixel((x, y)) == COLOURS[o["color"]], (scene["image_filename"], o)


def test_same_seed_same_bytes(tmp_path):
    a, b, c = (Root(str(tmp_path / n)) for n in "abc")
    write_source("clevr", a, seed=0)
    write_source("clevr", b, seed=0)
    write_source("clevr", c, seed=1)
    files_a = dict(a.walk_files())
    assert files_a.keys() == dict(b.walk_files()).keys()
    for rel in files_a:
        with a.open(rel) as fa, b.open(rel) as fb:
            assert fa.read() == fb.read(), rel
    with a.open("questions/CLEVR_train_questions.json") as fa, c.open("questions/CLEVR_train_questions.json") as fc:
        assert fa.read() != fc.read()


def test_missing_folder_and_wrong_layout(tmp_path):
    reader = get_reader("clevr")
    with pytest.raises(SourceLayoutError, match="questions/CLEVR_"):
        reader.check_layout(Root(str(tmp_path / "nowhere")))
    (tmp_path / "wrong" / "images").mkdir(parents=True)
    (tmp_path / "wrong" / "CLEVR_train_questions.json").write_text("{}")  # not under questions/
    with pytest.raises(SourceLayoutError, match=r"questions/CLEVR_\*_questions\.json"):
        reader.check_layout(Root(str(tmp_path / "wrong")))


def _png(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (1, 2, 3)).save(path)


def _q(**kw):
    q = {"image_index": 0, "image_filename": "CLEVR_val_000000.png", "split": "val", "question": "How many?",
         "answer": "2", "question_family_index": 3, "question_index": 0, "program": []}
    q.update(kw)
    return q


def test_broken_inputs_become_rejects(tmp_path):
    src = tmp_path / "src"
    _png(src / "images" / "val" / "CLEVR_val_000000.png")
    _png(src / "images" / "val" / "CLEVR_val_000004.png")
    (src / "questions").mkdir()
    (src / "questions" / "CLEVR_train_questions.json").write_text("this is not json")
    bad_type = _q(question_index=3)
    bad_type["question"] = {"text": "How many?"}
    no_name = _q(question_index=5, image_index=4)
    del no_name["image_filename"]
    questions = [
        _q(), _q(question_index=1, answer=None), _q(question_index=2, answer={"a": 1}), bad_type,
        _q(question_index=4, answer=3), no_name, "not an object",
    ]
    (src / "questions" / "CLEVR_val_questions.json").write_text(json.dumps({"info": {}, "questions": questions}))
    # the test split: no answers, skipped as a whole (no rows, no rejects)
    (src / "questions" / "CLEVR_test_questions.json").write_text(json.dumps({"info": {}, "questions": [
        {"image_index": 0, "image_filename": "CLEVR_test_000000.png", "split": "test", "question": "Why?",
         "question_index": 0}]}))
    summary, rows, rejects = ingest(tmp_path, Root(str(src)))
    assert sorted(rows) == ["clevr/val/0", "clevr/val/4", "clevr/val/5"]
    assert rows["clevr/val/4"]["answer"] == "3"  # an integer count is taken as its digits
    assert rows["clevr/val/5"]["image_path"] == "images/val/CLEVR_val_000004.png"  # rebuilt from the index
    got = {(r["native_id"], r["reason"]) for r in rejects}
    assert got == {(None, "unreadable_file"), (None, "malformed_record"), ("val/1", "malformed_record"), ("val/2", "malformed_record"),
                   ("val/3", "malformed_record")}
    non_json = [r for r in rejects if r["location"] == "questions/CLEVR_train_questions.json"]
    assert len(non_json) == 1 and "not valid JSON" in non_json[0]["detail"]
    assert any(r["native_id"] is None and r["location"].endswith("#6") for r in rejects)  # not an object
    assert "test" not in summary.splits
