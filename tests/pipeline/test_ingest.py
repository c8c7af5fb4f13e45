"""The central checks every source shares, on a toy reader registered only for these tests."""
import io

import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline import ingest, tables
from pipeline.sources import _REGISTRY, register
from pipeline.sources.base import Reader, Sample, single_turn
from pipeline.storage import Root


class ToyReader(Reader):
    name = "toy_for_tests"
    required = (("rows.txt",),)

    def read(self, root):
        with root.open("rows.txt", "r") as f:
            for line in f:
                nid, image, question, answer = line.rstrip("\n").split("|")
                if nid == "BOOM":
                    raise RuntimeError("reader failed half way")
                yield Sample(self.name, nid, "train", image or None, question, answer, single_turn(question, answer))


if ToyReader.name not in _REGISTRY:
    register(ToyReader)


def png_bytes():
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (255, 0, 0)).save(buf, format="PNG")
    return buf.getvalue()


def make_source(tmp_path, lines):
    src = tmp_path / "src"
    (src / "img").mkdir(parents=True)
    (src / "img" / "ok.png").write_bytes(png_bytes())
    (src / "img" / "bad.png").write_bytes(b"not an image")
    (src / "rows.txt").write_text("\n".join(lines) + "\n")
    return Root(str(src))


GOOD = ["1|img/ok.png|How many?|3", "2|img/ok.png|What colour?|red"]
BAD = [
    "3|img/ok.png|   |3",  # empty question
    "4|img/ok.png|Why?|",  # empty answer
    "5||What is it?|a cat",  # no image
    "6|img/nope.png|Where?|here",  # missing image
    "7|img/bad.png|Which?|that",  # unreadable image
    "1|img/ok.png|Again?|dup",  # duplicate id
]


def test_central_checks_quarantine_each_kind(tmp_path):
    out = Root(str(tmp_path / "out"))
    s = ingest.ingest_source(ToyReader.name, make_source(tmp_path, GOOD + BAD), out)
    assert s.rows == 2
    assert s.quarantined == {
        "duplicate_id": 1, "empty_answer": 1, "empty_question": 1,
        "missing_image": 1, "no_image": 1, "unreadable_image": 1,
    }
    q = pq.read_table(out.path("quarantine.parquet")).to_pylist()
    assert {(r["native_id"], r["reason"]) for r in q} == {
        ("3", "empty_question"), ("4", "empty_answer"), ("5", "no_image"),
        ("6", "missing_image"), ("7", "unreadable_image"), ("1", "duplicate_id"),
    }
    assert all(r["detail"] and r["record"] for r in q)  # a reason a person can read, and the row
    rows = pq.read_table(out.path("samples.parquet")).to_pylist()
    assert [r["id"] for r in rows] == ["toy_for_tests/1", "toy_for_tests/2"]
    assert rows[0]["conversations"] == [
        {"from": "human", "value": "<image>\nHow many?"}, {"from": "gpt", "value": "3"}]
    assert s.images_checked == 3  # ok.png checked once although used by four rows


def test_content_hash_is_stable_and_tracks_content(tmp_path):
    a = ingest.ingest_source(ToyReader.name, make_source(tmp_path / "a", GOOD), Root(str(tmp_path / "oa")))
    b = ingest.ingest_source(ToyReader.name, make_source(tmp_path / "b", GOOD), Root(str(tmp_path / "ob")))
    c = ingest.ingest_source(ToyReader.name, make_source(tmp_path / "c", GOOD[:1]), Root(str(tmp_path / "oc")))
    assert a.content_hash == b.content_hash != c.content_hash


def test_many_rows_span_batches(tmp_path, monkeypatch):
    monkeypatch.setattr(tables, "BATCH_ROWS", 7)
    lines = [f"{i}|img/ok.png|q{i}|a{i}" for i in range(50)]
    out = Root(str(tmp_path / "out"))
    s = ingest.ingest_source(ToyReader.name, make_source(tmp_path, lines), out)
    assert s.rows == 50
    assert pq.read_table(out.path("samples.parquet")).column("answer").to_pylist() == [f"a{i}" for i in range(50)]


def test_a_failing_read_leaves_the_previous_output_and_no_partial_file(tmp_path):
    out = Root(str(tmp_path / "out"))
    ingest.ingest_source(ToyReader.name, make_source(tmp_path / "one", GOOD), out)
    before = (tmp_path / "out" / "samples.parquet").read_bytes()
    with pytest.raises(RuntimeError):
        ingest.ingest_source(ToyReader.name, make_source(tmp_path / "two", GOOD + ["BOOM|x|y|z"]), out)
    assert (tmp_path / "out" / "samples.parquet").read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["quarantine.parquet", "samples.parquet", "summary.json"]


def test_wrong_layout_names_what_was_expected(tmp_path):
    from pipeline.sources.base import SourceLayoutError

    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceLayoutError, match="rows.txt"):
        ingest.ingest_source(ToyReader.name, Root(str(tmp_path / "empty")), Root(str(tmp_path / "out")))
    with pytest.raises(SourceLayoutError, match="does not exist"):
        ingest.ingest_source(ToyReader.name, Root(str(tmp_path / "absent")), Root(str(tmp_path / "out")))


def jpeg_bytes(size=(64, 48)):
    """A photo-like JPEG (noise): its compressed data is most of the file."""
    import random

    rng = random.Random(0)
    im = Image.new("RGB", size)
    im.putdata([(rng.randrange(256), rng.randrange(256), rng.randrange(256)) for _ in range(size[0] * size[1])])
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def test_a_truncated_jpeg_is_quarantined_though_verify_passes(tmp_path):
    """`Image.verify()` does not read JPEG data: a cut file passes it. The full decode does not."""
    src = make_source(tmp_path, ["1|img/ok.jpg|How many?|3", "2|img/cut.jpg|What colour?|red"])
    whole = jpeg_bytes()
    (tmp_path / "src" / "img" / "ok.jpg").write_bytes(whole)
    (tmp_path / "src" / "img" / "cut.jpg").write_bytes(whole[: len(whole) * 2 // 3])
    with Image.open(io.BytesIO(whole[: len(whole) * 2 // 3])) as im:
        im.verify()  # the old check: no complaint
    out = Root(str(tmp_path / "out"))
    summary = ingest.ingest_source("toy_for_tests", src, out)
    rejects = pq.read_table(out.path("quarantine.parquet")).to_pylist()
    assert summary.rows == 1 and [(r["native_id"], r["reason"]) for r in rejects] == [("2", "unreadable_image")]
    assert "truncated" in rejects[0]["detail"]
    (row,) = pq.read_table(out.path("samples.parquet")).to_pylist()
    import hashlib

    assert (row["image_width"], row["image_height"], row["image_sha256"]) == (64, 48, hashlib.sha256(whole).hexdigest())


def test_decode_limits_refuse_bombs_before_decoding(tmp_path, monkeypatch):
    from pipeline import images

    src = make_source(tmp_path, ["1|img/big.png|How many?|3"])
    Image.new("L", (300, 300), 0).save(tmp_path / "src" / "img" / "big.png")
    monkeypatch.setattr(images, "MAX_IMAGE_PIXELS", 300 * 300 - 1)
    out = Root(str(tmp_path / "out"))
    summary = ingest.ingest_source("toy_for_tests", src, out)
    (r,) = pq.read_table(out.path("quarantine.parquet")).to_pylist()
    assert summary.rows == 0 and r["reason"] == "unreadable_image" and "above the decode limit" in r["detail"]


def test_decode_verdicts_are_cached_by_path_size_and_stamp(tmp_path):
    src = make_source(tmp_path, GOOD)
    cache = Root(str(tmp_path / "cache"))
    first = ingest.ingest_source("toy_for_tests", src, Root(str(tmp_path / "a")), cache=cache)
    again = ingest.ingest_source("toy_for_tests", src, Root(str(tmp_path / "b")), cache=cache)
    assert (first.images_decoded, again.images_decoded) == (1, 0) and again.content_hash == first.content_hash
    (tmp_path / "src" / "img" / "ok.png").write_bytes(b"now broken")  # a changed file is decoded again
    changed = ingest.ingest_source("toy_for_tests", src, Root(str(tmp_path / "c")), cache=cache)
    assert changed.images_decoded == 1 and changed.rows == 0 and changed.quarantined == {"unreadable_image": 2}


def test_a_reader_yielding_nothing_still_writes_both_tables(tmp_path):
    src = make_source(tmp_path, [])
    (tmp_path / "src" / "rows.txt").write_text("")
    summary = ingest.ingest_source("toy_for_tests", src, Root(str(tmp_path / "out")))
    assert summary.rows == 0 and summary.rows_read == 0
