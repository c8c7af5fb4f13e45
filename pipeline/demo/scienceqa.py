"""Embedded ScienceQA sample: science pictures drawn with PIL, in the lupantech/ScienceQA layout.

Every answer is true of its picture: the magnets' facing poles decide attract/repel, the highlighted
state carries its name, the thermometer's liquid stops at the temperature asked about, the food
chain's arrows run from food to eater. Text-only problems (image null) are included as the real set
has them; they are quarantined as `no_image`. problems.json is written as an object whose text is
assembled entry by entry, so one planted pid can appear twice (a streaming reader sees both).
"""
from __future__ import annotations

import json

from pipeline.demo.common import COLOURS, DemoWriter, Planted, canvas, font

MAGNET_LECTURE = (
    "Magnets can pull or push on each other without touching. When magnets attract, they pull "
    "together; when they repel, they push apart. Every magnet has a north pole (N) and a south pole "
    "(S). Poles that are different attract each other, and poles that are the same repel each other."
)
MAGNET_HINT = (
    "Two magnets are placed as shown.\n\nHint: Magnets that attract pull together. "
    "Magnets that repel push apart."
)
MAP_LECTURE = (
    "A map is a drawing of a place seen from above. The United States is made up of 50 states; "
    "a state's shape and its neighbours help you find it on a map."
)
THERMO_LECTURE = (
    "A thermometer measures temperature. The liquid inside rises as it gets warmer. To read it, find "
    "the mark on the scale that lines up with the top of the liquid. Temperature can be written in "
    "degrees Celsius (°C)."
)
FOOD_LECTURE = (
    "A food chain shows how matter moves through an ecosystem. The arrows point from an organism to "
    "the organism that eats it. Producers make their own food; consumers eat other organisms."
)


# --- pictures ---------------------------------------------------------------------------------------

def _magnets(left_n_first: bool, right_n_first: bool):
    """Two horizontal bar magnets; each magnet's left half is N when `*_n_first`."""
    im, draw = canvas(360, 140)
    f = font(22)
    for x0, n_first in ((20, left_n_first), (200, right_n_first)):
        halves = [("N", COLOURS["red"]), ("S", COLOURS["blue"])]
        if not n_first:
            halves.reverse()
        for k, (pole, colour) in enumerate(halves):
            box = (x0 + 70 * k, 45, x0 + 70 * (k + 1), 95)
            draw.rectangle(box, fill=colour, outline=(20, 20, 20), width=2)
            draw.text((box[0] + 26, box[1] + 12), pole, fill=(255, 255, 255), font=f)
    facing_left = "S" if left_n_first else "N"  # the pole on the right end of the left magnet
    facing_right = "N" if right_n_first else "S"
    return im, facing_left, facing_right


MAP_GRID = [["Washington", "Idaho", "Montana"], ["Oregon", "Utah", "Wyoming"]]


def _map(highlight: str):
    im, draw = canvas(420, 260, (200, 225, 245))
    f = font(14)
    for r, row in enumerate(MAP_GRID):
        for c, name in enumerate(row):
            box = (15 + 130 * c, 15 + 115 * r, 140 + 130 * c, 125 + 115 * r)
            fill = (30, 120, 60) if name == highlight else (235, 225, 200)
            draw.rectangle(box, fill=fill, outline=(90, 90, 90), width=2)
            l, t, rr, b = draw.textbbox((0, 0), name, font=f)
            colour = (255, 255, 255) if name == highlight else (60, 60, 60)
            draw.text(((box[0] + box[2] - (rr - l)) / 2, (box[1] + box[3] - (b - t)) / 2 - t), name,
                      fill=colour, font=f)
    return im


def _thermometer(value: int):
    """A Celsius thermometer from 0 to 50 with the liquid's top at `value`."""
    im, draw = canvas(160, 320)
    top, bottom = 30, 270  # y of 50 °C and 0 °C
    x0, x1 = 70, 90
    draw.rounded_rectangle((x0, top - 12, x1, bottom + 5), radius=10, fill=(245, 245, 245),
                           outline=(60, 60, 60), width=2)
    draw.ellipse((x0 - 10, bottom - 5, x1 + 10, bottom + 35), fill=COLOURS["red"], outline=(60, 60, 60), width=2)
    level = bottom - (bottom - top) * value / 50
    draw.rectangle((x0 + 5, level, x1 - 5, bottom + 10), fill=COLOURS["red"])
    f = font(13)
    for t in range(0, 51, 5):
        y = bottom - (bottom - top) * t / 50
        draw.line([(x1, y), (x1 + (14 if t % 10 == 0 else 7), y)], fill=(0, 0, 0), width=2)
        if t % 10 == 0:
            draw.text((x1 + 18, y - 8), str(t), fill=(0, 0, 0), font=f)
    draw.text((40, 296), "°C", fill=(0, 0, 0), font=f)
    return im


def _arrow(draw, start, end):
    draw.line([start, end], fill=(30, 30, 30), width=2)
    draw.polygon([end, (end[0] - 9, end[1] - 5), (end[0] - 9, end[1] + 5)], fill=(30, 30, 30))


def _food_chain(chain: list[str]):
    im, draw = canvas(480, 120)
    f = font(13)
    step = 480 // len(chain)
    for i, name in enumerate(chain):
        cx = step * i + step // 2
        box = (cx - 46, 45, cx + 46, 75)
        draw.rectangle(box, fill=(240, 245, 225), outline=(40, 40, 40), width=2)
        l, t, r, b = draw.textbbox((0, 0), name, font=f)
        draw.text((cx - (r - l) / 2 - l, 60 - (b - t) / 2 - t), name, fill=(0, 0, 0), font=f)
        if i + 1 < len(chain):
            _arrow(draw, (cx + 48, 60), (cx + step - 48, 60))
    return im


# --- records --------------------------------------------------------------------------------------

def _problem(question, choices, answer, *, hint="", image="image.png", subject="natural science",
             topic="physics", category="Magnets", skill="Predict magnetic forces", grade="grade2",
             lecture="", solution="", split="train", task="closed choice"):
    return {
        "question": question, "choices": choices, "answer": answer, "hint": hint, "image": image,
        "task": task, "grade": grade, "subject": subject, "topic": topic, "category": category,
        "skill": skill, "lecture": lecture, "solution": solution, "split": split,
    }


def write(w: DemoWriter) -> list[Planted]:
    rng = w.rng
    entries: list[tuple[str, dict]] = []  # (pid, record) in file order; a pid may repeat
    pictures: dict[str, object] = {}
    splits = ["train"] * 6 + ["val", "test"]

    def add(problem: dict, picture=None) -> str:
        pid = str(len(entries) + 1)
        entries.append((pid, problem))
        if picture is not None:
            pictures[pid] = picture
        return pid

    # magnets: facing poles decide the answer
    for _ in range(8):
        left, right = rng.random() < 0.5, rng.random() < 0.5
        im, a, b = _magnets(left, right)
        same = a == b
        answer = "repel" if same else "attract"
        choices = ["repel", "attract"] if rng.random() < 0.5 else ["attract", "repel"]
        why = "the same" if same else "different"
        add(_problem(
            "Will these magnets attract or repel each other?", choices, choices.index(answer),
            hint=MAGNET_HINT, lecture=MAGNET_LECTURE, split=rng.choice(splits),
            solution=f"The {a} pole of the left magnet faces the {b} pole of the right magnet. These poles "
                     f"are {why}, so the magnets will {answer}.",
        ), im)

    # maps: the highlighted state carries its name
    states = [s for row in MAP_GRID for s in row]
    for state in rng.sample(states, 5):
        others = rng.sample([s for s in states if s != state], 3)
        choices = others + [state]
        rng.shuffle(choices)
        add(_problem(
            "Which state is highlighted?", choices, choices.index(state), subject="social science",
            topic="geography", category="Geography", skill="Identify the states", grade="grade4",
            lecture=MAP_LECTURE, split=rng.choice(splits), solution=f"This state is {state}.",
        ), _map(state))

    # thermometers: the liquid stops at the value
    for value in rng.sample(range(5, 50, 5), 5):
        wrong = rng.sample([v for v in range(0, 55, 5) if v != value], 2)
        choices = [f"{v}°C" for v in [value] + wrong]
        rng.shuffle(choices)
        add(_problem(
            "What is the temperature shown by the thermometer?", choices, choices.index(f"{value}°C"),
            hint="Read the thermometer. The scale is in degrees Celsius.", topic="units-and-measurement",
            category="Weather and climate", skill="Read a thermometer", grade="grade3",
            lecture=THERMO_LECTURE, split=rng.choice(splits),
            solution=f"The top of the liquid lines up with {value} on the scale, so it is {value}°C.",
        ), _thermometer(value))

    # food chains: arrows from food to eater
    chains = [["grass", "grasshopper", "frog", "snake"], ["algae", "shrimp", "fish", "heron"],
              ["acorn", "mouse", "owl"], ["clover", "rabbit", "fox"]]
    for chain in chains:
        kind = rng.choice(["producer", "eats"])
        if kind == "producer":
            question, correct = "Which organism in this food chain is a producer?", chain[0]
            solution = f"The {chain[0]} is at the start of the chain: it makes its own food."
        else:
            question, correct = f"Which organism does the {chain[-1]} eat in this food chain?", chain[-2]
            solution = f"The arrow into the {chain[-1]} comes from the {chain[-2]}."
        choices = [c for c in chain if c != correct][:2] + [correct]
        rng.shuffle(choices)
        add(_problem(
            question, choices, choices.index(correct), hint="This diagram shows a food chain.",
            topic="biology", category="Ecological interactions", skill="Interpret food chains", grade="grade5",
            lecture=FOOD_LECTURE, split=rng.choice(splits), solution=solution,
        ), _food_chain(chain))

    # a problem with no split field: the reader takes its split from pid_splits.json
    no_split_pid = add(_problem(
        "Which state is highlighted?", ["Montana", "Utah", "Idaho"], 1, subject="social science",
        topic="geography", category="Geography", skill="Identify the states", grade="grade4",
        lecture=MAP_LECTURE, solution="This state is Utah.",
    ), _map("Utah"))
    del entries[-1][1]["split"]

    # --- planted bad rows -----------------------------------------------------------------------
    planted: list[Planted] = []
    text_only = [
        ("Which word would you find on a dictionary page with the guide words lamp - lizard?",
         ["lemon", "lucky"], 0, "language science", "vocabulary", "Reference skills"),
        ("Which tense does the sentence use?\nMia will plant tulips tomorrow.",
         ["past tense", "future tense", "present tense"], 1, "language science", "verbs", "Verb tense"),
        ("What is the capital of Texas?", ["Austin", "Houston", "Dallas", "San Antonio"], 0,
         "social science", "geography", "State capitals"),
    ]
    for question, choices, answer, subject, topic, category in text_only:
        pid = add(_problem(question, choices, answer, image=None, subject=subject, topic=topic,
                           category=category, skill=category, grade="grade3"))
        planted.append(Planted(pid, "no_image"))
    im, _, _ = _magnets(True, False)
    missing = add(_problem("Will these magnets attract or repel each other?", ["attract", "repel"], 0,
                           hint=MAGNET_HINT, lecture=MAGNET_LECTURE))  # no picture written
    planted.append(Planted(missing, "missing_image"))
    corrupt = add(_problem("Will these magnets attract or repel each other?", ["attract", "repel"], 0,
                           hint=MAGNET_HINT, lecture=MAGNET_LECTURE))
    planted.append(Planted(corrupt, "unreadable_image"))
    empty = add(_problem("  ", ["attract", "repel"], 0, hint=MAGNET_HINT), im)
    planted.append(Planted(empty, "empty_question"))
    bad_index = add(_problem("Will these magnets attract or repel each other?", ["attract", "repel"], 2,
                             hint=MAGNET_HINT), im)
    planted.append(Planted(bad_index, "bad_option_index"))
    no_choices = add(_problem("Which state is highlighted?", [], 0), _map("Idaho"))
    del entries[-1][1]["choices"]
    planted.append(Planted(no_choices, "malformed_record"))
    str_answer = add(_problem("Which state is highlighted?", ["Idaho", "Oregon"], "0"), _map("Idaho"))
    planted.append(Planted(str_answer, "malformed_record"))
    num_question = add(_problem(42, ["Idaho", "Oregon"], 0), _map("Idaho"))
    planted.append(Planted(num_question, "malformed_record"))
    not_object = add(["Which state is highlighted?", ["Idaho", "Oregon"], 0])  # type: ignore[arg-type]
    planted.append(Planted(not_object, "malformed_record"))
    lost_split = add(_problem("Which state is highlighted?", ["Idaho", "Oregon"], 0), _map("Idaho"))
    del entries[-1][1]["split"]  # and not listed in pid_splits.json
    planted.append(Planted(lost_split, "malformed_record"))
    # the same pid twice: the first copy is kept, the second is a duplicate
    entries.append(("3", dict(entries[2][1])))
    planted.append(Planted("3", "duplicate_id"))

    # --- files ----------------------------------------------------------------------------------
    body = ",\n".join(f"  {json.dumps(pid)}: {json.dumps(rec, ensure_ascii=False)}" for pid, rec in entries)
    w.text("problems.json", "{\n" + body + "\n}\n")
    split_lists: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for pid, rec in entries:
        if isinstance(rec, dict) and rec.get("split") in split_lists and pid not in split_lists[rec["split"]]:
            split_lists[rec["split"]].append(pid)
    split_lists["val"].append(no_split_pid)
    split_lists["trainval"] = split_lists["train"] + split_lists["val"]
    split_lists["minival"] = split_lists["val"][:2]
    w.json("pid_splits.json", split_lists)
    for pid, rec in entries:
        if pid in pictures:
            split = rec.get("split") or "val"
            w.image(f"images/{split}/{pid}/image.png", pictures.pop(pid))
    w.corrupt_image(f"images/train/{corrupt}/image.png")
    return planted
