"""Embedded GeoQA+ sample, in both released forms: the original pickles (Chinese problems with the
diagram as a grayscale numpy array) and Geo170K's English LLaVA instructions (`qa_tuning.json` +
`images/geoqa_plus/<n>.png`).

Each problem is drawn to scale from its own numbers (a triangle with the stated angles, parallel
lines cut at the stated angle, a circle with the stated central or inscribed angle, a 3-4-5 right
triangle), so the marked answer is the one the picture shows.
"""
from __future__ import annotations

import io
import json
import math
import pickle
import random
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw

from pipeline.demo.common import DemoWriter, Planted, font

W, H = 240, 180
INK = 0
INSTRUCTION = ("First perform reasoning, then finally select the question from the choices in the following "
               "format: Answer: xxx.")


@dataclass
class Problem:
    kind: str
    en: str
    zh: str
    value: float
    unit: str
    candidates: list
    reasoning: str
    draw: Callable[[ImageDraw.ImageDraw], None]
    numbers: list = field(default_factory=list)
    program: list = field(default_factory=list)
    points: list = field(default_factory=list)


def _label(d, xy, s, size=14):
    d.text(xy, s, fill=INK, font=font(size), anchor="mm")


def _dot(d, p, name, off=(0, 0)):
    d.ellipse([p[0] - 2, p[1] - 2, p[0] + 2, p[1] + 2], fill=INK)
    _label(d, (p[0] + off[0], p[1] + off[1]), name)


def _polar(o, r, deg):
    """A point at `deg` degrees (counter-clockwise from east, y up) from `o` on screen."""
    return (o[0] + r * math.cos(math.radians(deg)), o[1] - r * math.sin(math.radians(deg)))


def _arc(d, p, r, start, end):
    """An angle mark at p from screen direction `start` to `end` (degrees, counter-clockwise, y up)."""
    d.arc([p[0] - r, p[1] - r, p[0] + r, p[1] + r], -end, -start, fill=INK, width=1)


def triangle_sum(rng: random.Random) -> Problem:
    a, b = rng.choice(range(40, 81, 5)), rng.choice(range(35, 76, 5))
    c = 180 - a - b
    sa, sb, sc = (math.sin(math.radians(v)) for v in (a, b, c))
    base = min(180.0, 125 * sc / (sa * sb))
    A = ((W - base) / 2, 150.0)
    B = (A[0] + base, 150.0)
    C = _polar(A, base * sb / sc, a)

    def draw(d):
        d.polygon([A, B, C], outline=INK, width=2)
        _dot(d, A, "A", (-9, 6)), _dot(d, B, "B", (9, 6)), _dot(d, C, "C", (0, -10))
        _arc(d, A, 16, 0, a), _arc(d, B, 16, 180 - b, 180)
        _label(d, _polar(A, 32, a / 2), f"{a}°", 12), _label(d, _polar(B, 32, 180 - b / 2), f"{b}°", 12)

    return Problem("angle", f"As shown in the figure, in triangle ABC, angle A = {a}°, angle B = {b}°, then the "
                   "degree of angle C is ()", f"如图，在△ABC中，∠A={a}°，∠B={b}°，则∠C的度数是（）", c, "°",
                   [c + 10, c - 10, 180 - c, a, b, c + 20],
                   f"The three angles of a triangle add up to 180°, so angle C = 180° - {a}° - {b}° = {c}°.",
                   draw, [a, b], ["g_add", "N_0", "N_1", "g_minus", "C_3", "V_0"], ["三角形内角和"])


def parallel_lines(rng: random.Random) -> Problem:
    x = rng.choice(range(40, 76, 5))
    same_side = rng.random() < 0.5
    E = (rng.randint(130, 160), 55.0)
    F = (E[0] - 80 / math.tan(math.radians(x)), 135.0)
    answer = 180 - x if same_side else x

    def draw(d):
        d.line([(15, 55), (225, 55)], fill=INK, width=2)
        d.line([(15, 135), (225, 135)], fill=INK, width=2)
        ext = 28 / math.hypot(E[0] - F[0], 80)
        top = (E[0] + (E[0] - F[0]) * ext, E[1] - 80 * ext)
        bottom = (F[0] - (E[0] - F[0]) * ext, F[1] + 80 * ext)
        d.line([top, bottom], fill=INK, width=2)
        for p, n, off in (((15, 55), "A", (0, -10)), ((225, 55), "B", (0, -10)), ((15, 135), "C", (0, 10)),
                          ((225, 135), "D", (0, 10)), (E, "E", (8, -10)), (F, "F", (-8, 10))):
            _label(d, (p[0] + off[0], p[1] + off[1]), n)
        _arc(d, E, 14, 180, 180 + x)  # angle 1 = angle AEF
        _label(d, _polar(E, 24, 180 + x / 2), "1", 12)
        if same_side:  # angle 2 = angle EFC
            _arc(d, F, 14, x, 180)
            _label(d, _polar(F, 24, 90 + x / 2), "2", 12)
        else:  # angle 2 = angle EFD
            _arc(d, F, 14, 0, x)
            _label(d, _polar(F, 24, x / 2), "2", 12)

    return Problem("angle", f"As shown in the figure, AB parallel CD, the straight line EF intersects AB at point E "
                   f"and CD at point F. If angle 1 = {x}°, then the degree of angle 2 is ()",
                   f"如图，AB∥CD，直线EF分别交AB、CD于点E、F，若∠1={x}°，则∠2的度数为（）", answer, "°",
                   [180 - answer, answer + 10, 90 - x // 2, answer - 15, 2 * x],
                   (f"Angle 1 is angle AEF. Since AB is parallel to CD, angle EFC = 180° - {x}° = {180 - x}° and "
                    f"angle EFD = {x}°; angle 2 is angle {'EFC' if same_side else 'EFD'}, so it is {answer}°."),
                   draw, [x], ["g_minus", "C_3", "N_0"] if same_side else ["g_equal", "N_0"], ["平行线"])


def circle_diameter(rng: random.Random) -> Problem:
    x = rng.choice(range(20, 71, 5))
    O, r = (120.0, 100.0), 68.0
    A, B = (O[0] - r, O[1]), (O[0] + r, O[1])
    C = _polar(O, r, 180 - 2 * x)

    def draw(d):
        d.ellipse([O[0] - r, O[1] - r, O[0] + r, O[1] + r], outline=INK, width=2)
        d.polygon([A, B, C], outline=INK, width=2)
        _dot(d, O, "O", (0, 10)), _dot(d, A, "A", (-10, 0)), _dot(d, B, "B", (10, 0))
        _dot(d, C, "C", (0, -11))
        _arc(d, B, 18, 180 - x, 180)
        _label(d, _polar(B, 36, 180 - x / 2), f"{x}°", 12)

    return Problem("angle", f"As shown in the figure, AB is the diameter of circle O, point C is on circle O, angle "
                   f"ABC = {x}°, then the degree of angle BAC is ()",
                   f"如图，AB是⊙O的直径，点C在⊙O上，∠ABC={x}°，则∠BAC的度数为（）", 90 - x, "°",
                   [x, 180 - 2 * x, 90 - x + 10, 2 * x, 90 + x],
                   f"AB is a diameter, so angle ACB = 90°. Then angle BAC = 90° - {x}° = {90 - x}°.",
                   draw, [x], ["g_minus", "C_2", "N_0"], ["圆周角", "直角三角形"])


def right_triangle(rng: random.Random) -> Problem:
    k = rng.choice([1, 2, 3])
    s = 30.0
    C = (50.0, 155.0)
    A, B = (C[0], C[1] - 3 * s), (C[0] + 4 * s, C[1])

    def draw(d):
        d.polygon([A, B, C], outline=INK, width=2)
        d.rectangle([C[0], C[1] - 10, C[0] + 10, C[1]], outline=INK)
        _dot(d, A, "A", (-10, 0)), _dot(d, B, "B", (10, 0)), _dot(d, C, "C", (-10, 4))
        _label(d, (C[0] - 14, (A[1] + C[1]) / 2), str(3 * k), 12)
        _label(d, ((C[0] + B[0]) / 2, C[1] + 12), str(4 * k), 12)

    return Problem("length", f"As shown in the figure, in right triangle ABC, angle C = 90°, AC = {3 * k}, "
                   f"BC = {4 * k}, then the length of AB is ()",
                   f"如图，在Rt△ABC中，∠C=90°，AC={3 * k}，BC={4 * k}，则AB的长为（）", 5 * k, "",
                   [7 * k, 6 * k, 4 * k + 1, 10 * k, 5 * k + 2],
                   f"By the Pythagorean theorem, AB = sqrt({3 * k}² + {4 * k}²) = {5 * k}.",
                   draw, [3 * k, 4 * k], ["g_pythagoras", "N_0", "N_1"], ["勾股定理"])


def isosceles(rng: random.Random) -> Problem:
    x = rng.choice(range(30, 101, 10))
    A, L = (120.0, 22.0), 135.0
    B = (A[0] - L * math.sin(math.radians(x / 2)), A[1] + L * math.cos(math.radians(x / 2)))
    C = (A[0] + L * math.sin(math.radians(x / 2)), B[1])
    answer = (180 - x) // 2

    def draw(d):
        d.polygon([A, B, C], outline=INK, width=2)
        _dot(d, A, "A", (0, -10)), _dot(d, B, "B", (-9, 6)), _dot(d, C, "C", (9, 6))
        for P in (B, C):  # equal-length ticks
            m = ((A[0] + P[0]) / 2, (A[1] + P[1]) / 2)
            d.line([(m[0] - 5, m[1] - 2), (m[0] + 5, m[1] + 2)], fill=INK, width=2)
        _arc(d, A, 16, 270 - x / 2, 270 + x / 2)
        _label(d, (A[0], A[1] + 30), f"{x}°", 12)

    return Problem("angle", f"As shown in the figure, in triangle ABC, AB = AC, angle A = {x}°, then the degree of "
                   "angle B is ()", f"如图，在△ABC中，AB=AC，∠A={x}°，则∠B的度数为（）", answer, "°",
                   [x, 180 - x, answer + 10, answer - 10, 90 - x],
                   f"AB = AC makes angles B and C equal, so angle B = (180° - {x}°) / 2 = {answer}°.",
                   draw, [x], ["g_minus", "C_3", "N_0", "g_half", "V_0"], ["等腰三角形", "三角形内角和"])


def central_inscribed(rng: random.Random) -> Problem:
    y = rng.choice(range(25, 71, 5))
    O, r = (120.0, 92.0), 72.0
    A, B = _polar(O, r, 270 - y), _polar(O, r, 270 + y)
    C = _polar(O, r, 90 + rng.choice([-30, -15, 0, 15, 30]))

    def draw(d):
        d.ellipse([O[0] - r, O[1] - r, O[0] + r, O[1] + r], outline=INK, width=2)
        d.line([A, O, B], fill=INK, width=2)
        d.line([A, C, B], fill=INK, width=2)
        _dot(d, O, "O", (0, -10)), _dot(d, A, "A", (-9, 7)), _dot(d, B, "B", (9, 7)), _dot(d, C, "C", (0, -11))
        _arc(d, O, 14, 270 - y, 270 + y)
        _label(d, (O[0], O[1] + 24), f"{2 * y}°", 12)

    return Problem("angle", f"As shown in the figure, points A, B and C are on circle O, angle AOB = {2 * y}°, then "
                   "the degree of angle ACB is ()", f"如图，点A、B、C都在⊙O上，∠AOB={2 * y}°，则∠ACB的度数为（）",
                   y, "°", [2 * y, 180 - y, 90 - y, y + 10, 180 - 2 * y],
                   f"An inscribed angle is half the central angle on the same arc: angle ACB = {2 * y}° / 2 = {y}°.",
                   draw, [2 * y], ["g_half", "N_0"], ["圆周角", "圆心角"])


KINDS = [triangle_sum, parallel_lines, circle_diameter, right_triangle, isosceles, central_inscribed]


def choices_for(rng: random.Random, p: Problem) -> tuple[list[str], list[float], int]:
    """Four distinct options (the true value and three distractors), shuffled; the true index."""
    values = [p.value]
    for v in p.candidates + [p.value + 5 * i for i in range(1, 9)]:
        if v > 0 and v not in values and len(values) < 4:
            values.append(v)
    rng.shuffle(values)
    return [f"{v:g}{p.unit}" for v in values], [float(v) for v in values], values.index(p.value)


def picture(p: Problem) -> Image.Image:
    im = Image.new("L", (W, H), 255)
    p.draw(ImageDraw.Draw(im))
    return im


def _png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


# ---- the original release: pickled problem lists --------------------------------------------------


def _pickle_record(rng: random.Random, ident: int, p: Problem) -> dict:
    choices, nums, idx = choices_for(rng, p)
    return {"id": ident, "subject": p.zh, "choices": choices, "choice_nums": nums, "label": idx,
            "image": np.asarray(picture(p), dtype=np.uint8), "manual_program": p.program,
            "numbers": [float(n) for n in p.numbers], "formal_point": p.points, "type": p.kind,
            "token_list": list(p.zh)}


def _dump(records) -> bytes:
    return pickle.dumps(records, protocol=4)


def _write_pickles(w: DemoWriter) -> list[Planted]:
    ident = 1000
    planted: list[Planted] = []
    for name, count in (("train", 6), ("dev", 3), ("test", 3)):
        records = []
        for i in range(count):
            ident += 1
            records.append(_pickle_record(w.rng, ident, KINDS[(ident + i) % len(KINDS)](w.rng)))
        if name == "train":
            planted += _plant_pickle_rows(w, records)
        w.bytes(f"GeoQA2.2/{name}.pk", _dump(records))
    # a pickle naming a global outside the allowed set (a harmless datetime here): refused whole
    w.bytes("GeoQA2.2/other.pk", _dump([{"id": 1, "subject": "x", "when": __import__("datetime").date(2021, 1, 1)}]))
    planted.append(Planted(None, "unsafe_file"))
    return planted


def _plant_pickle_rows(w: DemoWriter, records: list[dict]) -> list[Planted]:
    planted = []
    base = records[0]

    def add(reason: str, drop: tuple = (), **changes) -> None:
        rec = {**base, "id": 2000 + len(planted), **changes}
        for key in drop:
            rec.pop(key, None)
        records.append(rec)
        planted.append(Planted(f"GeoQA2.2/train/{rec['id']}", reason))

    add("no_image", image=None)
    add("unreadable_image", image=np.zeros((0, 4), dtype=np.uint8))
    add("empty_question", subject="  ")
    add("malformed_record", drop=("subject",))
    add("malformed_record", label="x")
    add("malformed_record", drop=("choice_nums",), choices="A B C D")
    add("bad_option_index", label=7)
    records.append(dict(records[1]))  # the same id twice in one file
    planted.append(Planted(f"GeoQA2.2/train/{records[1]['id']}", "duplicate_id"))
    return planted


# ---- the Geo170K LLaVA instruction release --------------------------------------------------------


def _human(p: Problem, choices: list[str]) -> str:
    lines = "\n".join(f"{chr(65 + i)}:{c}" for i, c in enumerate(choices))
    return f"<image>\n{INSTRUCTION}\nQuestion:{p.en}\nChoices:\n{lines}"


def _gpt(p: Problem, idx: int) -> str:
    return f"{p.reasoning} Therefore, the answer is option {chr(65 + idx)}.\nAnswer:{chr(65 + idx)}"


def _write_llava(w: DemoWriter) -> list[Planted]:
    rows: list[dict] = []
    numbers = sorted(w.rng.sample(range(1, 12000), 12))
    for i, n in enumerate(numbers[:10]):
        p = KINDS[i % len(KINDS)](w.rng)
        choices, _, idx = choices_for(w.rng, p)
        image = f"geoqa_plus/{n}.png"
        w.bytes(f"images/{image}", _png(picture(p)))
        rows.append({"image": image, "conversations": [{"from": "human", "value": _human(p, choices)},
                                                       {"from": "gpt", "value": _gpt(p, idx)}]})
        if i in (1, 4):  # Geo170K rephrases a problem over the same diagram
            choices2, _, idx2 = choices_for(w.rng, p)
            rows.append({"image": image, "conversations": [
                {"from": "human", "value": _human(p, choices2).replace("As shown in the figure, ", "In the diagram, ")},
                {"from": "gpt", "value": _gpt(p, idx2)}]})
    # a Geometry3K row of Geo170K: another dataset, passed over (neither a row nor a reject)
    rows.append({"image": "geo3k/train/1234/img_diagram.png", "conversations": rows[0]["conversations"]})

    planted: list[Planted] = []
    good = rows[0]

    def add(reason: str, rec: dict) -> None:
        rows.append(rec)
        planted.append(Planted(f"qa_tuning/{len(rows) - 1}", reason))

    add("missing_image", {**good, "image": f"geoqa_plus/{numbers[10]}.png"})
    w.corrupt_image(f"images/geoqa_plus/{numbers[11]}.png")
    add("unreadable_image", {**good, "image": f"geoqa_plus/{numbers[11]}.png"})
    add("no_image", {"conversations": good["conversations"]})
    add("empty_question", {**good, "conversations": [{"from": "human", "value": "<image>\n"},
                                                     {"from": "gpt", "value": "Answer:B"}]})
    add("malformed_record", {**good, "conversations": [good["conversations"][0],
                                                       {"from": "gpt", "value": "I am not sure."}]})
    add("malformed_record", {"image": good["image"]})
    add("bad_option_index", {**good, "conversations": [good["conversations"][0],
                                                       {"from": "gpt", "value": "So it is F.\nAnswer:F"}]})
    w.text("qa_tuning.json", json.dumps(rows, ensure_ascii=False, indent=1))
    return planted


def write(w: DemoWriter) -> list[Planted]:
    return _write_pickles(w) + _write_llava(w)
