"""Embedded CLEVR sample: scene graphs first, then drawn, then questions answered from the graph.

Each scene is a list of objects (shape, colour, size, material, position); the picture is drawn
from it (pseudo-3-D cubes, spheres and cylinders; metal objects carry a specular highlight), and
every answer is computed from the same list, so it is true for the picture. The scene drawing and
the scene graph are shared with the CLEVR-Math sample.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

from pipeline.demo.common import COLOURS, DemoWriter, Planted, canvas

SHAPES = ("cube", "sphere", "cylinder")
SIZES = ("large", "small")
MATERIALS = ("rubber", "metal")
COLOUR_NAMES = ("gray", "red", "blue", "green", "brown", "purple", "cyan", "yellow")
RADIUS = {"large": 26, "small": 15}
WIDTH, HEIGHT = 320, 240


@dataclass(frozen=True)
class Obj:
    shape: str
    colour: str
    size: str
    material: str
    x: int
    y: int

    def to_scene(self) -> dict:
        """The object as CLEVR's scenes JSON spells it."""
        return {
            "shape": self.shape, "color": self.colour, "size": self.size, "material": self.material,
            "pixel_coords": [self.x, self.y, round(10.0 - self.y / 30.0, 2)],
        }


def make_scene(rng: random.Random, n_min: int = 3, n_max: int = 7) -> list[Obj]:
    """Objects on a coarse grid of floor slots, so no two overlap; sorted back to front."""
    slots = [(45 + 76 * c, 82 + 58 * r) for r in range(3) for c in range(4)]
    rng.shuffle(slots)
    n = rng.randint(n_min, n_max)
    objs = []
    for x, y in slots[:n]:
        objs.append(Obj(
            shape=rng.choice(SHAPES), colour=rng.choice(COLOUR_NAMES), size=rng.choice(SIZES),
            material=rng.choice(MATERIALS), x=x + rng.randint(-5, 5), y=y + rng.randint(-4, 4),
        ))
    return sorted(objs, key=lambda o: (o.y, o.x))


def _shade(rgb, factor: float):
    return tuple(max(0, min(255, int(c * factor))) for c in rgb)


def draw_object(d: ImageDraw.ImageDraw, o: Obj) -> None:
    r = RADIUS[o.size]
    base = COLOURS[o.colour]
    x, y = o.x, o.y
    d.ellipse([x - r, y + r - 6, x + r + 8, y + r + 6], fill=(150, 150, 150))  # shadow on the floor
    if o.shape == "sphere":
        d.ellipse([x - r, y - r, x + r, y + r], fill=base, outline=_shade(base, 0.6))
    elif o.shape == "cube":
        k = r // 2
        d.polygon([(x - r, y - r), (x - r + k, y - r - k), (x + r + k, y - r - k), (x + r, y - r)],
                  fill=_shade(base, 1.25), outline=_shade(base, 0.6))  # top face
        d.polygon([(x + r, y - r), (x + r + k, y - r - k), (x + r + k, y + r - k), (x + r, y + r)],
                  fill=_shade(base, 0.75), outline=_shade(base, 0.6))  # side face
        d.rectangle([x - r, y - r, x + r, y + r], fill=base, outline=_shade(base, 0.6))  # front face
    else:  # cylinder
        e = max(4, r // 3)
        d.ellipse([x - r, y + r - e, x + r, y + r + e], fill=_shade(base, 0.8), outline=_shade(base, 0.6))
        d.rectangle([x - r, y - r, x + r, y + r], fill=base)
        d.line([(x - r, y - r), (x - r, y + r)], fill=_shade(base, 0.6))
        d.line([(x + r, y - r), (x + r, y + r)], fill=_shade(base, 0.6))
        d.ellipse([x - r, y - r - e, x + r, y - r + e], fill=_shade(base, 1.25), outline=_shade(base, 0.6))
    if o.material == "metal":  # a specular highlight: shiny
        h = max(3, r // 4)
        hx, hy = x - r // 3, y - r // 3
        d.ellipse([hx - h, hy - h, hx + h, hy + h], fill=(250, 250, 250))


def draw_scene(objs: list[Obj]) -> Image.Image:
    im, d = canvas(WIDTH, HEIGHT, (205, 205, 200))
    d.rectangle([0, 0, WIDTH, 55], fill=(185, 185, 182))  # the back wall
    for o in sorted(objs, key=lambda o: (o.y, o.x)):
        draw_object(d, o)
    return im


# ---- question families over a scene graph (answers computed from the graph) ----------------


def _plural(shape: str) -> str:
    return shape + "s"


def _filters(**attrs) -> list[dict]:
    prog = [{"inputs": [], "function": "scene", "value_inputs": []}]
    for key in ("size", "color", "material", "shape"):
        if attrs.get(key):
            prog.append({"inputs": [len(prog) - 1], "function": f"filter_{key}", "value_inputs": [attrs[key]]})
    return prog


def _select(objs, **attrs) -> list[Obj]:
    names = {"color": "colour"}
    return [o for o in objs if all(getattr(o, names.get(k, k)) == v for k, v in attrs.items() if v)]


def clevr_questions(rng: random.Random, objs: list[Obj]) -> list[tuple[int, str, str, list]]:
    """Candidate (family, question, answer, program) tuples, every answer true for `objs`."""
    out = []
    present = [o.colour for o in objs]
    colour = rng.choice(present if rng.random() < 0.7 else COLOUR_NAMES)
    n = len(_select(objs, color=colour))
    prog = _filters(color=colour) + [{"inputs": [1], "function": "count", "value_inputs": []}]
    out.append((0, f"How many {colour} objects are there?", str(n), prog))

    shape = rng.choice(SHAPES)
    n = len(_select(objs, shape=shape))
    prog = _filters(shape=shape) + [{"inputs": [1], "function": "count", "value_inputs": []}]
    out.append((1, f"How many {_plural(shape)} are there?", str(n), prog))

    colour, shape = rng.choice(COLOUR_NAMES), rng.choice(SHAPES)
    hit = bool(_select(objs, color=colour, shape=shape))
    prog = _filters(color=colour, shape=shape) + [{"inputs": [2], "function": "exist", "value_inputs": []}]
    out.append((2, f"Are there any {colour} {_plural(shape)}?", "yes" if hit else "no", prog))

    uniques = [o for o in objs if len(_select(objs, size=o.size, shape=o.shape)) == 1]
    if uniques:
        o = rng.choice(uniques)
        prog = _filters(size=o.size, shape=o.shape) + [
            {"inputs": [2], "function": "unique", "value_inputs": []},
            {"inputs": [3], "function": "query_color", "value_inputs": []}]
        out.append((3, f"What color is the {o.size} {o.shape}?", o.colour, prog))

    uniques = [o for o in objs if len(_select(objs, color=o.colour)) == 1]
    if uniques:
        o = rng.choice(uniques)
        prog = _filters(color=o.colour) + [
            {"inputs": [1], "function": "unique", "value_inputs": []},
            {"inputs": [2], "function": "query_shape", "value_inputs": []}]
        out.append((4, f"What shape is the {o.colour} object?", o.shape, prog))

    a, b = rng.sample(list(SHAPES), 2)
    more = len(_select(objs, shape=a)) > len(_select(objs, shape=b))
    prog = (_filters(shape=a) + [{"inputs": [1], "function": "count", "value_inputs": []},
                                 {"inputs": [], "function": "scene", "value_inputs": []},
                                 {"inputs": [3], "function": "filter_shape", "value_inputs": [b]},
                                 {"inputs": [4], "function": "count", "value_inputs": []},
                                 {"inputs": [2, 5], "function": "greater_than", "value_inputs": []}])
    out.append((5, f"Are there more {_plural(a)} than {_plural(b)}?", "yes" if more else "no", prog))

    size, material = rng.choice(SIZES), rng.choice(MATERIALS)
    n = len(_select(objs, size=size, material=material))
    prog = _filters(size=size, material=material) + [{"inputs": [2], "function": "count", "value_inputs": []}]
    out.append((6, f"How many {size} {material} objects are there?", str(n), prog))

    uniques = [o for o in objs if len(_select(objs, color=o.colour, shape=o.shape)) == 1]
    if uniques:
        o = rng.choice(uniques)
        prog = _filters(color=o.colour, shape=o.shape) + [
            {"inputs": [2], "function": "unique", "value_inputs": []},
            {"inputs": [3], "function": "query_material", "value_inputs": []}]
        out.append((7, f"What material is the {o.colour} {o.shape}?", o.material, prog))
    return out


# ---- the CLEVR sample -----------------------------------------------------------------------

SPLIT_IMAGES = {"train": 5, "val": 3, "test": 2}
PER_IMAGE = 3


def image_name(split: str, index: int) -> str:
    return f"CLEVR_{split}_{index:06d}.png"


def write(w: DemoWriter) -> list[Planted]:
    planted: list[Planted] = []
    for split, count in SPLIT_IMAGES.items():
        questions, scenes = [], []
        for index in range(count):
            objs = make_scene(w.rng)
            fname = image_name(split, index)
            w.image(f"images/{split}/{fname}", draw_scene(objs))
            scenes.append({"image_index": index, "image_filename": fname, "split": split,
                           "objects": [o.to_scene() for o in objs]})
            cands = clevr_questions(w.rng, objs)
            for family, question, answer, program in w.rng.sample(cands, PER_IMAGE):
                q = {"image_index": index, "image_filename": fname, "split": split, "question": question,
                     "answer": answer, "question_family_index": family,
                     "question_index": len(questions), "program": program}
                if split == "test":  # the public test file has no answers (nor programs)
                    q.pop("answer")
                    q.pop("program")
                questions.append(q)
        if split == "train":
            planted += _plant_bad_rows(w, questions)
        info = {"split": split, "license": "Creative Commons Attribution (CC BY 4.0)",
                "version": "1.0", "date": "2/14/2017"}
        w.json(f"questions/CLEVR_{split}_questions.json", {"info": info, "questions": questions})
        if split != "test":
            w.json(f"scenes/CLEVR_{split}_scenes.json", {"info": info, "scenes": scenes})
    return planted


def _plant_bad_rows(w: DemoWriter, questions: list[dict]) -> list[Planted]:
    """Bad rows of every kind CLEVR's format can express, appended to the train questions."""
    planted = []
    base = dict(questions[0])

    def add(reason: str, **changes) -> None:
        q = {**base, "question_index": len(questions), **changes}
        for key in [k for k, v in changes.items() if v is _DROP]:
            q.pop(key)
        questions.append(q)
        planted.append(Planted(f"train/{q['question_index']}", reason))

    missing = image_name("train", 90)  # never written
    add("missing_image", image_index=90, image_filename=missing)
    broken = image_name("train", 91)
    w.corrupt_image(f"images/train/{broken}")
    add("unreadable_image", image_index=91, image_filename=broken)
    add("malformed_record", answer=_DROP)  # the answer field is missing
    add("malformed_record", answer=["3"])  # wrong type
    add("malformed_record", question=7)  # wrong type
    add("empty_question", question="   ")
    add("no_image", image_index=_DROP, image_filename=_DROP)  # the record names no image at all
    dup = {**questions[1]}  # the same question_index as a good row: a duplicate id
    questions.append(dup)
    planted.append(Planted(f"train/{dup['question_index']}", "duplicate_id"))
    return planted


class _Drop:
    def __repr__(self) -> str:
        return "<drop>"


_DROP = _Drop()
