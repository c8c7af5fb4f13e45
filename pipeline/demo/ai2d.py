"""Embedded AI2D sample: labelled science diagrams drawn with PIL, in the allenai release layout.

Every question is answered by its diagram: the food web's arrows point from food to eater, the
life cycles run clockwise with arrows, the plant's parts carry their names (or, for the abcLabel
diagram, the letters that the annotation file's `replacementText` names), the water cycle and moon
phases are labelled. Images 6 and 7 are listed in ai2d_test_ids.csv (split "test").
"""
from __future__ import annotations

import math

from pipeline.demo.common import COLOURS, DemoWriter, Planted, canvas, font

W, H = 400, 300
BOX_W, BOX_H = 92, 26


# --- drawing helpers ------------------------------------------------------------------------------

def _node(draw, center, label, fill=(245, 245, 230)):
    cx, cy = center
    box = (cx - BOX_W // 2, cy - BOX_H // 2, cx + BOX_W // 2, cy + BOX_H // 2)
    draw.rectangle(box, fill=fill, outline=(40, 40, 40), width=2)
    f = font(13)
    l, t, r, b = draw.textbbox((0, 0), label, font=f)
    draw.text((cx - (r - l) / 2 - l, cy - (b - t) / 2 - t), label, fill=(0, 0, 0), font=f)


def _edge_point(center, towards, half_w=BOX_W / 2 + 3, half_h=BOX_H / 2 + 3):
    """Where the segment from `center` to `towards` leaves the node's box."""
    dx, dy = towards[0] - center[0], towards[1] - center[1]
    scale = min(half_w / abs(dx) if dx else math.inf, half_h / abs(dy) if dy else math.inf)
    return center[0] + dx * scale, center[1] + dy * scale


def _arrow(draw, start, end, colour=(30, 30, 30), width=2, head=9):
    draw.line([start, end], fill=colour, width=width)
    angle = math.atan2(end[1] - start[1], end[0] - start[0])
    left = (end[0] - head * math.cos(angle - 0.45), end[1] - head * math.sin(angle - 0.45))
    right = (end[0] - head * math.cos(angle + 0.45), end[1] - head * math.sin(angle + 0.45))
    draw.polygon([end, left, right], fill=colour)


def _graph(nodes: dict[str, tuple[int, int]], edges: list[tuple[str, str]], title: str):
    im, draw = canvas(W, H)
    draw.text((10, 8), title, fill=(0, 0, 0), font=font(14))
    for a, b in edges:
        _arrow(draw, _edge_point(nodes[a], nodes[b]), _edge_point(nodes[b], nodes[a]))
    for label, center in nodes.items():
        _node(draw, center, label)
    return im


def _food_web(jitter):
    nodes = {
        "grass": (200 + jitter[0], 262),
        "rabbit": (95, 175 + jitter[1]),
        "grasshopper": (305, 185 + jitter[2]),
        "frog": (305, 105),
        "fox": (80, 70),
        "hawk": (215, 50),
    }
    edges = [("grass", "rabbit"), ("grass", "grasshopper"), ("grasshopper", "frog"),
             ("rabbit", "fox"), ("frog", "hawk"), ("rabbit", "hawk")]
    return _graph(nodes, edges, "Food web (arrows: food -> eater)")


def _cycle(stages: list[str], title: str, start_angle: float):
    n = len(stages)
    cx, cy, r = W // 2, H // 2 + 12, 100
    nodes = {}
    for i, s in enumerate(stages):  # clockwise from the top
        a = start_angle + 2 * math.pi * i / n
        nodes[s] = (int(cx + r * 1.3 * math.sin(a)), int(cy - r * math.cos(a)))
    edges = [(stages[i], stages[(i + 1) % n]) for i in range(n)]
    return _graph(nodes, edges, title)


def _plant(labels: list[tuple[str, tuple[int, int]]], boxed_letters: bool):
    """A plant with four labelled parts. `labels` are (text, label position) for flower, leaf,
    stem, roots in that order; returns the image and each label's rectangle."""
    im, draw = canvas(W, H, (250, 250, 245))
    ground = 215
    draw.rectangle((0, ground, W, H), fill=(170, 130, 90))
    draw.line([(200, ground), (200, 95)], fill=COLOURS["green"], width=6)  # stem
    draw.ellipse((200, 135, 262, 160), fill=COLOURS["green"])  # leaf (right)
    draw.ellipse((138, 165, 200, 190), fill=COLOURS["green"])  # leaf (left)
    for k in range(6):  # petals around the flower head
        a = 2 * math.pi * k / 6
        px, py = 200 + 18 * math.cos(a), 78 + 18 * math.sin(a)
        draw.ellipse((px - 13, py - 13, px + 13, py + 13), fill=COLOURS["red"])
    draw.ellipse((189, 67, 211, 89), fill=COLOURS["yellow"])
    for dx in (-40, -15, 15, 40):  # roots
        draw.line([(200, ground), (200 + dx, ground + 55)], fill=(90, 60, 30), width=3)
    anchors = [(200, 60), (240, 147), (200, 120), (215, 250)]  # flower, leaf, stem, roots
    f = font(14)
    rects = []
    for (label, (lx, ly)), anchor in zip(labels, anchors):
        l, t, r, b = draw.textbbox((lx, ly), label, font=f)
        rect = [[int(l) - 4, int(t) - 3], [int(r) + 4, int(b) + 3]]
        side_x = rect[1][0] if lx < anchor[0] else rect[0][0]
        draw.line([(side_x, (t + b) / 2), anchor], fill=(0, 0, 0), width=1)
        draw.rectangle([tuple(rect[0]), tuple(rect[1])], fill=(255, 255, 255),
                       outline=(0, 0, 0) if boxed_letters else (200, 200, 200))
        draw.text((lx, ly), label, fill=(0, 0, 0), font=f)
        rects.append(rect)
    return im, rects


PLANT_LABEL_AT = [(40, 40), (300, 120), (40, 110), (300, 255)]  # flower, leaf, stem, roots


def _water_cycle():
    im, draw = canvas(W, H, (225, 240, 255))
    draw.rectangle((0, 225, W, H), fill=(60, 110, 200))  # ocean
    draw.text((20, 260), "ocean", fill=(255, 255, 255), font=font(14))
    draw.ellipse((320, 15, 370, 65), fill=COLOURS["yellow"])  # sun
    draw.text((330, 70), "sun", fill=(0, 0, 0), font=font(13))
    for x in (150, 180, 210):  # cloud
        draw.ellipse((x, 35, x + 60, 85), fill=(245, 245, 245), outline=(150, 150, 150))
    draw.text((175, 92), "cloud", fill=(0, 0, 0), font=font(13))
    _arrow(draw, (90, 220), (150, 80), colour=(200, 60, 40), width=3)
    draw.text((20, 140), "evaporation", fill=(120, 30, 20), font=font(14))
    _arrow(draw, (255, 95), (300, 215), colour=(40, 70, 200), width=3)
    draw.text((285, 150), "precipitation", fill=(20, 40, 140), font=font(14))
    for x in (240, 255, 270):  # rain drops
        draw.line([(x, 100), (x - 4, 112)], fill=(40, 70, 200), width=2)
    return im


def _moon_phases(order: list[str]):
    im, draw = canvas(W, H, (20, 20, 40))
    draw.text((10, 8), "Phases of the Moon", fill=(255, 255, 255), font=font(14))
    lit, dark = (240, 240, 210), (70, 70, 80)
    for i, phase in enumerate(order):
        cx, cy, r = 55 + i * 97, 140, 36
        box = (cx - r, cy - r, cx + r, cy + r)
        if phase == "full moon":
            draw.ellipse(box, fill=lit)
        elif phase == "new moon":
            draw.ellipse(box, fill=dark, outline=(120, 120, 130))
        else:
            draw.ellipse(box, fill=dark)
            # first quarter: right half lit; third quarter: left half lit (seen from the north)
            start, end = (270, 90) if phase == "first quarter" else (90, 270)
            draw.pieslice(box, start, end, fill=lit)
        f = font(12)
        l, _, r2, _ = draw.textbbox((0, 0), phase, font=f)
        draw.text((cx - (r2 - l) / 2, cy + r + 12), phase, fill=(255, 255, 255), font=f)
    return im


# --- questions ------------------------------------------------------------------------------------

def _q(w: DemoWriter, image: str, index: int, correct: str, distractors: list[str], abc: bool = False):
    """One native question entry with the options in a seeded order."""
    options = [correct] + distractors
    w.rng.shuffle(options)
    return {
        "abcLabel": abc,
        "answerTexts": options,
        "correctAnswer": options.index(correct),
        "questionId": f"{image}-{index}",
    }


def _questions_file(w: DemoWriter, image: str, items: list[tuple]) -> dict:
    qs = {}
    for i, item in enumerate(items):
        question, correct, distractors = item[:3]
        abc = item[3] if len(item) > 3 else False
        qs[question] = _q(w, image, i, correct, distractors, abc)
    return {"imageName": image, "questions": qs}


def write(w: DemoWriter) -> list[Planted]:
    planted: list[Planted] = []
    categories: dict[str, str] = {}

    def diagram(n: int, im, category: str, items: list[tuple]):
        name = f"{n}.png"
        w.image(f"images/{name}", im)
        categories[name] = category
        w.json(f"questions/{name}.json", _questions_file(w, name, items), indent=4)

    jitter = [w.rng.randint(-12, 12) for _ in range(3)]
    diagram(0, _food_web(jitter), "foodChainsWebs", [
        ("Which organism in this food web is a producer?", "grass", ["fox", "frog", "hawk"]),
        ("What does the frog eat?", "grasshopper", ["grass", "fox", "rabbit"]),
        ("Which animal eats the frog?", "hawk", ["fox", "rabbit", "grasshopper"]),
        ("If the grasshoppers disappeared, which animal would lose its only food?", "frog",
         ["fox", "hawk", "rabbit"]),
    ])
    butterfly = ["egg", "caterpillar", "pupa", "adult butterfly"]
    diagram(1, _cycle(butterfly, "Life cycle of a butterfly", w.rng.choice([0.0, 0.15])), "lifeCycles", [
        ("Which stage comes right after the pupa?", "adult butterfly", ["egg", "caterpillar", "tadpole"]),
        ("Which stage comes right before the pupa?", "caterpillar", ["egg", "adult butterfly", "seed"]),
        ("How many stages does this life cycle show?", "4", ["2", "3", "5"]),
    ])
    plant_words = ["flower", "leaf", "stem", "roots"]
    im, _ = _plant(list(zip(plant_words, PLANT_LABEL_AT)), boxed_letters=False)
    diagram(2, im, "partsOfA", [
        ("Which part of the plant is below the ground?", "roots", ["flower", "leaf", "stem"]),
        ("Which labelled part is at the top of the plant?", "flower", ["roots", "leaf", "stem"]),
        ("Which part holds up the flower and the leaves?", "stem", ["roots", "petal", "seed"]),
    ])
    # abcLabel diagram: the parts carry letters; annotations/3.png.json maps each letter box
    letters = ["A", "B", "C", "D"]
    w.rng.shuffle(letters)
    im, rects = _plant(list(zip(letters, PLANT_LABEL_AT)), boxed_letters=True)
    w.json("annotations/3.png.json", {
        "imageName": "3.png",
        "text": {f"T{i}": {"id": f"T{i}", "rectangle": rect, "replacementText": letters[i], "value": letters[i]}
                 for i, rect in enumerate(rects)},
    }, indent=4)
    by_letter = dict(zip(letters, plant_words))
    diagram(3, im, "partsOfA", [
        (f"What is {x} in the diagram?", by_letter[x], [p for p in plant_words if p != by_letter[x]], True)
        for x in sorted(by_letter)
    ] + [
        ("Which letter marks the roots?", next(k for k, v in by_letter.items() if v == "roots"),
         [k for k, v in sorted(by_letter.items()) if v != "roots"], True),
    ])
    diagram(4, _water_cycle(), "waterCNPCycle", [
        ("Which process carries water from the ocean up to the clouds?", "evaporation",
         ["precipitation", "condensation", "runoff"]),
        ("What is shown falling from the cloud to the ocean?", "precipitation",
         ["evaporation", "transpiration", "infiltration"]),
        ("What provides the energy that drives evaporation in this diagram?", "sun",
         ["cloud", "ocean", "wind"]),
    ])
    phases = ["new moon", "first quarter", "full moon", "third quarter"]
    diagram(5, _moon_phases(phases), "moonPhaseEquinox", [
        ("In which phase is the whole face of the Moon lit?", "full moon",
         ["new moon", "first quarter", "third quarter"]),
        ("In which phase is the Moon completely dark?", "new moon",
         ["full moon", "first quarter", "waxing gibbous"]),
        ("Which phase comes between the new moon and the full moon in the diagram?", "first quarter",
         ["third quarter", "waning crescent", "new moon"]),
    ])
    frog = ["eggs", "tadpole", "froglet", "adult frog"]
    diagram(6, _cycle(frog, "Life cycle of a frog", w.rng.choice([0.0, 0.15])), "lifeCycles", [
        ("What does the tadpole grow into?", "froglet", ["eggs", "adult frog", "caterpillar"]),
        ("Which stage comes right after the eggs?", "tadpole", ["froglet", "adult frog", "pupa"]),
    ])
    chain = {"sun": (70, 70), "grass": (90, 225), "cow": (215, 140), "human": (330, 240)}
    diagram(7, _graph(chain, [("sun", "grass"), ("grass", "cow"), ("cow", "human")], "Food chain"),
            "foodChainsWebs", [
        ("Which organism makes its own food using energy from the sun?", "grass", ["cow", "human", "sun"]),
        ("Which organism is at the end of this food chain?", "human", ["grass", "cow", "sun"]),
    ])

    # --- planted bad rows -------------------------------------------------------------------------
    # 90: questions for an image that is not in images/
    w.json("questions/90.png.json", _questions_file(w, "90.png", [
        ("What does the rabbit eat?", "grass", ["fox", "hawk", "frog"])]), indent=4)
    categories["90.png"] = "foodChainsWebs"
    planted.append(Planted("90.png-0", "missing_image"))
    # 91: the image file is not a decodable PNG
    w.corrupt_image("images/91.png")
    w.json("questions/91.png.json", _questions_file(w, "91.png", [
        ("What comes after the egg?", "caterpillar", ["pupa", "adult", "seed"])]), indent=4)
    planted.append(Planted("91.png-0", "unreadable_image"))
    # 92: a real diagram whose question file mixes good and broken entries
    w.image("images/92.png", _cycle(["seed", "seedling", "adult plant", "flower"], "Life cycle of a plant", 0.0))
    categories["92.png"] = "lifeCycles"
    w.json("questions/92.png.json", {"imageName": "92.png", "questions": {
        "What grows from a seed?": {"abcLabel": False, "answerTexts": ["{}", "seedling", "flower", "seedling"],
                                    "correctAnswer": 3, "questionId": "92.png-0"},
        "Which stage makes new seeds?": {"abcLabel": False, "correctAnswer": 1, "questionId": "92.png-1"},
        "What comes after the seedling?": {"abcLabel": False, "answerTexts": ["flower", "adult plant", "seed"],
                                           "correctAnswer": "1", "questionId": "92.png-2"},
        "How many stages are shown?": {"abcLabel": False, "answerTexts": ["3", "4", "5", "6"],
                                       "correctAnswer": 7, "questionId": "92.png-3"},
        "   ": {"abcLabel": False, "answerTexts": ["seed", "flower"], "correctAnswer": 0,
                "questionId": "92.png-4"},
        "Which stage comes first?": {"abcLabel": False, "answerTexts": ["seed", "flower"], "correctAnswer": 0},
        "Which stage is the largest plant?": {"abcLabel": False, "answerTexts": ["seed", "adult plant"],
                                              "correctAnswer": 1, "questionId": "0.png-1"},
        "Which stage comes last in the drawing?": {"abcLabel": "no", "answerTexts": ["flower", "seed"],
                                                   "correctAnswer": 0, "questionId": "92.png-6"},
        "Which option is the answer slot left empty?": {"abcLabel": False, "answerTexts": ["seed", "{}"],
                                                        "correctAnswer": 1, "questionId": "92.png-7"},
    }}, indent=4)
    planted += [
        Planted("92.png-1", "malformed_record"),  # no answerTexts
        Planted("92.png-2", "malformed_record"),  # correctAnswer is a string
        Planted("92.png-3", "bad_option_index"),  # correctAnswer outside the options
        Planted("92.png-4", "empty_question"),
        Planted(None, "malformed_record"),  # no questionId
        Planted("0.png-1", "duplicate_id"),  # questionId reused from 0.png
        Planted("92.png-6", "malformed_record"),  # abcLabel is not a boolean
        Planted("92.png-7", "bad_option_index"),  # the correct answer is an empty slot "{}"
    ]
    # 93: not JSON at all; 94: 'questions' is a list instead of an object
    w.text("questions/93.png.json", '{"imageName": "93.png", "questions": {"What is')
    planted.append(Planted(None, "unreadable_file"))
    w.json("questions/94.png.json", {"imageName": "94.png", "questions": [
        {"What is shown?": {"answerTexts": ["a", "b"], "correctAnswer": 0, "questionId": "94.png-0"}}]})
    planted.append(Planted("94.png", "wrong_shape"))

    w.json("categories.json", dict(sorted(categories.items(), key=lambda kv: int(kv[0].split(".")[0]))),
           indent=4)
    w.text("ai2d_test_ids.csv", "6\n7\n")
    return planted
