"""ShareGPT4V reader: the embedded sample end to end, determinism, broken inputs, LLaVA specifics."""
from __future__ import annotations

import json
import re

import pytest
from PIL import Image

from pipeline.demo import write_source
from pipeline.demo.common import COLOURS
from pipeline.demo.sharegpt4v import CAPTION_STEM, MIX_STEM
from pipeline.ingest import ingest_source
from pipeline.quarantine import Reject
from pipeline.sources import SourceLayoutError, get_reader
from pipeline.sources.base import Sample, Skip
from pipeline.storage import Root
from tests.pipeline.sources.helpers import expand, ingest_demo, reject_key

SOURCE = "sharegpt4v"


def _ingest(tmp_path, seed=0):
    return ingest_demo(SOURCE, tmp_path, seed)


_key = reject_key


def test_demo_ingests_with_exact_rows_and_planted_rejects(tmp_path):
    _, planted, summary, rows, rejects = _ingest(tmp_path)
    assert summary.rows == 26 == len(rows)
    assert summary.splits == {"train": 26}
    assert _key((r["native_id"], r["reason"]) for r in rejects) == _key((p.native_id, p.reason) for p in planted)
    assert {p.reason for p in planted} == {
        "missing_image", "unreadable_image", "malformed_record", "empty_question", "empty_answer",
        "no_image", "duplicate_id",
    }

    r = rows[f"sharegpt4v/{CAPTION_STEM}/000000000139"]
    assert r["source"] == SOURCE and r["split"] == "train"
    assert r["image_path"] == "coco/train2017/000000000139.jpg"
    # the native first turn is "Describe this image in detail.\n<image>": the token moves to the front
    assert r["question"] == "Describe this image in detail."
    assert r["conversations"][0] == {"from": "human", "value": "<image>\nDescribe this image in detail."}
    assert r["conversations"][1] == {"from": "gpt", "value": r["answer"]}
    assert r["answer"].startswith("The image shows four simple flat shapes on a plain pale yellow background")
    assert r["options"] == [] and r["hints"] == []
    assert json.loads(r["meta"]) == {"file": CAPTION_STEM, "native_id": "000000000139", "turns": 1}

    # images from every collection are referenced relative to the data root
    folders = {row["image_path"].split("/")[0] for row in rows.values()}
    assert folders == {"coco", "sam", "llava", "wikiart"}


def test_multi_turn_conversations_keep_every_turn(tmp_path):
    _, _, _, rows, _ = _ingest(tmp_path)
    mix = {k: v for k, v in rows.items() if f"/{MIX_STEM}/" in k}
    assert len(mix) == 14
    assert sorted({len(r["conversations"]) for r in mix.values()}) == [2, 4, 6]
    r = rows[f"sharegpt4v/{MIX_STEM}/sa_2002"]  # three rounds
    turns = r["conversations"]
    assert [t["from"] for t in turns] == ["human", "gpt"] * 3
    assert turns[0]["value"] == "<image>\n" + r["question"]
    assert turns[1]["value"] == r["answer"]
    assert turns[2]["value"] == "How many shapes are in the picture?"
    assert "<image>" not in "".join(t["value"] for t in turns[1:])
    assert json.loads(r["meta"])["turns"] == 3


def test_captions_describe_the_drawn_image(tmp_path):
    """Each caption names shapes, colours and cells: the pixels at those cells have that colour."""
    src, _, _, rows, _ = _ingest(tmp_path)
    checked = 0
    for r in rows.values():
        if not r["answer"].startswith("The image shows"):
            continue
        with src.open(r["image_path"], "rb") as f:
            im = Image.open(f).convert("RGB")
        cells = {"upper left": (0, 0), "upper right": (0, 1), "lower left": (1, 0), "lower right": (1, 1)}
        found = re.findall(r"a (\w+) (circle|square|triangle) in the (upper left|upper right|lower left|lower right)", r["answer"])
        assert found
        for colour, _, cell in found:
            row, col = cells[cell]
            # a point inside every shape kind: low centre of the cell
            x, y = col * 120 + 60, row * 120 + 80
            px = im.getpixel((x, y))
            assert all(abs(a - b) < 40 for a, b in zip(px, COLOURS[colour])), (r["id"], cell, px, colour)
        checked += 1
    assert checked == 12


def test_same_seed_gives_identical_files(tmp_path):
    a, b = Root(str(tmp_path / "a")), Root(str(tmp_path / "b"))
    write_source(SOURCE, a, seed=3)
    write_source(SOURCE, b, seed=3)
    files_a = {p: a.open(p).read() for p, _ in a.walk_files()}
    files_b = {p: b.open(p).read() for p, _ in b.walk_files()}
    assert files_a == files_b and len(files_a) > 20
    c = Root(str(tmp_path / "c"))
    write_source(SOURCE, c, seed=4)
    assert {p: c.open(p).read() for p, _ in c.walk_files()} != files_a


def test_missing_folder_and_wrong_layout_raise(tmp_path):
    reader = get_reader(SOURCE)
    with pytest.raises(SourceLayoutError, match="sharegpt4v/\\*.json"):
        reader.check_layout(Root(str(tmp_path / "nope")))
    (tmp_path / "wrong" / "coco").mkdir(parents=True)
    (tmp_path / "wrong" / "data.jsonl").write_text("{}\n")
    with pytest.raises(SourceLayoutError, match="sharegpt4v/\\*.json"):
        reader.check_layout(Root(str(tmp_path / "wrong")))


def _read(tmp_path, name, payload, where="sharegpt4v"):
    folder = tmp_path / "src" / where if where else tmp_path / "src"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(payload if isinstance(payload, str) else json.dumps(payload))
    root = Root(str(tmp_path / "src"))
    reader = get_reader(SOURCE)
    reader.check_layout(root)
    return expand(reader.read(root))


def test_broken_inputs_become_rejects(tmp_path):
    ok = {"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "A cat."}
    items = _read(tmp_path, "x.json", [
        {"id": "a", "image": "coco/train2017/1.jpg"},  # no conversations
        {"id": "b", "image": 7, "conversations": list(ok)},  # image not a string
        {"id": "c", "image": "i.jpg", "conversations": [ok[0], {"from": "gpt", "value": None}]},
        {"id": "d", "image": "i.jpg", "conversations": [ok[1], ok[0]]},  # starts with gpt
        {"id": "e", "image": "i.jpg", "conversations": [ok[0], ok[1], {"from": "human", "value": "More?"},
                                                          {"from": "gpt", "value": "  "}]},  # empty later turn
        {"id": "f", "image": "i.jpg", "conversations": [ok[0], "not a turn"]},
        {"image": "i.jpg", "conversations": list(ok)},  # no id
        ["not", "a", "record"],
        {"id": 12, "image": "./coco//train2017/12.jpg", "conversations": list(ok)},  # int id, messy path
    ])
    rejects = sorted((i for i in items if isinstance(i, Reject)), key=lambda r: r.location)
    assert [(r.native_id, r.reason) for r in rejects] == [
        ("x/a", "malformed_record"), ("x/b", "malformed_record"), ("x/c", "malformed_record"),
        ("x/d", "malformed_record"), ("x/e", "malformed_record"), ("x/f", "malformed_record"),
        (None, "malformed_record"), (None, "malformed_record"),
    ]
    assert "alternate" in rejects[3].detail and rejects[3].location == "sharegpt4v/x.json[3]"
    assert "not an object" in rejects[7].detail  # the list: never handed to Arrow's reader
    (good,) = [i for i in items if isinstance(i, Sample)]
    assert good.native_id == "x/12" and good.image_path == "coco/train2017/12.jpg"
    assert good.question == "What is it?" and good.answer == "A cat."


def test_a_file_cut_short_keeps_its_rows_and_other_files_still_read(tmp_path):
    _read(tmp_path, "good.json", [{"id": "1", "image": "a.jpg", "conversations": [
        {"from": "human", "value": "<image>\nQ?"}, {"from": "gpt", "value": "A."}]}], where="")
    cut = json.dumps([{"id": str(i), "image": "a.jpg", "conversations": [
        {"from": "human", "value": "<image>\nQ?"}, {"from": "gpt", "value": "A."}]} for i in range(3)])[:-40]
    items = _read(tmp_path, "broken.json", cut)
    rejects = [i for i in items if isinstance(i, Reject)]
    assert [(r.native_id, r.reason, r.location) for r in rejects] == [(None, "unreadable_file", "sharegpt4v/broken.json")]
    assert "2 records before it were read" in rejects[0].detail and rejects[0].rows is None
    # a top-level file is read too (plain LLaVA layout), named by its own stem
    assert [i.native_id for i in items if isinstance(i, Sample)] == ["broken/0", "broken/1", "good/1"]


def test_json_files_that_are_not_llava_records_are_skipped_and_reported(tmp_path):
    """The real data/ folder holds other datasets' JSON (COCO instances, a TextVQA file, ...)."""
    _read(tmp_path, "good.json", [{"id": "1", "image": "a.jpg", "conversations": [
        {"from": "human", "value": "<image>\nQ?"}, {"from": "gpt", "value": "A."}]}])
    _read(tmp_path, "instances_train2017.json", {"images": [], "annotations": [], "categories": []}, where="")
    _read(tmp_path, "captions.json", [{"image_id": 1, "caption": "a cat"}], where="")
    items = _read(tmp_path, "notes.json", "this is not json {", where="")
    skips = sorted((i.location, i.reason) for i in items if isinstance(i, Skip))
    assert [loc for loc, _ in skips] == ["captions.json", "instances_train2017.json", "notes.json"]
    assert all(reason.startswith("not ShareGPT4V/LLaVA records") for _, reason in skips)
    assert [i.native_id for i in items if isinstance(i, Sample)] == ["good/1"]
    assert not [i for i in items if isinstance(i, Reject)]
    # in sharegpt4v/ every file is this dataset's: an unreadable one is a reject, never a skip
    items = _read(tmp_path, "broken.json", "this is not json {")
    assert [(i.location, i.reason) for i in items if isinstance(i, Reject)] == [("sharegpt4v/broken.json", "unreadable_file")]


def test_text_only_records_are_read_then_quarantined_as_no_image(tmp_path):
    items = _read(tmp_path, "mix.json", [{"id": "t1", "conversations": [
        {"from": "human", "value": "Write a poem."}, {"from": "gpt", "value": "Roses."}]}])
    (s,) = items
    assert isinstance(s, Sample) and s.image_path is None and s.question == "Write a poem."
    out = Root(str(tmp_path / "out"))
    summary = ingest_source(SOURCE, Root(str(tmp_path / "src")), out)
    assert summary.rows == 0 and summary.quarantined == {"no_image": 1}


def test_hidden_files_are_not_annotation_files(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / ".demo.json").write_text(json.dumps({"demo_version": "1", "planted": []}))
    with pytest.raises(SourceLayoutError, match="sharegpt4v/\\*.json"):  # the marker alone is no layout
        get_reader(SOURCE).check_layout(Root(str(tmp_path / "src")))
    items = _read(tmp_path, "a.json", [])
    assert items == []


def test_json_records_equal_json_load_on_long_values_and_many_records(tmp_path):
    """Long values, escapes and many records: what the JSON path yields equals json.load of the file."""
    from pipeline.sources import jsonio

    records = [
        {"id": str(i), "image": f"coco/train2017/{i}.jpg", "conversations": [
            {"from": "human", "value": "<image>\n" + "q" * (i * 37 % 500) + "\u00e9\"\\"},
            {"from": "gpt", "value": "caf\u00e9 \U0001F600 " * (i % 50) + "end"}]}
        for i in range(300)
    ]
    folder = tmp_path / "src" / "sharegpt4v"
    folder.mkdir(parents=True)
    (folder / "big.json").write_text(json.dumps(records, indent=1, ensure_ascii=False), encoding="utf-8")
    root = Root(str(tmp_path / "src"))
    assert [r for _, r in jsonio.records(root, "sharegpt4v/big.json")] == records
    assert [s.native_id for s in _read(tmp_path, "big.json", records)] == [f"big/{i}" for i in range(300)]
