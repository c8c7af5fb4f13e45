"""CLEVR-Math reader: zipped and extracted question files, integer answers, image locations."""
import io
import json
import random
import zipfile

import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline.demo import write_source
from pipeline.demo.clevr import Obj
from pipeline.demo.clevr_math import math_questions, multihop_question
from pipeline.ingest import ingest_source
from pipeline.sources import SourceLayoutError, get_reader
from pipeline.storage import Root


def ingest(tmp_path, src):
    out = Root(str(tmp_path / "out"))
    summary = ingest_source("clevr_math", src, out)
    rows = pq.read_table(out.path("samples.parquet")).to_pylist()
    rejects = pq.read_table(out.path("quarantine.parquet")).to_pylist()
    return summary, {r["id"]: r for r in rows}, rejects


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("clevr_math")
    src = Root(str(tmp / "src"))
    planted = write_source("clevr_math", src, seed=0)
    return (src, planted) + ingest(tmp, src)


def test_demo_rows_and_known_values(demo):
    src, _, summary, rows, _ = demo
    assert src.exists("clevr-math.zip")  # the general configuration ships zipped, as released
    assert summary.rows == 24
    assert summary.splits == {"train": 12, "val": 6, "test": 6}
    r = rows["clevr_math/general/train/0"]
    assert r["split"] == "train"
    assert r["image_path"] == "CLEVR_v1.0/images/train/CLEVR_train_000000.png"
    assert r["question"] == "Add 2 brown cylinders. How many objects exist?"
    assert r["answer"] == "9"
    assert r["options"] == [] and r["hints"] == []
    assert r["conversations"] == [{"from": "human", "value": "<image>\n" + r["question"]},
                                  {"from": "gpt", "value": "9"}]
    assert json.loads(r["meta"])["template"] == "addition"
    hop = rows["clevr_math/multihop/test/0"]
    assert hop["image_path"] == "clevr-math-test-images/CLEVR_v1.0/images/test/CLEVR_test_000000.png"
    assert hop["question"].count("Subtract all") == 2
    assert json.loads(hop["meta"])["configuration"] == "multihop"
    assert get_reader("clevr_math").stratify_key == "template"
    assert {json.loads(r["meta"])["template"] for r in rows.values()} == {
        "addition", "subtraction", "adversarial", "subtraction-multihop"}


def test_quarantine_is_exactly_the_planted_rows(demo):
    _, planted, summary, _, rejects = demo
    assert {(r["native_id"], r["reason"]) for r in rejects} == {(p.native_id, p.reason) for p in planted}
    assert len(rejects) == len(planted)
    assert {p.reason for p in planted} == {"missing_image", "unreadable_image", "malformed_record", "unreadable_file",
                                           "empty_question", "no_image"}
    cut = [r for r in rejects if r["native_id"] is None]
    assert cut[0]["location"] == "clevr-math-multihop/clevr-math-val.json"


def test_answers_follow_the_scene():
    objs = [Obj("cube", "red", "large", "rubber", 50, 90), Obj("cube", "red", "small", "metal", 120, 90),
            Obj("sphere", "blue", "large", "metal", 200, 90), Obj("cylinder", "red", "small", "rubber", 50, 150)]
    for seed in range(30):
        for q in math_questions(random.Random(seed), objs):
            text, answer = q["question"], q["answer"]
            if text == "Subtract all red cubes. How many objects are left?":
                assert answer == 2
            if text == "Subtract all small cubes. How many objects are left?":
                assert answer == 3
            if text == "Subtract all red cubes. How many cylinders are left?":
                assert answer == 1
            if text == "Subtract all red cubes. How many cubes are left?":
                assert answer == 0
            if text.startswith("Add "):
                assert answer == 4 + int(text.split()[1])
        hop = multihop_question(random.Random(seed), objs)
        assert 0 <= hop["answer"] < 4


def test_same_seed_same_bytes(tmp_path):
    a, b, c = (Root(str(tmp_path / n)) for n in "abc")
    write_source("clevr_math", a, seed=0)
    write_source("clevr_math", b, seed=0)
    write_source("clevr_math", c, seed=1)
    files_a = dict(a.walk_files())
    assert files_a.keys() == dict(b.walk_files()).keys()
    for rel in files_a:
        with a.open(rel) as fa, b.open(rel) as fb:
            assert fa.read() == fb.read(), rel
    with a.open("clevr-math.zip") as fa, c.open("clevr-math.zip") as fc:
        assert fa.read() != fc.read()


def test_missing_folder_and_wrong_layout(tmp_path):
    reader = get_reader("clevr_math")
    with pytest.raises(SourceLayoutError, match="clevr-math"):
        reader.check_layout(Root(str(tmp_path / "nowhere")))
    (tmp_path / "wrong" / "CLEVR_v1.0" / "images").mkdir(parents=True)
    (tmp_path / "wrong" / "questions.json").write_text("{}")
    with pytest.raises(SourceLayoutError, match=r"clevr-math\*\.zip"):
        reader.check_layout(Root(str(tmp_path / "wrong")))


def _q(**kw):
    q = {"split": "val", "image_filename": "CLEVR_val_000000.png", "image_index": 0, "image": "CLEVR_val_000000",
         "question": "Subtract all cubes. How many objects are left?", "program": [], "answer": 2,
         "template_filename": "subtraction.json", "question_family_index": 0, "question_index": 0}
    q.update(kw)
    return q


def _doc(*questions):
    return json.dumps({"info": {}, "questions": list(questions)})


def _png(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (1, 2, 3)).save(path)


def _zip(path, members):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    path.write_bytes(buf.getvalue())


def test_broken_inputs_become_rejects(tmp_path):
    src = tmp_path / "src"
    _png(src / "CLEVR_v1.0" / "images" / "val" / "CLEVR_val_000000.png")
    no_filename = _q(question_index=5)
    del no_filename["image_filename"]  # the `image` stem is enough
    _zip(src / "clevr-math.zip", {
        "clevr-math-val.json": _doc(
            _q(), _q(question_index=1, answer="4"), _q(question_index=2, answer="four"),
            _q(question_index=3, answer=True), _q(question_index=4, question=None), no_filename,
            _q(question_index=6, question=12), [1, 2]),
        "clevr-math-train.json": "not json at all",
        "__MACOSX/._clevr-math-val.json": "resource fork",
    })
    (src / "clevr-math-multihop.zip").write_bytes(b"PK\x03\x04 truncated zip")
    summary, rows, rejects = ingest(tmp_path, Root(str(src)))
    assert sorted(rows) == ["clevr_math/general/val/0", "clevr_math/general/val/1", "clevr_math/general/val/5"]
    assert rows["clevr_math/general/val/1"]["answer"] == "4"
    assert rows["clevr_math/general/val/5"]["image_path"] == "CLEVR_v1.0/images/val/CLEVR_val_000000.png"
    got = sorted(((r["native_id"] or ""), r["reason"], r["location"]) for r in rejects)
    assert got == [
        ("", "malformed_record", "clevr-math.zip!clevr-math-val.json#7"),
        ("", "unreadable_file", "clevr-math-multihop.zip"),
        ("", "unreadable_file", "clevr-math.zip!clevr-math-train.json"),
        ("general/val/2", "malformed_record", "clevr-math.zip!clevr-math-val.json#2"),
        ("general/val/3", "malformed_record", "clevr-math.zip!clevr-math-val.json#3"),
        ("general/val/4", "empty_question", "clevr_math:general/val/4"),
        ("general/val/6", "malformed_record", "clevr-math.zip!clevr-math-val.json#6"),
    ]


def test_extracted_files_take_precedence_over_their_zip(tmp_path):
    src = tmp_path / "src"
    _png(src / "CLEVR_v1.0" / "images" / "val" / "CLEVR_val_000000.png")
    _png(src / "clevr-math-test-images" / "CLEVR_v1.0" / "images" / "test" / "CLEVR_test_000003.png")
    _zip(src / "clevr-math.zip", {"clevr-math-val.json": _doc(_q(question="from the zip"))})
    (src / "clevr-math").mkdir()
    (src / "clevr-math" / "clevr-math-val.json").write_text(_doc(_q(question="extracted")))
    test_q = _q(split="test", image_filename="CLEVR_test_000003.png", image_index=3)
    _zip(src / "clevr-math-multihop.zip", {"data/clevr-math-test.json": _doc(test_q)})
    _zip(src / "clevr-math-test-images.zip", {"CLEVR_v1.0/images/test/x.png": b""})  # images: not questions
    _, rows, rejects = ingest(tmp_path, Root(str(src)))
    assert rejects == []
    assert rows["clevr_math/general/val/0"]["question"] == "extracted"
    test_row = rows["clevr_math/multihop/test/0"]
    assert test_row["split"] == "test"
    assert test_row["image_path"] == "clevr-math-test-images/CLEVR_v1.0/images/test/CLEVR_test_000003.png"
    assert len(rows) == 2
