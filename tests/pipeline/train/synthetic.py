"""A small synthetic training set for the training tests: drawn images with counted circles and
four-stage answers, some rows without an image, written as real shards (ShardWriter + manifest)."""
from __future__ import annotations

import io
import random

from PIL import Image, ImageDraw

from pipeline.shards import ShardWriter, write_manifest
from pipeline.stages import render
from pipeline.storage import Root

COLOURS = {"red": (220, 30, 30), "blue": (30, 60, 220), "green": (30, 170, 60)}


def circles_png(n: int, colour: str, seed: int) -> bytes:
    rng = random.Random(seed)
    im = Image.new("RGB", (84, 56), (255, 255, 255))
    d = ImageDraw.Draw(im)
    for _ in range(n):
        x, y = rng.randint(2, 70), rng.randint(2, 42)
        d.ellipse((x, y, x + 12, y + 12), fill=COLOURS[colour])
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def image_row(i: int) -> dict:
    colour = list(COLOURS)[i % 3]
    n = 1 + i % 4
    answer = render({
        "summary": f"I will count the {colour} circles.",
        "caption": f"The image shows {n} {colour} circles.",
        "reasoning": f"There are {n} {colour} circles.",
        "conclusion": str(n),
    })
    return {"id": f"synthetic/img-{i}", "source": "synthetic", "image_bytes": circles_png(n, colour, i),
            "image_path": f"img-{i}.png",
            "conversations": [{"from": "human", "value": f"<image>\nHow many {colour} circles are there?"},
                              {"from": "gpt", "value": answer}]}


def text_row(i: int) -> dict:
    a, b = i % 5, 2 + i % 3
    answer = render({
        "summary": "I will add the two numbers.",
        "caption": "There is no image.",
        "reasoning": f"{a} + {b} = {a + b}.",
        "conclusion": str(a + b),
    })
    return {"id": f"synthetic/txt-{i}", "source": "synthetic", "image_bytes": None, "image_path": None,
            "conversations": [{"from": "human", "value": f"What is {a} + {b}?"},
                              {"from": "gpt", "value": answer}]}


# 16 rows. Read in order (--no-shuffle) by two ranks with batch 2, rank 0 gets rows 0-7 (images
# only) and rank 1 rows 8-15: text-only batches, mixed batches and an image batch, so at some steps
# one rank has images and the other none.
LAYOUT = "IIIIIIII" + "TTIT" + "TTII"


def rows(layout: str = LAYOUT) -> list[dict]:
    return [image_row(i) if kind == "I" else text_row(i) for i, kind in enumerate(layout)]


def write_shards(out_dir, layout: str = LAYOUT, row_group_rows: int = 4) -> str:
    root = Root(str(out_dir))
    with ShardWriter(root, "data/train", row_group_rows=row_group_rows, split="train") as w:
        for row in rows(layout):
            w.add(row)
    write_manifest(root, w.shards)
    return str(out_dir)
