"""A-OKVQA sample: drawn scenes whose answer needs a little common knowledge (snow -> winter, a red
light -> stop, candles -> age), four choices, ten direct answers and three rationales each.

Layout (allenai/aokvqa README): `aokvqa_v1p0_{train,val,test}.json` at the top, COCO images in
`coco/{split}2017/{image_id:012d}.jpg`. The test file has no answer keys, as released.
"""
from __future__ import annotations

import math

from pipeline.demo.common import DemoWriter, Planted, canvas

W, H = 320, 240
SKY = (150, 200, 240)


def _snow(w: DemoWriter):
    im, d = canvas(W, H, (200, 215, 235))
    d.rectangle([0, 170, W, H], fill=(250, 250, 250))
    x = w.rng.randint(90, 230)
    for cx, cy, r in ((x, 180, 32), (x, 128, 24), (x, 90, 16)):
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(255, 255, 255), outline=(90, 90, 90))
    d.polygon([(x, 88), (x + 18, 92), (x, 96)], fill=(240, 130, 30))  # carrot nose
    for _ in range(40):
        sx, sy = w.rng.randrange(W), w.rng.randrange(165)
        d.ellipse([sx - 2, sy - 2, sx + 2, sy + 2], fill=(255, 255, 255))
    return im, {
        "question": "What season is it most likely to be?",
        "choices": ["summer", "winter", "spring", "autumn"], "answer": "winter",
        "direct": ["winter"] * 8 + ["cold season", "winter time"],
        "rationales": [
            "There is a snowman and snow is falling, which happens in winter.",
            "Snow covers the ground and a snowman has been built, so it is winter.",
            "Snowmen can only be made when it snows, which is in winter.",
        ],
    }


def _beach(w: DemoWriter):
    im, d = canvas(W, H, SKY)
    d.rectangle([0, 120, W, 180], fill=(40, 110, 200))  # sea
    d.rectangle([0, 180, W, H], fill=(235, 210, 150))  # sand
    sx = w.rng.randint(30, 290)
    d.ellipse([sx - 22, 20, sx + 22, 64], fill=(250, 210, 40))  # sun
    ux = w.rng.randint(60, 260)
    d.line([(ux, 150), (ux, 215)], fill=(80, 60, 40), width=3)
    d.pieslice([ux - 40, 130, ux + 40, 190], 180, 360, fill=(220, 50, 50))  # umbrella
    return im, {
        "question": "Which activity would people most likely do here?",
        "choices": ["skiing", "swimming", "ice skating", "sledding"], "answer": "swimming",
        "direct": ["swimming"] * 7 + ["swim", "sunbathing", "swimming"],
        "rationales": [
            "It is a sunny beach next to the sea, where people go swimming.",
            "The sea, sand and a beach umbrella mean people come here to swim.",
            "There is no snow or ice, only warm sun and water, so swimming fits.",
        ],
    }


def _traffic_light(w: DemoWriter):
    im, d = canvas(W, H, SKY)
    d.rectangle([0, 170, W, H], fill=(70, 70, 70))
    d.rectangle([150, 20, 190, 130], fill=(30, 30, 30))
    d.line([(170, 130), (170, 172)], fill=(30, 30, 30), width=5)
    lit = w.rng.choice(["red", "green"])
    colours = {"red": (230, 30, 30), "yellow": (90, 80, 20), "green": (20, 90, 30)}
    if lit == "green":
        colours = {"red": (90, 20, 20), "yellow": (90, 80, 20), "green": (40, 220, 60)}
    for i, name in enumerate(("red", "yellow", "green")):
        cy = 38 + i * 34
        d.ellipse([158, cy - 12, 182, cy + 12], fill=colours[name])
    d.rectangle([30, 185, 120, 215], fill=(40, 80, 200))  # car
    d.ellipse([40, 205, 60, 225], fill=(10, 10, 10))
    d.ellipse([90, 205, 110, 225], fill=(10, 10, 10))
    if lit == "red":
        return im, {
            "question": "What should the car do at this traffic light?",
            "choices": ["speed up", "stop", "turn around", "honk"], "answer": "stop",
            "direct": ["stop"] * 9 + ["wait"],
            "rationales": [
                "The traffic light is red, and cars must stop at a red light.",
                "A red signal means stop, so the driver should stop the car.",
                "The top lamp, the red one, is lit, which tells drivers to stop.",
            ],
        }
    return im, {
        "question": "What may the car do at this traffic light?",
        "choices": ["go", "stop", "park", "reverse"], "answer": "go",
        "direct": ["go"] * 8 + ["drive", "proceed"],
        "rationales": [
            "The bottom lamp is green, and green means cars may go.",
            "A green light lets the car drive on.",
            "Only the green light is lit, so the car can proceed.",
        ],
    }


def _cake(w: DemoWriter):
    im, d = canvas(W, H, (250, 240, 230))
    n = w.rng.randint(3, 7)
    d.rectangle([70, 140, 250, 210], fill=(240, 170, 200), outline=(150, 80, 110))
    d.rectangle([70, 140, 250, 150], fill=(255, 255, 255))
    step = 180 / (n + 1)
    for i in range(n):
        cx = int(70 + step * (i + 1))
        d.rectangle([cx - 4, 105, cx + 4, 140], fill=(80, 140, 230))
        d.polygon([(cx, 88), (cx + 6, 100), (cx, 106), (cx - 6, 100)], fill=(250, 180, 30))
    wrong = sorted({n - 2, n - 1, n + 1, n + 2} - {n})
    picks = w.rng.sample(wrong, 3) + [n]
    picks.sort()
    return im, {
        "question": "How old is the person whose birthday this cake is for, judging by the candles?",
        "choices": [str(p) for p in picks], "answer": str(n),
        "direct": [str(n)] * 9 + [f"{n} years"],
        "rationales": [
            f"There are {n} candles on the birthday cake, one for each year.",
            f"Birthday cakes usually carry one candle per year of age, and I count {n}.",
            f"The cake has {n} lit candles, so the person is turning {n}.",
        ],
    }


def _night(w: DemoWriter):
    im, d = canvas(W, H, (15, 20, 60))
    mx = w.rng.randint(40, 280)
    d.ellipse([mx - 20, 20, mx + 20, 60], fill=(245, 245, 210))
    d.ellipse([mx - 8, 16, mx + 28, 52], fill=(15, 20, 60))  # crescent
    for _ in range(30):
        sx, sy = w.rng.randrange(W), w.rng.randrange(150)
        d.point((sx, sy), fill=(255, 255, 255))
    d.rectangle([0, 170, W, H], fill=(20, 40, 20))
    d.rectangle([200, 110, 260, 170], fill=(40, 40, 40))
    d.rectangle([215, 125, 230, 140], fill=(250, 220, 100))  # a lit window
    return im, {
        "question": "What time of day is shown?",
        "choices": ["morning", "noon", "night", "afternoon"], "answer": "night",
        "direct": ["night"] * 8 + ["nighttime", "evening"],
        "rationales": [
            "The sky is dark with a moon and stars, which is what night looks like.",
            "The moon is out and the window lights are on, so it is night.",
            "There is no sun and the sky is dark blue with stars, so it is night time.",
        ],
    }


def _rain(w: DemoWriter):
    im, d = canvas(W, H, (170, 175, 185))
    for cx in (80, 150, 230):
        d.ellipse([cx - 50, 20, cx + 50, 70], fill=(110, 110, 120))
    for _ in range(60):
        rx, ry = w.rng.randrange(W), w.rng.randint(75, 220)
        d.line([(rx, ry), (rx - 3, ry + 10)], fill=(60, 90, 200), width=1)
    d.rectangle([0, 215, W, H], fill=(90, 90, 90))
    return im, {
        "question": "Which item would best keep a person dry outside right now?",
        "choices": ["sunglasses", "umbrella", "fan", "sandals"], "answer": "umbrella",
        "direct": ["umbrella"] * 8 + ["raincoat", "umbrella"],
        "rationales": [
            "Rain is falling from dark clouds, and an umbrella keeps the rain off.",
            "It is raining, so an umbrella would keep someone dry.",
            "Sunglasses, fans and sandals do not help in rain; an umbrella does.",
        ],
    }


def _clock(w: DemoWriter):
    im, d = canvas(W, H, (235, 235, 225))
    hour = w.rng.randint(1, 12)
    cx, cy, r = 160, 120, 90
    d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(255, 255, 255), outline=(0, 0, 0), width=3)
    for h in range(12):
        a = math.radians(h * 30 - 90)
        d.line([(cx + 0.85 * r * math.cos(a), cy + 0.85 * r * math.sin(a)),
                (cx + r * math.cos(a), cy + r * math.sin(a))], fill=(0, 0, 0), width=3)
    a = math.radians(hour * 30 - 90)
    d.line([(cx, cy), (cx + 0.5 * r * math.cos(a), cy + 0.5 * r * math.sin(a))], fill=(0, 0, 0), width=6)
    d.line([(cx, cy), (cx, cy - 0.8 * r)], fill=(0, 0, 0), width=3)  # minute hand on 12
    others = w.rng.sample([h for h in range(1, 13) if h != hour], 3)
    picks = sorted(others + [hour])
    return im, {
        "question": "What hour does the clock show?",
        "choices": [f"{p} o'clock" for p in picks], "answer": f"{hour} o'clock",
        "direct": [f"{hour} o'clock"] * 6 + [str(hour)] * 3 + [f"{hour}:00"],
        "rationales": [
            f"The short hour hand points at {hour} and the long minute hand points at 12.",
            f"With the minute hand straight up, the time is exactly {hour} o'clock.",
            f"The hour hand is on the {hour} mark, so it is {hour} o'clock.",
        ],
    }


SCENES = [_snow, _beach, _traffic_light, _cake, _night, _rain, _clock]
ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def question_id(w: DemoWriter) -> str:
    return "".join(w.rng.choice(ALPHABET) for _ in range(22))


def record(w: DemoWriter, split: str, image_id: int, scene: dict) -> dict:
    choices = list(scene["choices"])
    w.rng.shuffle(choices)
    return {
        "split": split,
        "image_id": image_id,
        "question_id": question_id(w),
        "question": scene["question"],
        "choices": choices,
        "correct_choice_idx": choices.index(scene["answer"]),
        "direct_answers": scene["direct"],
        "difficult_direct_answer": False,
        "rationales": scene["rationales"],
    }


def write(w: DemoWriter) -> list[Planted]:
    planted: list[Planted] = []
    counts = {"train": 21, "val": 7, "test": 3}
    image_id = 100
    good_train: list[dict] = []
    for split, n in counts.items():
        records: list[dict] = []
        for i in range(n):
            image_id += 13
            im, scene = SCENES[i % len(SCENES)](w)
            w.image(f"coco/{split}2017/{image_id:012d}.jpg", im)
            rec = record(w, split, image_id, scene)
            if split == "test":  # as released: no answer keys
                for key in ("correct_choice_idx", "direct_answers", "difficult_direct_answer", "rationales"):
                    del rec[key]
            records.append(rec)
        if split == "train":
            good_train = list(records)
            _, scene = _snow(w)
            missing = record(w, split, 999_001, scene)  # the image is never written
            planted.append(Planted(missing["question_id"], "missing_image"))
            w.corrupt_image(f"coco/train2017/{999_002:012d}.jpg")
            broken = record(w, split, 999_002, scene)
            planted.append(Planted(broken["question_id"], "unreadable_image"))
            ref = good_train[0]["image_id"]
            no_choices = record(w, split, ref, scene)
            del no_choices["choices"]
            planted.append(Planted(no_choices["question_id"], "malformed_record"))
            str_index = record(w, split, ref, scene)
            str_index["correct_choice_idx"] = "1"
            planted.append(Planted(str_index["question_id"], "malformed_record"))
            empty_q = record(w, split, ref, scene)
            empty_q["question"] = "  "
            planted.append(Planted(empty_q["question_id"], "empty_question"))
            out_of_range = record(w, split, ref, scene)
            out_of_range["correct_choice_idx"] = 4
            planted.append(Planted(out_of_range["question_id"], "bad_option_index"))
            dup = dict(good_train[1])  # the same question_id again: the later copy is kept aside
            planted.append(Planted(dup["question_id"], "duplicate_id"))
            records += [missing, broken, no_choices, str_index, empty_q, out_of_range, dup]
        w.json(f"aokvqa_v1p0_{split}.json", records)
    return planted
