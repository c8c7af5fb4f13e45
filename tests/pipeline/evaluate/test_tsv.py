import base64
import io

import pytest
from PIL import Image

from pipeline.evaluate.tsv import TsvTable, read_items, tsv_bytes
from tests.pipeline.evaluate.helpers import png_b64, write

HEADER = ["index", "image", "question", "hint", "A", "B", "C", "D", "answer", "category", "l2-category", "split", "source"]


def _colour(item):
    return item.image().convert("RGB").getpixel((0, 0))


def test_base64_reference_and_missing_options(tmp_path):
    big = png_b64((10, 200, 30), size=(300, 300))
    rows = [
        {"index": 0, "image": png_b64((200, 0, 0)), "question": "Q0", "hint": "a hint", "A": "x", "B": "y", "C": "", "D": "",
         "answer": "A", "category": "c", "l2-category": "L", "split": "dev", "source": "s0"},
        # image by reference to a later row (VLMEvalKit resolves the whole map first)
        {"index": 1, "image": "2", "question": "Q1", "hint": "nan", "A": "p", "B": "q", "C": "r", "D": "NaN",
         "answer": "C", "category": "c", "l2-category": "L", "split": "dev", "source": "s1"},
        {"index": 2, "image": big, "question": "Q2\nwith a new line\tand a tab", "hint": "", "A": "1", "B": "2", "C": "3",
         "D": "4", "answer": "D", "category": "d", "l2-category": "L2", "split": "dev", "source": "s2"},
        {"index": 3, "image": "", "question": "no image", "hint": "", "A": "u", "B": "v", "C": "", "D": "",
         "answer": "B", "category": "d", "l2-category": "L2", "split": "dev", "source": "s3"},
    ]
    items = read_items(write(tmp_path, "t", HEADER, rows), "MMStar")
    assert [it.index for it in items] == ["0", "1", "2", "3"]
    a, b, c, d = items
    assert a.options == {"A": "x", "B": "y"}  # empty options dropped
    assert b.options == {"A": "p", "B": "q", "C": "r"}  # "NaN" dropped
    assert a.hint == "a hint" and b.hint == "" and c.hint == ""
    assert c.question == "Q2\nwith a new line\tand a tab"
    assert _colour(a) == (200, 0, 0)
    assert _colour(b) == (10, 200, 30)  # resolved through index 2
    assert _colour(c) == (10, 200, 30)
    assert not d.has_image and d.image() is None
    assert a.extra == {"source": "s0"} and a.category == "c" and a.l2_category == "L" and a.split == "dev"


def test_images_are_read_lazily_and_large_fields_pass(tmp_path):
    # a 600x600 noise PNG: its base64 exceeds csv's default field limit of 131072 characters
    import random

    rng = random.Random(0)
    im = Image.frombytes("RGB", (600, 600), bytes(rng.getrandbits(8) for _ in range(600 * 600 * 3)))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    payload = base64.b64encode(buf.getvalue()).decode()
    assert len(payload) > 131072
    rows = [{"index": 7, "image": payload, "question": "q", "answer": "A", "A": "a", "B": "b"}]
    path = write(tmp_path, "big", ["index", "image", "question", "answer", "A", "B"], rows)
    table = TsvTable(path)
    items = table.items("x")
    # the item keeps no payload, only where the row starts
    assert "image" not in items[0].extra and items[0]._images.row_offset > 0
    assert items[0].image_bytes()[0] == buf.getvalue()


def test_reference_chain_multi_image_bom_and_float_index(tmp_path):
    two = f"['{png_b64((1, 2, 3))}', '{png_b64((4, 5, 6))}']"
    rows = [
        {"index": "10.0", "image": two, "question": "two images", "answer": "x"},
        {"index": "11", "image": "10", "question": "ref", "answer": "y"},
        {"index": "12", "image": "11", "question": "ref of ref", "answer": "z"},
    ]
    p = tmp_path / "bom.tsv"
    p.write_bytes(b"\xef\xbb\xbf" + tsv_bytes(["index", "image", "question", "answer"], rows))
    items = read_items(str(p))
    assert [it.index for it in items] == ["10", "11", "12"]
    assert [im.getpixel((0, 0)) for im in items[2].images()] == [(1, 2, 3), (4, 5, 6)]


def test_dangling_reference_and_missing_index_column(tmp_path):
    items = read_items(write(tmp_path, "d", ["index", "image", "question", "answer"],
                             [{"index": 0, "image": "99", "question": "q", "answer": "a"}]))
    with pytest.raises(KeyError):
        items[0].image_bytes()
    with pytest.raises(ValueError):
        read_items(write(tmp_path, "n", ["id", "question"], [{"id": 0, "question": "q"}]))


def test_more_than_four_options(tmp_path):
    header = ["index", "question", "A", "B", "C", "D", "E", "F", "answer"]
    items = read_items(write(tmp_path, "e", header, [{"index": 0, "question": "q", "A": "1", "B": "2", "C": "3", "D": "4",
                                                      "E": "5", "F": "", "answer": "E"}]))
    assert list(items[0].options) == ["A", "B", "C", "D", "E"]
