import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from pipeline import schema
from pipeline.dataset import SourceInput, assemble, split_of
from pipeline.stages import render
from pipeline.storage import Root

ANSWER = render({"summary": "Look at the picture.", "caption": "A red square.", "reasoning": "It is red.",
                 "conclusion": "red"})


def png(colour):
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), colour).save(buf, format="PNG")
    return buf.getvalue()


def row(i, image, question, source="clevr"):
    return {"id": f"{source}/{i}", "source": source, "split": "train", "image_path": image, "question": question,
            "answer": "red", "options": [], "hints": [],
            "conversations": [{"from": "human", "value": f"<image>\n{question}"}, {"from": "gpt", "value": ANSWER}],
            "meta": json.dumps({"teacher_model": "m", "prompt_version": "v1"})}


def make_source(tmp_path, name, rows, images):
    root = tmp_path / "raw" / name
    root.mkdir(parents=True)
    for rel, data in images.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    path = tmp_path / f"{name}.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=schema.SAMPLE), path)
    return SourceInput(name, str(path), Root(str(root)))


def test_dedup_keeps_one_of_each_duplicate_and_rejects_bad_images(tmp_path):
    clevr = make_source(tmp_path, "clevr", [
        row(1, "a.png", "What colour is it?"),
        row(2, "copy_of_a.png", "What  colour is it"),  # same bytes, same normalised question
        row(3, "a.png", "How many squares?"),  # same image, other question: kept
        row(4, "broken.png", "What colour?"),
        row(5, "gone.png", "What colour?"),
    ], {"a.png": png((255, 0, 0)), "copy_of_a.png": png((255, 0, 0)), "broken.png": b"not a png"})
    pisc = make_source(tmp_path, "pisc", [row(1, "b.png", "What colour is it?", source="pisc"),
                                          row(2, "a.png", "What colour is it?", source="pisc")],
                       {"b.png": png((0, 0, 255)), "a.png": png((255, 0, 0))})
    out = Root(str(tmp_path / "out"))
    s = assemble([clevr, pisc], out, out.fs, validation_fraction=0.0, export=False)
    rejects = {r["sample_id"]: (r["reason"], r["detail"]) for r in pq.read_table(out.path("rejects.parquet")).to_pylist()}
    assert rejects["clevr/2"][0] == "duplicate" and "clevr/1" in rejects["clevr/2"][1]
    assert rejects["pisc/2"][0] == "duplicate"  # across sources too: the first source keeps it
    assert rejects["clevr/4"][0] == "image_unreadable" and rejects["clevr/5"][0] == "image_unreadable"
    assert s.rows == {"train": 3, "validation": 0}
    kept = [r["id"] for info in s.shards for r in pq.read_table(out.path(info["name"])).to_pylist()]
    assert kept == ["clevr/1", "clevr/3", "pisc/1"]


def test_split_is_deterministic_and_near_the_fraction():
    ids = [f"s/{i}" for i in range(5000)]
    val = [i for i in ids if split_of(i, 0.1) == "validation"]
    assert val == [i for i in ids if split_of(i, 0.1) == "validation"]
    assert 400 < len(val) < 600
    assert {split_of(i, 0.1, seed=1) for i in val} == {"train", "validation"}  # the seed reshuffles
