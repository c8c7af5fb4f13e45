"""ChartQA sample: bar charts drawn with PIL whose printed values and labels are the answers.

Layout: `ChartQA Dataset/{train,val,test}/` with `{split}_human.json`, `{split}_augmented.json`,
`png/<name>.png`, `tables/<name>.csv` (the chart's data) and `annotations/<name>.json` (bars with
their boxes, in the release's PlotQA-like shape).
"""
from __future__ import annotations

import csv
import io

from pipeline.demo.common import COLOURS, DemoWriter, Planted, canvas, font

TOP = "ChartQA Dataset"
COUNTRIES = ["Kenya", "Chile", "Norway", "Japan", "Peru", "Ghana", "Spain", "Chad"]
SERIES = [("Favorable", "blue"), ("Unfavorable", "green"), ("No opinion", "gray")]
YEARS = ["2018", "2019", "2020"]
W, H = 420, 300
LEFT, RIGHT, TOP_M, BOTTOM = 40, 20, 40, 50


def _frame(title: str):
    im, d = canvas(W, H)
    d.text((LEFT, 10), title, fill=(0, 0, 0), font=font(14))
    d.line([(LEFT, H - BOTTOM), (W - RIGHT, H - BOTTOM)], fill=(0, 0, 0), width=1)
    d.line([(LEFT, TOP_M), (LEFT, H - BOTTOM)], fill=(0, 0, 0), width=1)
    return im, d


def simple_chart(title: str, labels: list[str], values: list[int], colour: str):
    """One series: a bar per label, its value printed above it, its label below it."""
    im, d = _frame(title)
    f = font(12)
    vmax = max(values)
    slot = (W - LEFT - RIGHT) / len(labels)
    boxes = []
    for i, (lab, v) in enumerate(zip(labels, values)):
        x0 = int(LEFT + i * slot + slot * 0.2)
        x1 = int(LEFT + (i + 1) * slot - slot * 0.2)
        y1 = H - BOTTOM
        y0 = int(y1 - (H - BOTTOM - TOP_M - 20) * v / vmax)
        d.rectangle([x0, y0, x1, y1], fill=COLOURS[colour])
        d.text(((x0 + x1) // 2, y0 - 4), str(v), fill=(0, 0, 0), font=f, anchor="mb")
        d.text(((x0 + x1) // 2, y1 + 6), lab, fill=(0, 0, 0), font=f, anchor="mt")
        boxes.append({"x": x0, "y": y0, "w": x1 - x0, "h": y1 - y0})
    return im, boxes


def grouped_chart(title: str, data: dict[str, list[int]]):
    """Series x years: bars grouped by year, a legend naming each series' colour, values printed."""
    im, d = _frame(title)
    f = font(12)
    vmax = max(max(v) for v in data.values())
    names = list(data)
    slot = (W - LEFT - RIGHT) / len(YEARS)
    bar = slot * 0.7 / len(names)
    boxes: dict[str, list[dict]] = {n: [] for n in names}
    for yi, year in enumerate(YEARS):
        gx = LEFT + yi * slot + slot * 0.15
        for si, name in enumerate(names):
            v = data[name][yi]
            x0, x1 = int(gx + si * bar), int(gx + (si + 1) * bar) - 2
            y1 = H - BOTTOM
            y0 = int(y1 - (H - BOTTOM - TOP_M - 30) * v / vmax)
            d.rectangle([x0, y0, x1, y1], fill=COLOURS[dict(SERIES)[name]])
            d.text(((x0 + x1) // 2, y0 - 3), str(v), fill=(0, 0, 0), font=font(10), anchor="mb")
            boxes[name].append({"x": x0, "y": y0, "w": x1 - x0, "h": y1 - y0})
        d.text((int(LEFT + (yi + 0.5) * slot), H - BOTTOM + 6), year, fill=(0, 0, 0), font=f, anchor="mt")
    lx = LEFT
    for name in names:  # legend under the axis
        d.rectangle([lx, H - 18, lx + 10, H - 8], fill=COLOURS[dict(SERIES)[name]])
        d.text((lx + 14, H - 19), name, fill=(0, 0, 0), font=f)
        lx += 20 + int(d.textlength(name, font=f)) + 10
    return im, boxes


def _csv(rows: list[list]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def _simple(w: DemoWriter, split: str, stem: str, human: list, augmented: list) -> None:
    labels = w.rng.sample(COUNTRIES, w.rng.randint(3, 5))
    values = w.rng.sample(range(5, 95), len(labels))
    colour = w.rng.choice(["blue", "green", "purple", "red"])
    title = "Share of adults who read daily, %"
    im, boxes = simple_chart(title, labels, values, colour)
    base = f"{TOP}/{split}"
    w.image(f"{base}/png/{stem}.png", im)
    w.text(f"{base}/tables/{stem}.csv", _csv([["Country", title]] + [[lab, v] for lab, v in zip(labels, values)]))
    w.json(f"{base}/annotations/{stem}.json", {
        "type": "v_bar",
        "models": [{"name": title, "color": colour, "bboxes": boxes, "x": labels, "y": values}],
        "general_figure_info": {"title": {"text": title}},
    })
    hi = labels[values.index(max(values))]
    lo = labels[values.index(min(values))]
    a, b = labels[0], labels[1]
    img = f"{stem}.png"
    human.append({"imgname": img, "query": f"What is the value of {a}?", "label": str(values[0])})
    human.append({"imgname": img, "query": "Which country has the highest value?", "label": hi})
    augmented.append({"imgname": img, "query": f"What is the difference between {a} and {b}?",
                      "label": str(abs(values[0] - values[1]))})
    augmented.append({"imgname": img, "query": "Which country has the lowest value?", "label": lo})


def _grouped(w: DemoWriter, split: str, stem: str, human: list, augmented: list) -> None:
    names = [n for n, _ in SERIES[: w.rng.randint(2, 3)]]
    data = {n: [w.rng.randint(10, 80) for _ in YEARS] for n in names}
    title = "Views of the new park plan, %"
    im, boxes = grouped_chart(title, data)
    base = f"{TOP}/{split}"
    w.image(f"{base}/png/{stem}.png", im)
    w.text(f"{base}/tables/{stem}.csv", _csv([["Year"] + names] + [[y] + [data[n][i] for n in names] for i, y in enumerate(YEARS)]))
    w.json(f"{base}/annotations/{stem}.json", {
        "type": "v_bar",
        "models": [{"name": n, "color": dict(SERIES)[n], "bboxes": boxes[n], "x": YEARS, "y": data[n]} for n in names],
        "general_figure_info": {"title": {"text": title}},
    })
    img = f"{stem}.png"
    first, second = names[0], names[1]
    colour = dict(SERIES)[first]
    human.append({"imgname": img, "query": f"What is the value of {first} in 2019?", "label": str(data[first][1])})
    human.append({"imgname": img, "query": f"What are the values of {first} and {second} in 2020?",
                  "label": f"[{data[first][2]}, {data[second][2]}]"})
    augmented.append({"imgname": img, "query": f"What does the {colour} bar represent?", "label": first})
    augmented.append({"imgname": img, "query": f"What is the sum of {second} in 2018 and 2019?",
                      "label": str(data[second][0] + data[second][1])})


def write(w: DemoWriter) -> list[Planted]:
    planted: list[Planted] = []
    charts = {"train": 4, "val": 2, "test": 2}
    stem_no = 1000
    for split, n in charts.items():
        human: list[dict] = []
        augmented: list[dict] = []
        for i in range(n):
            stem_no += 7
            (_grouped if i % 2 else _simple)(w, split, str(stem_no), human, augmented)
        if split == "train":
            base = f"{TOP}/train"
            w.corrupt_image(f"{base}/png/broken.png")
            bad_human = [
                {"imgname": "99999.png", "query": "What is the value of Peru?", "label": "12"},  # never drawn
                {"imgname": "broken.png", "query": "What is the value of Chad?", "label": "40"},
                {"imgname": f"{stem_no}.png", "query": "   ", "label": "7"},
                {"imgname": f"{stem_no}.png", "query": "What is shown?"},  # no label
            ]
            reasons = ["missing_image", "unreadable_image", "empty_question", "malformed_record"]
            for rec, reason in zip(bad_human, reasons):
                planted.append(Planted(f"train/human/{len(human)}", reason))
                human.append(rec)
            bad_aug = [
                {"imgname": f"{stem_no}.png", "query": "What is the median value?", "label": ""},
                {"imgname": "", "query": "What is the largest value?", "label": "80"},
                {"imgname": f"{stem_no}.png", "query": ["not", "a", "string"], "label": "3"},
                "not a record",
            ]
            reasons = ["empty_answer", "no_image", "malformed_record", "malformed_record"]
            for rec, reason in zip(bad_aug, reasons):
                planted.append(Planted(f"train/augmented/{len(augmented)}", reason))
                augmented.append(rec)
        w.json(f"{TOP}/{split}/{split}_human.json", human)
        w.json(f"{TOP}/{split}/{split}_augmented.json", augmented)
    return planted
