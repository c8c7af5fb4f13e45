"""AI2D reader: the embedded sample end to end, determinism, broken inputs, AI2D specifics."""
from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from pipeline.demo import write_source
from pipeline.demo.common import DemoWriter
from pipeline.ingest import ingest_source
from pipeline.quarantine import Reject
from pipeline.sources import SourceLayoutError, get_reader
from pipeline.sources.base import Sample
from pipeline.storage import Root


def _ingest(tmp_path, seed=0):
    src, out = Root(str(tmp_path / "src")), Root(str(tmp_path / "out"))
    planted = write_source("ai2d", src, seed=seed)
    summary = ingest_source("ai2d", src, out)
    rows = {r["id"]: r for r in pq.read_table(out.path("samples.parquet")).to_pylist()}
    rejects = pq.read_table(out.path("quarantine.parquet")).to_pylist()
    return planted, summary, rows, rejects


def _key(pairs):
    return sorted(pairs, key=lambda p: (p[0] or "", p[1]))


def test_demo_ingests_with_exact_rows_and_planted_rejects(tmp_path):
    planted, summary, rows, rejects = _ingest(tmp_path)
    assert summary.rows == 26 == len(rows)
    assert summary.splits == {"test": 4, "train": 22}
    assert summary.skipped_splits == {}
    assert _key((r["native_id"], r["reason"]) for r in rejects) == _key((p.native_id, p.reason) for p in planted)
    assert {p.reason for p in planted} >= {
        "missing_image", "unreadable_image", "malformed_record", "empty_question", "bad_option_index", "duplicate_id",
    }

    r = rows["ai2d/0.png-0"]
    assert r["split"] == "train"
    assert r["image_path"] == "images/0.png"
    assert r["question"] == "Which organism in this food web is a producer?"
    assert sorted(r["options"]) == ["fox", "frog", "grass", "hawk"]
    assert r["answer"] == "ABCD"[r["options"].index("grass")]
    assert r["hints"] == []
    human, gpt = r["conversations"]
    assert human["from"] == "human" and gpt == {"from": "gpt", "value": r["answer"]}
    assert human["value"].startswith("<image>\nWhich organism in this food web is a producer?\nOptions:\nA. ")
    assert f"\n{r['answer']}. grass" in human["value"]
    meta = json.loads(r["meta"])
    assert meta["answer_text"] == "grass"
    assert meta["category"] == "foodChainsWebs"
    assert meta["questionId"] == "0.png-0" and meta["abcLabel"] is False

    # images listed in ai2d_test_ids.csv are kept, marked test
    assert rows["ai2d/6.png-0"]["split"] == "test"
    assert json.loads(rows["ai2d/6.png-0"]["meta"])["answer_text"] == "froglet"
    assert rows["ai2d/7.png-1"]["split"] == "test"


def test_abc_label_questions_are_kept_with_their_letter_boxes(tmp_path):
    _, _, rows, _ = _ingest(tmp_path)
    abc = [r for r in rows.values() if json.loads(r["meta"])["abcLabel"]]
    assert len(abc) == 5 and all(r["image_path"] == "images/3.png" for r in abc)
    r = rows["ai2d/3.png-0"]
    assert r["question"] == "What is A in the diagram?"
    meta = json.loads(r["meta"])
    boxes = {b["letter"]: b for b in meta["abc_boxes"]}
    assert sorted(boxes) == ["A", "B", "C", "D"]
    # the letter A sits on the label of the part that is the answer: roots are the lowest label
    lowest = max(boxes.values(), key=lambda b: b["rectangle"][0][1])
    assert (lowest["letter"] == "A") == (meta["answer_text"] == "roots")
    assert r["options"][ord(r["answer"]) - 65] == meta["answer_text"]


def test_null_and_repeated_options_are_pruned(tmp_path):
    _, _, rows, _ = _ingest(tmp_path)
    r = rows["ai2d/92.png-0"]
    assert r["options"] == ["seedling", "flower"]
    assert r["answer"] == "A"
    meta = json.loads(r["meta"])
    assert meta["native_answer_texts"] == ["{}", "seedling", "flower", "seedling"]
    assert meta["correctAnswer"] == 3 and meta["answer_text"] == "seedling"


def test_same_seed_gives_identical_files(tmp_path):
    a, b = Root(str(tmp_path / "a")), Root(str(tmp_path / "b"))
    assert write_source("ai2d", a, seed=3) == write_source("ai2d", b, seed=3)
    files_a = [p for p, _ in a.walk_files()]
    assert files_a == [p for p, _ in b.walk_files()] and len(files_a) > 20
    for rel in files_a:
        with a.open(rel) as fa, b.open(rel) as fb:
            assert fa.read() == fb.read(), rel
    c = Root(str(tmp_path / "c"))
    write_source("ai2d", c, seed=4)
    with a.open("questions/0.png.json") as fa, c.open("questions/0.png.json") as fc:
        assert fa.read() != fc.read()


# --- hand-made broken inputs ------------------------------------------------------------------------

def _minimal(tmp_path) -> Root:
    root = Root(str(tmp_path / "ai2d"))
    w = DemoWriter(root, 0)
    w.text("ai2d_test_ids.csv", "5\n")
    from PIL import Image

    w.image("images/1.png", Image.new("RGB", (8, 8)))
    return root


def _read(root: Root) -> list:
    reader = get_reader("ai2d")
    reader.check_layout(root)
    return list(reader.read(root))


def test_missing_folder_and_wrong_layout_name_the_expected_paths(tmp_path):
    reader = get_reader("ai2d")
    with pytest.raises(SourceLayoutError, match="questions/\\*.json"):
        reader.check_layout(Root(str(tmp_path / "nowhere")))
    root = _minimal(tmp_path)  # no questions/ at all
    with pytest.raises(SourceLayoutError, match="questions/\\*.json"):
        reader.check_layout(root)
    DemoWriter(root, 0).json("questions/1.png.json", {"imageName": "1.png", "questions": {}})
    root.fs.rm(root.path("ai2d_test_ids.csv"))
    with pytest.raises(SourceLayoutError, match="ai2d_test_ids.csv"):
        reader.check_layout(root)


def test_broken_files_and_records_become_rejects(tmp_path):
    root = _minimal(tmp_path)
    w = DemoWriter(root, 0)
    w.text("questions/1.png.json", "this is not json")
    w.json("questions/2.png.json", ["not", "an", "object"])
    w.json("questions/3.png.json", {"imageName": 3, "questions": {}})
    w.json("questions/5.png.json", {"imageName": "5.png", "questions": {
        "Missing options?": {"correctAnswer": 0, "questionId": "5.png-0"},
        "Options not a list?": {"answerTexts": "a, b", "correctAnswer": 0, "questionId": "5.png-1"},
        "Index as float?": {"answerTexts": ["a", "b"], "correctAnswer": 1.0, "questionId": "5.png-2"},
        "Index too big?": {"answerTexts": ["a", "b"], "correctAnswer": 2, "questionId": "5.png-3"},
        "Negative index?": {"answerTexts": ["a", "b"], "correctAnswer": -1, "questionId": "5.png-4"},
        "Entry not an object?": "a",
        "No id?": {"answerTexts": ["a", "b"], "correctAnswer": 0},
        "Fine?": {"answerTexts": ["yes", "no"], "correctAnswer": 1, "questionId": "5.png-7"},
    }})
    items = _read(root)
    rejects = [(i.native_id, i.reason, i.location) for i in items if isinstance(i, Reject)]
    samples = [i for i in items if isinstance(i, Sample)]
    assert rejects == [
        (None, "unreadable_file", "questions/1.png.json"),
        ("2.png", "wrong_shape", "questions/2.png.json"),
        ("3.png", "malformed_record", "questions/3.png.json"),
        ("5.png-0", "malformed_record", "questions/5.png.json#0"),
        ("5.png-1", "malformed_record", "questions/5.png.json#1"),
        ("5.png-2", "malformed_record", "questions/5.png.json#2"),
        ("5.png-3", "bad_option_index", "questions/5.png.json#3"),
        ("5.png-4", "bad_option_index", "questions/5.png.json#4"),
        (None, "malformed_record", "questions/5.png.json#5"),
        (None, "malformed_record", "questions/5.png.json#6"),
    ]
    assert [(s.native_id, s.split, s.answer, s.options) for s in samples] == [("5.png-7", "test", "B", ["yes", "no"])]
    assert samples[0].meta["category"] is None  # no categories.json: tolerated


def test_question_files_are_read_in_numeric_order_and_imagename_defaults_to_file_name(tmp_path):
    root = _minimal(tmp_path)
    w = DemoWriter(root, 0)
    for n in (10, 9, 100):
        w.json(f"questions/{n}.png.json", {"questions": {
            "Q?": {"answerTexts": ["a", "b"], "correctAnswer": 0, "questionId": f"{n}.png-0"}}})
    w.text("ai2d_test_ids.csv", "image_id\n100\n")  # a header line is tolerated
    samples = [i for i in _read(root) if isinstance(i, Sample)]
    assert [s.native_id for s in samples] == ["9.png-0", "10.png-0", "100.png-0"]
    assert [s.image_path for s in samples] == ["images/9.png", "images/10.png", "images/100.png"]
    assert [s.split for s in samples] == ["train", "train", "test"]


def test_question_for_missing_image_is_quarantined_centrally(tmp_path):
    root = _minimal(tmp_path)
    DemoWriter(root, 0).json("questions/7.png.json", {"imageName": "7.png", "questions": {
        "Q?": {"answerTexts": ["a", "b"], "correctAnswer": 0, "questionId": "7.png-0"}}})
    out = Root(str(tmp_path / "out"))
    summary = ingest_source("ai2d", root, out)
    assert summary.rows == 0
    rejects = pq.read_table(out.path("quarantine.parquet")).to_pylist()
    assert [(r["native_id"], r["reason"]) for r in rejects] == [("7.png-0", "missing_image")]


def test_letter_questions_are_shown_with_their_letters_drawn():
    import io

    from PIL import Image

    from pipeline.sources import get_reader
    from pipeline.sources.ai2d import draw_letter_boxes

    buf = io.BytesIO()
    Image.new("RGB", (120, 80), (0, 90, 0)).save(buf, format="PNG")
    boxes = [{"id": "T0", "rectangle": [[10, 10], [50, 40]], "letter": "A", "value": "leaf"}]
    reader = get_reader("ai2d")
    plain = buf.getvalue()
    assert reader.prepare_image(plain, {"abcLabel": False, "abc_boxes": boxes}) is plain
    drawn = reader.prepare_image(plain, {"abcLabel": True, "abc_boxes": boxes})
    assert drawn == draw_letter_boxes(plain, boxes)
    im = Image.open(io.BytesIO(drawn)).convert("RGB")
    assert im.getpixel((12, 12)) == (255, 255, 255)  # the box is covered
    assert im.getpixel((100, 70)) == (0, 90, 0)  # the rest is untouched
    inside = [im.getpixel((x, y)) for x in range(12, 49) for y in range(12, 39)]
    assert (0, 0, 0) in inside  # the letter is drawn
