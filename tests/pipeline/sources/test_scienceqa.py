"""ScienceQA reader: the embedded sample end to end, determinism, broken inputs, ScienceQA specifics."""
from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline.demo import write_source
from pipeline.demo.common import DemoWriter
from pipeline.ingest import ingest_source
from pipeline.quarantine import Reject
from pipeline.sources import SourceLayoutError, get_reader
from pipeline.sources.base import Sample
from pipeline.storage import Root


def _ingest(tmp_path, seed=0):
    src, out = Root(str(tmp_path / "src")), Root(str(tmp_path / "out"))
    planted = write_source("scienceqa", src, seed=seed)
    summary = ingest_source("scienceqa", src, out)
    rows = {r["id"]: r for r in pq.read_table(out.path("samples.parquet")).to_pylist()}
    rejects = pq.read_table(out.path("quarantine.parquet")).to_pylist()
    with src.open("problems.json") as f:
        problems = json.load(f)
    return planted, summary, rows, rejects, problems


def _key(pairs):
    return sorted(pairs, key=lambda p: (p[0] or "", p[1]))


def test_demo_ingests_with_exact_rows_and_planted_rejects(tmp_path):
    planted, summary, rows, rejects, problems = _ingest(tmp_path)
    assert summary.rows == 23 == len(rows)
    assert sum(summary.splits.values()) == 23 and set(summary.splits) <= {"train", "val", "test"}
    assert _key((r["native_id"], r["reason"]) for r in rejects) == _key((p.native_id, p.reason) for p in planted)
    assert {p.reason for p in planted} == {
        "no_image", "missing_image", "unreadable_image", "empty_question", "bad_option_index",
        "malformed_record", "duplicate_id",
    }

    r = rows["scienceqa/1"]
    p = problems["1"]
    assert r["split"] == p["split"]
    assert r["image_path"] == f"images/{p['split']}/1/image.png"
    assert r["question"] == "Will these magnets attract or repel each other?"
    assert sorted(r["options"]) == ["attract", "repel"]
    assert r["answer"] == "AB"[p["answer"]]
    hint = "Two magnets are placed as shown.\n\nHint: Magnets that attract pull together. Magnets that repel push apart."
    assert r["hints"][0] == hint and r["hints"][1].startswith("Magnets can pull or push")
    human, gpt = r["conversations"]
    assert human == {
        "from": "human",
        "value": f"<image>\n{r['question']}\nContext: {hint}\nOptions:\nA. {r['options'][0]}\nB. {r['options'][1]}",
    }
    assert gpt == {"from": "gpt", "value": r["answer"]}
    meta = json.loads(r["meta"])
    assert meta["subject"] == "natural science" and meta["answer_text"] == r["options"][p["answer"]]
    assert meta["solution"].endswith(f"so the magnets will {meta['answer_text']}.")
    assert meta["lecture"] == r["hints"][1]


def test_answers_agree_with_the_drawn_pictures(tmp_path):
    _, _, rows, _, _ = _ingest(tmp_path)
    src = Root(str(tmp_path / "src"))
    checked = set()
    for r in rows.values():
        meta = json.loads(r["meta"])
        text = meta["answer_text"]
        assert r["options"][ord(r["answer"]) - 65] == text
        with src.open(r["image_path"]) as f:
            im = Image.open(f).convert("RGB")
        if meta["category"] == "Magnets":  # the halves facing each other: red is N, blue is S
            left, right = im.getpixel((125, 50)), im.getpixel((235, 50))
            same = (left[0] > left[2]) == (right[0] > right[2])
            assert text == ("repel" if same else "attract"), r["id"]
            checked.add("magnets")
        if meta["skill"] == "Read a thermometer":  # the top of the red liquid on the 0-50 scale
            top = min(y for y in range(20, 275) if im.getpixel((80, y))[0] > 150 and im.getpixel((80, y))[1] < 90)
            assert text == f"{round((270 - top) * 50 / 240)}°C", r["id"]
            checked.add("thermometer")
        if meta["category"] == "Geography":
            assert meta["solution"] == f"This state is {text}."
    assert checked == {"magnets", "thermometer"}


def test_split_falls_back_to_pid_splits_and_subject_is_the_stratum(tmp_path):
    _, _, rows, _, problems = _ingest(tmp_path)
    assert "split" not in problems["23"]
    assert rows["scienceqa/23"]["split"] == "val"
    assert rows["scienceqa/23"]["image_path"] == "images/val/23/image.png"
    assert get_reader("scienceqa").stratify_key == "subject"
    subjects = {json.loads(r["meta"])["subject"] for r in rows.values()}
    assert subjects == {"natural science", "social science"}


def test_same_seed_gives_identical_files(tmp_path):
    a, b = Root(str(tmp_path / "a")), Root(str(tmp_path / "b"))
    assert write_source("scienceqa", a, seed=5) == write_source("scienceqa", b, seed=5)
    files_a = [p for p, _ in a.walk_files()]
    assert files_a == [p for p, _ in b.walk_files()] and len(files_a) > 20
    for rel in files_a:
        with a.open(rel) as fa, b.open(rel) as fb:
            assert fa.read() == fb.read(), rel
    c = Root(str(tmp_path / "c"))
    write_source("scienceqa", c, seed=6)
    with a.open("problems.json") as fa, c.open("problems.json") as fc:
        assert fa.read() != fc.read()


# --- hand-made broken inputs ------------------------------------------------------------------------

def _root(tmp_path, problems_text: str | None = None) -> Root:
    root = Root(str(tmp_path / "scienceqa"))
    w = DemoWriter(root, 0)
    w.image("images/train/1/image.png", Image.new("RGB", (8, 8)))
    if problems_text is not None:
        w.text("problems.json", problems_text)
    return root


def _read(root: Root) -> list:
    reader = get_reader("scienceqa")
    reader.check_layout(root)
    return list(reader.read(root))


def _good(**over):
    rec = {"question": "Q?", "choices": ["a", "b"], "answer": 1, "hint": "", "image": "image.png",
           "subject": "natural science", "lecture": "", "solution": "", "split": "train"}
    rec.update(over)
    return rec


def test_missing_folder_and_wrong_layout_name_the_expected_paths(tmp_path):
    reader = get_reader("scienceqa")
    with pytest.raises(SourceLayoutError, match="problems.json"):
        reader.check_layout(Root(str(tmp_path / "nowhere")))
    root = _root(tmp_path)  # images/ but no problems.json
    with pytest.raises(SourceLayoutError, match="problems.json"):
        reader.check_layout(root)
    only_problems = Root(str(tmp_path / "only"))
    DemoWriter(only_problems, 0).json("problems.json", {})
    with pytest.raises(SourceLayoutError, match="images"):
        reader.check_layout(only_problems)


def test_problems_file_that_is_not_json_is_one_reject(tmp_path):
    items = _read(_root(tmp_path, "<html>not json</html>"))
    assert [(type(i), i.native_id, i.reason, i.location) for i in items] == [
        (Reject, None, "unreadable_file", "problems.json")]


def test_truncated_problems_file_keeps_the_rows_before_the_break(tmp_path):
    text = '{"1": ' + json.dumps(_good()) + ', "2": {"question": "cut'
    items = _read(_root(tmp_path, text))
    assert [type(i) for i in items] == [Sample, Reject]
    assert items[0].native_id == "1" and items[1].reason == "unreadable_file"


def test_bad_records_become_rejects_with_reasons(tmp_path):
    problems = {
        "1": _good(),
        "2": _good(choices="a or b"),
        "3": {k: v for k, v in _good().items() if k != "question"},
        "4": _good(answer="1"),
        "5": _good(answer=True),
        "6": _good(answer=5),
        "7": _good(answer=-1),
        "8": _good(choices=["only one"]),
        "9": _good(image=["image.png"]),
        "10": _good(image="../../etc/passwd"),
        "11": [1, 2, 3],
        "12": _good(hint=7),
        "13": {k: v for k, v in _good().items() if k != "split"},  # and no pid_splits.json
        "14": _good(image=None, hint="Read the passage."),
    }
    items = _read(_root(tmp_path, json.dumps(problems)))
    got = [(i.native_id, i.reason if isinstance(i, Reject) else "sample") for i in items]
    assert got == [
        ("1", "sample"), ("2", "malformed_record"), ("3", "malformed_record"), ("4", "malformed_record"),
        ("5", "malformed_record"), ("6", "bad_option_index"), ("7", "bad_option_index"),
        ("8", "malformed_record"), ("9", "malformed_record"), ("10", "malformed_record"),
        ("11", "malformed_record"), ("12", "malformed_record"), ("13", "malformed_record"), ("14", "sample"),
    ]
    text_only = items[-1]
    assert text_only.image_path is None and text_only.hints == ["Read the passage."]
    assert text_only.conversations[0]["value"] == "<image>\nQ?\nContext: Read the passage.\nOptions:\nA. a\nB. b"


def test_text_only_problems_are_quarantined_as_no_image(tmp_path):
    root = _root(tmp_path, json.dumps({"1": _good(), "2": _good(image=None)}))
    DemoWriter(root, 0).json("pid_splits.json", {"train": ["1", "2"], "val": [], "test": []})
    out = Root(str(tmp_path / "out"))
    summary = ingest_source("scienceqa", root, out)
    assert summary.rows == 1 and summary.quarantined == {"no_image": 1}
    rejects = pq.read_table(out.path("quarantine.parquet")).to_pylist()
    assert [(r["native_id"], r["reason"]) for r in rejects] == [("2", "no_image")]


