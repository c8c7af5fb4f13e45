"""Tiny benchmark files of the six kinds the paper reports, in VLMEvalKit's TSV layout.

Each image is drawn with PIL from the same facts its answer states (counted shapes, colours,
positions, bar heights), so the answers are true. The files exercise what the real ones do: options
A-D with a hint, MMBench's rotated copies whose image field names the original row's index,
HallusionBench's sets of figures and questions (later rows name the first row of their figure
instead of repeating the image), MM-Vet's <AND>/<OR> references and capability lists, MathVista's
typed answers with precision and choices. Deterministic for a seed: the same seed writes the same
bytes, and a file whose bytes would not change is not rewritten.

    paths = write_benchmarks(Root("/tmp/bench"), seed=0)   # {"MMStar": ".../MMStar.tsv", ...}
"""
from __future__ import annotations

import base64
import io
import random
import string

from PIL import Image

from pipeline.demo.common import COLOURS, canvas, font
from pipeline.evaluate.tsv import tsv_bytes
from pipeline.storage import Root

SHAPES = ("circle", "square", "triangle")
OFFSET = 1_000_000


def png_b64(im: Image.Image) -> str:
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=False)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def draw_shape(d, shape: str, cx: int, cy: int, r: int, colour: str) -> None:
    fill = COLOURS[colour]
    if shape == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill, outline=(0, 0, 0))
    elif shape == "square":
        d.rectangle([cx - r, cy - r, cx + r, cy + r], fill=fill, outline=(0, 0, 0))
    else:
        d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill, outline=(0, 0, 0))


def scene(objs: list[tuple[str, str, int, int, int]], size=(240, 160), bg=(255, 255, 255)) -> Image.Image:
    """objs: (shape, colour, x, y, radius)."""
    im, d = canvas(*size, color=bg)
    for shape, colour, x, y, r in objs:
        draw_shape(d, shape, x, y, r, colour)
    return im


def bars(values: list[int], labels: list[str], colour: str = "blue", size=(260, 180), show_values: bool = True) -> Image.Image:
    w, h = size
    im, d = canvas(w, h)
    f = font(12)
    base, top = h - 30, 20
    vmax = max(values)
    slot = (w - 40) / len(values)
    d.line([(30, base), (w - 10, base)], fill=(0, 0, 0))
    for i, (v, lab) in enumerate(zip(values, labels)):
        x0, x1 = int(30 + i * slot + slot * 0.2), int(30 + (i + 1) * slot - slot * 0.2)
        y0 = int(base - (base - top) * v / vmax)
        d.rectangle([x0, y0, x1, base], fill=COLOURS[colour], outline=(0, 0, 0))
        d.text((x0, base + 4), lab, fill=(0, 0, 0), font=f)
        if show_values:
            d.text((x0, y0 - 14), str(v), fill=(0, 0, 0), font=f)
    return im


def text_image(text: str, size=(240, 100)) -> Image.Image:
    im, d = canvas(*size, color=(250, 240, 200))
    d.rectangle([10, 10, size[0] - 10, size[1] - 10], outline=(0, 0, 0), width=2)
    d.text((30, size[1] // 2 - 12), text, fill=(0, 0, 0), font=font(24))
    return im


def _mc(rng: random.Random, correct: str, wrong: list[str]) -> tuple[dict[str, str], str]:
    """Options A.. with the correct one at a random letter."""
    opts = [correct] + wrong
    rng.shuffle(opts)
    letters = string.ascii_uppercase[: len(opts)]
    return dict(zip(letters, opts)), letters[opts.index(correct)]


def _distinct(rng: random.Random, pool, k: int, exclude=()) -> list:
    return rng.sample([p for p in pool if p not in exclude], k)


# -- the six files --------------------------------------------------------------------------


def mmstar(rng: random.Random) -> tuple[list[str], list[dict]]:
    rows = []
    cols = list(COLOURS)

    def add(question, correct, wrong, im, category, l2):
        opts, ans = _mc(rng, correct, wrong)
        rows.append({"index": len(rows), "question": question, **opts, "answer": ans, "image": png_b64(im),
                     "category": category, "l2-category": l2, "split": "val"})

    bg_name = rng.choice(["yellow", "cyan", "green"])
    add("What is the colour of the background?", bg_name, _distinct(rng, ["yellow", "cyan", "green", "purple"], 3, [bg_name]),
        scene([("circle", "red", 120, 80, 20)], bg=COLOURS[bg_name]), "coarse perception", "image scene and topic")
    c = rng.choice(cols)
    add("What colour is the triangle?", c, _distinct(rng, cols, 3, [c]),
        scene([("triangle", c, 80, 80, 30), ("square", "gray", 170, 80, 20)]), "fine-grained perception", "attribute")
    left, right = rng.sample(SHAPES, 2)
    add(f"Which shape is to the left of the {right}?", left, [s for s in SHAPES if s != left] + ["star"],
        scene([(left, "blue", 60, 80, 25), (right, "red", 180, 80, 25)]), "instance reasoning", "relative position")
    big = rng.choice(SHAPES)
    small = [s for s in SHAPES if s != big]
    add("Which shape is the largest?", big, small + ["they are all the same size"],
        scene([(big, "green", 60, 80, 40), (small[0], "green", 150, 80, 15), (small[1], "green", 210, 80, 15)]),
        "logical reasoning", "comparison")
    n = rng.randint(3, 6)
    objs = [(rng.choice(SHAPES), rng.choice(cols), 30 + 40 * i, 40 + 70 * (i % 2), 14) for i in range(n)]
    add("How many shapes are there in total?", str(n), [str(n + 1), str(n - 1), str(n + 2)], scene(objs), "math", "counting")
    k = rng.randint(2, 4)
    add(f"If {k} more circles were added to the picture, how many circles would there be?", str(2 + k),
        [str(2 + k + 1), str(k), str(2 + k - 1)],
        scene([("circle", "red", 70, 80, 20), ("circle", "red", 170, 80, 20)]), "math", "arithmetic")
    im, d = canvas(240, 120)
    north_left = rng.random() < 0.5
    d.rectangle([30, 40, 120, 80], fill=COLOURS["red" if north_left else "blue"], outline=(0, 0, 0))
    d.rectangle([120, 40, 210, 80], fill=COLOURS["blue" if north_left else "red"], outline=(0, 0, 0))
    d.text((70, 50), "N" if north_left else "S", fill=(255, 255, 255), font=font(16))
    d.text((160, 50), "S" if north_left else "N", fill=(255, 255, 255), font=font(16))
    add("The picture shows a bar magnet. On which side is its north pole (N)?", "left" if north_left else "right",
        ["right" if north_left else "left", "in the middle", "there is no north pole"], im, "science & technology", "physics")
    c2 = rng.choice(cols)
    add("How many squares are there?", "2", ["1", "3", "4"],
        scene([("square", c2, 50, 80, 18), ("circle", c2, 120, 80, 18), ("square", c2, 190, 80, 18)]),
        "fine-grained perception", "counting")
    header = ["index", "question", "A", "B", "C", "D", "answer", "category", "l2-category", "split", "image"]
    return header, rows


def mmbench(rng: random.Random) -> tuple[list[str], list[dict]]:
    """Originals with 4, 3 and 2 options, then their rotated copies (image = the original's index)."""
    originals = []
    c = rng.choice(list(COLOURS))
    opts, ans = _mc(rng, c, _distinct(rng, list(COLOURS), 3, [c]))
    originals.append({"index": 0, "question": "What colour is the circle?", "hint": "", **opts, "answer": ans,
                      "image": png_b64(scene([("circle", c, 120, 80, 35)])), "category": "attribute_recognition",
                      "l2-category": "Attribute Reasoning", "split": "dev"})
    n = rng.randint(2, 5)
    opts, ans = _mc(rng, str(n), [str(n + 1), str(n + 2)])
    originals.append({"index": 1, "question": "How many triangles are in the picture?",
                      "hint": "Count only the triangles, not the other shapes.", **opts, "answer": ans,
                      "image": png_b64(scene([("triangle", "green", 30 + 45 * i, 80, 16) for i in range(n)]
                                             + [("circle", "red", 220, 40, 10)])),
                      "category": "object_localization", "l2-category": "Fine-grained Perception (instance)", "split": "dev"})
    on_left = rng.choice(SHAPES)
    other = rng.choice([s for s in SHAPES if s != on_left])
    opts, ans = _mc(rng, "left", ["right"])
    originals.append({"index": 2, "question": f"Is the {on_left} on the left or on the right of the {other}?", "hint": "",
                      **opts, "answer": ans,
                      "image": png_b64(scene([(on_left, "purple", 60, 80, 25), (other, "yellow", 180, 80, 25)])),
                      "category": "spatial_relationship", "l2-category": "Relation Reasoning", "split": "dev"})
    rows = [dict(r) for r in originals]
    for r in originals:
        letters = [x for x in "ABCD" if r.get(x)]
        k = len(letters)
        for i in range(1, k):
            copy = dict(r)
            copy["index"] = r["index"] + OFFSET * i
            copy["image"] = str(r["index"])  # by reference
            for q in range(k):
                copy[letters[q]] = r[letters[(q + i) % k]]
            copy["answer"] = letters[(letters.index(r["answer"]) - i) % k]
            rows.append(copy)
    header = ["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "l2-category", "split", "image"]
    return header, rows


def mmvet(rng: random.Random) -> tuple[list[str], list[dict]]:
    rows = []

    def add(question, answer, capability, im):
        rows.append({"index": len(rows), "question": question, "answer": answer, "category": capability, "image": png_b64(im)})

    n = rng.randint(2, 5)
    add("How many circles are in the image?", str(n), "rec",
        scene([("circle", "yellow", 30 + 45 * i, 80, 15) for i in range(n)]))
    word = rng.choice(["HELLO", "OPEN", "EXIT", "SALE"])
    add("What word is written on the sign?", word, "ocr", text_image(word))
    a, b = rng.randint(2, 9), rng.randint(2, 9)
    add("What is the sum of the two numbers shown?", str(a + b), "ocr,math", text_image(f"{a}   +   {b}"))
    s1, s2 = rng.sample(SHAPES, 2)
    add("Which two shapes are shown?", f"{s1}<AND>{s2}", "rec", scene([(s1, "red", 70, 80, 25), (s2, "blue", 170, 80, 25)]))
    add(f"Is the {s1} to the left or to the right of the {s2}?", "left", "rec,spat",
        scene([(s1, "green", 60, 80, 25), (s2, "green", 180, 80, 25)]))
    c = rng.choice(["red", "blue", "green"])
    add("Describe the picture in one sentence.", f"A {c} square sits above a gray circle.", "rec,gen",
        scene([("square", c, 120, 45, 22), ("circle", "gray", 120, 120, 22)], size=(240, 160)))
    add("What colour is the large shape?", "purple <OR> violet", "rec", scene([("circle", "purple", 120, 80, 45)]))
    header = ["index", "question", "answer", "category", "image"]
    return header, rows


def mathvista(rng: random.Random) -> tuple[list[str], list[dict]]:
    rows = []

    def add(question, answer, im, qtype, atype, precision="", choices="", answer_option="", task="", skills=""):
        rows.append({"index": len(rows) + 1, "question": question, "answer": answer, "image": png_b64(im),
                     "question_type": qtype, "answer_type": atype, "precision": precision, "choices": choices,
                     "answer_option": answer_option, "unit": "", "task": task, "skills": skills})

    n = rng.randint(3, 7)
    add("Hint: Answer with a whole number at the end.\nQuestion: How many circles are in the picture?", str(n),
        scene([("circle", "blue", 25 + 30 * i, 60 + 40 * (i % 2), 12) for i in range(n)]), "free_form", "integer",
        task="figure question answering", skills="['arithmetic reasoning']")
    a, b = rng.choice([(6, 4), (9, 6), (3, 2), (8, 5)])
    add("Hint: Answer with a decimal number with one decimal place at the end.\n"
        "Question: What is the value of bar A divided by the value of bar B?", f"{round(a / b, 1)}",
        bars([a, b], ["A", "B"]), "free_form", "float", precision="1.0", task="figure question answering",
        skills="['arithmetic reasoning', 'statistical reasoning']")
    shaded = rng.choice([1, 3])
    im, d = canvas(200, 60)
    for i in range(4):
        fill = COLOURS["blue"] if i < shaded else (255, 255, 255)
        d.rectangle([10 + 45 * i, 10, 50 + 45 * i, 50], fill=fill, outline=(0, 0, 0))
    add("Hint: Answer with a decimal number with two decimal places at the end.\n"
        "Question: What fraction of the squares is shaded blue?", f"{shaded / 4:.2f}", im, "free_form", "float", precision="2.0",
        task="math word problem", skills="['arithmetic reasoning']")
    vals = [rng.randint(2, 9) for _ in range(4)]
    twin = rng.sample(range(4), 2)
    vals[twin[1]] = vals[twin[0]]
    for i in range(4):
        if i not in twin and vals[i] == vals[twin[0]]:
            vals[i] = vals[twin[0]] + 1 + i
    add("Hint: Answer with a Python list at the end.\nQuestion: Which two bars have the same height? "
        "Give their labels as numbers in increasing order.", str(sorted(t + 1 for t in twin)),
        bars(vals, ["1", "2", "3", "4"]), "free_form", "list", task="figure question answering",
        skills="['statistical reasoning']")
    tallest = max(vals)
    add("Hint: Answer with a whole number at the end.\nQuestion: What is the value of the tallest bar?", str(tallest),
        bars(vals, ["1", "2", "3", "4"]), "free_form", "integer", task="figure question answering",
        skills="['statistical reasoning']")
    choices = ["1/4", "1/2", "3/4", "1/3"]
    im, d = canvas(120, 120)
    d.rectangle([10, 10, 60, 110], fill=COLOURS["blue"], outline=(0, 0, 0))
    d.rectangle([60, 10, 110, 110], fill=(255, 255, 255), outline=(0, 0, 0))
    add("Hint: Answer with the letter of the correct option at the end.\nQuestion: What fraction of the square is blue?\n"
        "Choices:\n(A) 1/4\n(B) 1/2\n(C) 3/4\n(D) 1/3", "1/2", im, "multi_choice", "text", choices=str(choices),
        answer_option="B", task="math word problem", skills="['arithmetic reasoning']")
    shapes = ["triangle", "square", "pentagon"]
    im, d = canvas(240, 100)
    d.polygon([(40, 20), (10, 80), (70, 80)], fill=COLOURS["red"], outline=(0, 0, 0))
    d.rectangle([95, 25, 145, 80], fill=COLOURS["green"], outline=(0, 0, 0))
    d.polygon([(200, 15), (230, 40), (220, 80), (180, 80), (170, 40)], fill=COLOURS["cyan"], outline=(0, 0, 0))
    order = shapes[:]
    rng.shuffle(order)
    add("Hint: Answer with the letter of the correct option at the end.\nQuestion: Which shape has the most sides?\nChoices:\n"
        + "\n".join(f"({chr(65 + i)}) {s}" for i, s in enumerate(order)), "pentagon", im, "multi_choice", "text",
        choices=str(order), answer_option=chr(65 + order.index("pentagon")), task="geometry problem solving",
        skills="['geometry reasoning']")
    header = ["index", "question", "answer", "question_type", "answer_type", "precision", "choices", "answer_option",
              "unit", "task", "skills", "image"]
    return header, rows


def ai2d(rng: random.Random) -> tuple[list[str], list[dict]]:
    rows = []
    chain = ["grass", "rabbit", "fox"]

    def food_chain():
        im, d = canvas(300, 90)
        f = font(13)
        for i, name in enumerate(chain):
            d.rectangle([10 + 100 * i, 30, 80 + 100 * i, 60], outline=(0, 0, 0))
            d.text((16 + 100 * i, 38), name, fill=(0, 0, 0), font=f)
            if i < 2:
                d.line([(80 + 100 * i, 45), (110 + 100 * i, 45)], fill=(0, 0, 0), width=2)
                d.polygon([(110 + 100 * i, 45), (102 + 100 * i, 40), (102 + 100 * i, 50)], fill=(0, 0, 0))
        return im

    im = food_chain()
    for question, correct, wrong in [
        ("In this food chain, which organism eats the rabbit?", "fox", ["grass", "sun", "rabbit"]),
        ("In this food chain, what does the rabbit eat?", "grass", ["fox", "water", "insects"]),
        ("Which organism is the producer in this food chain?", "grass", ["fox", "rabbit", "none of them"]),
    ]:
        opts, ans = _mc(rng, correct, wrong)
        rows.append({"index": len(rows), "question": question, **opts, "answer": ans, "image": png_b64(im),
                     "category": "food chains"})
    stages = ["egg", "larva", "pupa", "adult"]
    im, d = canvas(320, 90)
    f = font(12)
    for i, s in enumerate(stages):
        d.ellipse([10 + 78 * i, 25, 70 + 78 * i, 65], outline=(0, 0, 0))
        d.text((20 + 78 * i, 38), s, fill=(0, 0, 0), font=f)
    for question, correct, wrong in [
        ("Which stage comes right after the egg?", "larva", ["pupa", "adult", "egg"]),
        ("How many stages are shown in this life cycle?", "4", ["3", "5", "2"]),
    ]:
        opts, ans = _mc(rng, correct, wrong)
        rows.append({"index": len(rows), "question": question, **opts, "answer": ans, "image": png_b64(im),
                     "category": "life cycles"})
    im, d = canvas(240, 160)
    d.ellipse([20, 20, 80, 80], fill=COLOURS["yellow"], outline=(0, 0, 0))
    d.ellipse([150, 60, 190, 100], fill=COLOURS["blue"], outline=(0, 0, 0))
    d.text((45, 90), "X", fill=(0, 0, 0), font=font(14))
    d.text((165, 110), "Y", fill=(0, 0, 0), font=font(14))
    opts, ans = _mc(rng, "X", ["Y", "both", "neither"])
    rows.append({"index": len(rows),
                 "question": "The diagram shows the Sun (the larger yellow body) and a planet. Which label marks the Sun?",
                 **opts, "answer": ans, "image": png_b64(im), "category": "astronomy"})
    header = ["index", "question", "A", "B", "C", "D", "answer", "category", "image"]
    return header, rows


def hallusionbench(rng: random.Random) -> tuple[list[str], list[dict]]:
    """Two sets x two figures (the original and an edit that flips the facts) x two questions."""
    rows = []

    def add(cat, sub, visual, set_id, fig, q, question, yes, im_or_ref):
        rows.append({"index": f"{cat}_{sub}_{visual}_{set_id}_{fig}_{q}", "question": question,
                     "answer": "Yes" if yes else "No", "category": cat, "l2-category": sub, "image": im_or_ref})

    a, b = rng.randint(5, 9), rng.randint(1, 4)
    for fig, (va, vb) in enumerate([(a, b), (b, a)]):
        first = f"VS_chart_{fig + 1}_0_{fig}_0"
        add("VS", "chart", fig + 1, 0, fig, 0, "Is bar A taller than bar B?", va > vb, png_b64(bars([va, vb], ["A", "B"])))
        add("VS", "chart", fig + 1, 0, fig, 1, "Is bar B the tallest bar in the chart?", vb > va, first)
    n0 = 3
    for fig, n in enumerate([n0, n0 + 1]):
        first = f"VD_figure_{fig + 1}_1_{fig}_0"
        im = scene([("circle", "red", 40 + 50 * i, 80, 18) for i in range(n)])
        add("VD", "figure", fig + 1, 1, fig, 0, "Are there exactly three circles in the image?", n == 3, png_b64(im))
        add("VD", "figure", fig + 1, 1, fig, 1, "Are there more than two circles in the image?", n > 2, first)
    header = ["index", "question", "answer", "category", "l2-category", "image"]
    return header, rows


WRITERS = {
    "MMStar": mmstar,
    "MMBench_DEV_EN": mmbench,
    "MMVet": mmvet,
    "MathVista_MINI": mathvista,
    "AI2D_TEST": ai2d,
    "HallusionBench": hallusionbench,
}


def write_benchmarks(root: Root | str, seed: int = 0, names=None) -> dict[str, str]:
    """Write `<name>.tsv` for each benchmark under `root`; returns name -> path (a URI for remote roots)."""
    root = root if isinstance(root, Root) else Root(str(root))
    out = {}
    for name in names or WRITERS:
        header, rows = WRITERS[name](random.Random(f"{seed}:{name}"))
        rel = f"{name}.tsv"
        data = tsv_bytes(header, rows)
        if not (root.exists(rel) and _same(root, rel, data)):
            with root.open(rel, "wb") as f:
                f.write(data)
        out[name] = root.path(rel) if root.is_local else f"{root.uri.rstrip('/')}/{rel}"
    return out


def _same(root: Root, rel: str, data: bytes) -> bool:
    with root.open(rel, "rb") as f:
        return f.read() == data
