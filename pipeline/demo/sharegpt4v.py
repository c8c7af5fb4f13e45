"""ShareGPT4V sample: drawn shape scenes with captions and conversations that describe them truly.

Layout: images under the collections the real release uses (`coco/train2017/`, `sam/images/`,
`llava/llava_pretrain/images/00000/`, `wikiart/images/`), annotations in `sharegpt4v/`: one caption
file (one round) and one mix file (multi-turn, plus a text-only record as the real mix has).
"""
from __future__ import annotations

from pipeline.demo.common import COLOURS, DemoWriter, Planted, canvas

CAPTION_FILE = "sharegpt4v/sharegpt4v_instruct_gpt4-vision_cap100k.json"
MIX_FILE = "sharegpt4v/sharegpt4v_mix665k_cap23k_coco-ap9k_lcs3k_sam9k_div2k.json"
CAPTION_STEM = "sharegpt4v_instruct_gpt4-vision_cap100k"
MIX_STEM = "sharegpt4v_mix665k_cap23k_coco-ap9k_lcs3k_sam9k_div2k"
CAPTION_PROMPT = "Describe this image in detail."

SHAPES = ("circle", "square", "triangle")
BACKGROUNDS = {"white": (255, 255, 255), "light gray": (225, 225, 225), "pale yellow": (250, 245, 215)}
# (row, column) cells of a 2x2 grid and how a caption names them
CELLS = {(0, 0): "upper left", (0, 1): "upper right", (1, 0): "lower left", (1, 1): "lower right"}


def scene(w: DemoWriter, count: int | None = None) -> dict:
    """A random scene: 1-4 shapes, each in its own cell of a 2x2 grid."""
    n = count or w.rng.randint(1, 4)
    cells = sorted(w.rng.sample(sorted(CELLS), n))
    colours = sorted(COLOURS)
    shapes = [
        {"shape": w.rng.choice(SHAPES), "colour": w.rng.choice(colours), "cell": cell} for cell in cells
    ]
    return {"background": w.rng.choice(sorted(BACKGROUNDS)), "shapes": shapes}


def draw(spec: dict, size: int = 240):
    im, d = canvas(size, size, BACKGROUNDS[spec["background"]])
    half = size // 2
    for s in spec["shapes"]:
        r, c = s["cell"]
        x0, y0 = c * half + 20, r * half + 20
        x1, y1 = x0 + half - 40, y0 + half - 40
        fill = COLOURS[s["colour"]]
        if s["shape"] == "circle":
            d.ellipse([x0, y0, x1, y1], fill=fill, outline=(0, 0, 0))
        elif s["shape"] == "square":
            d.rectangle([x0, y0, x1, y1], fill=fill, outline=(0, 0, 0))
        else:
            d.polygon([((x0 + x1) // 2, y0), (x1, y1), (x0, y1)], fill=fill, outline=(0, 0, 0))
    return im


NUMBER = {1: "one", 2: "two", 3: "three", 4: "four"}


def caption(spec: dict) -> str:
    shapes = spec["shapes"]
    n = len(shapes)
    parts = [f"a {s['colour']} {s['shape']} in the {CELLS[s['cell']]}" for s in shapes]
    listing = parts[0] if n == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    noun = "shape" if n == 1 else "shapes"
    return (
        f"The image shows {NUMBER[n]} simple flat {noun} on a plain {spec['background']} background: "
        f"{listing}. Each shape has a thin black outline, there is no text, and nothing else is drawn."
    )


def conversation(w: DemoWriter, spec: dict, rounds: int) -> list[dict]:
    """1-3 question/answer rounds, each answered from the drawn scene."""
    shapes = spec["shapes"]
    target = shapes[0]
    qa = [
        (f"What colour is the {target['shape']} in the {CELLS[target['cell']]}?", target["colour"].capitalize() + "."),
        ("How many shapes are in the picture?", str(len(shapes))),
        ("What colour is the background?", f"The background is {spec['background']}."),
        ("Is there any text in the image?", "No, there is no text in the image."),
    ]
    picked = qa[:rounds]
    turns: list[dict] = []
    for i, (q, a) in enumerate(picked):
        turns.append({"from": "human", "value": f"<image>\n{q}" if i == 0 else q})
        turns.append({"from": "gpt", "value": a})
    return turns


def write(w: DemoWriter) -> list[Planted]:
    planted: list[Planted] = []

    # caption file: one round per record, 12 COCO/SAM/LLaVA/WikiArt images
    captions: list[dict] = []
    folders = [
        ("coco/train2017/{:012d}.jpg", 139),
        ("sam/images/sa_{}.jpg", 1500),
        ("llava/llava_pretrain/images/00000/{:09d}.jpg", 12),
        ("wikiart/images/{}.jpg", 700),
    ]
    for i in range(12):
        pattern, base = folders[i % len(folders)]
        rel = pattern.format(base + i)
        spec = scene(w)
        w.image(rel, draw(spec))
        rid = rel.rsplit("/", 1)[1].rsplit(".", 1)[0]
        captions.append({
            "id": rid,
            "image": rel,
            "conversations": [
                {"from": "human", "value": f"<image>\n{CAPTION_PROMPT}" if i % 3 else f"{CAPTION_PROMPT}\n<image>"},
                {"from": "gpt", "value": caption(spec)},
            ],
        })

    # planted bad rows in the caption file
    captions.append({  # the image is referenced but was never written
        "id": "000000999991", "image": "coco/train2017/000000999991.jpg",
        "conversations": [{"from": "human", "value": f"<image>\n{CAPTION_PROMPT}"}, {"from": "gpt", "value": "A scene."}],
    })
    planted.append(Planted(f"{CAPTION_STEM}/000000999991", "missing_image"))
    w.corrupt_image("sam/images/sa_9999.jpg")
    captions.append({
        "id": "sa_9999", "image": "sam/images/sa_9999.jpg",
        "conversations": [{"from": "human", "value": f"<image>\n{CAPTION_PROMPT}"}, {"from": "gpt", "value": "A scene."}],
    })
    planted.append(Planted(f"{CAPTION_STEM}/sa_9999", "unreadable_image"))
    captions.append({  # a record without the required conversations
        "id": "000000999992", "image": "coco/train2017/000000000139.jpg",
    })
    planted.append(Planted(f"{CAPTION_STEM}/000000999992", "malformed_record"))
    captions.append({  # the question is only the image token
        "id": "000000999993", "image": "coco/train2017/000000000139.jpg",
        "conversations": [{"from": "human", "value": "<image>\n  "}, {"from": "gpt", "value": "A scene."}],
    })
    planted.append(Planted(f"{CAPTION_STEM}/000000999993", "empty_question"))
    captions.append({  # the caption is empty
        "id": "000000999994", "image": "coco/train2017/000000000139.jpg",
        "conversations": [{"from": "human", "value": f"<image>\n{CAPTION_PROMPT}"}, {"from": "gpt", "value": " "}],
    })
    planted.append(Planted(f"{CAPTION_STEM}/000000999994", "empty_answer"))
    captions.append(dict(captions[0]))  # the same id twice in one file: the second copy is kept aside
    planted.append(Planted(f"{CAPTION_STEM}/{captions[0]['id']}", "duplicate_id"))
    w.json(CAPTION_FILE, captions)

    # mix file: multi-turn conversations, 1-3 rounds
    mix: list[dict] = []
    for i in range(14):
        if i % 2:
            rel = f"coco/train2017/{200 + i:012d}.jpg"
            rid = f"{200 + i:012d}"
        else:
            rel = f"sam/images/sa_{2000 + i}.jpg"
            rid = f"sa_{2000 + i}"
        spec = scene(w)
        w.image(rel, draw(spec))
        mix.append({"id": rid, "image": rel, "conversations": conversation(w, spec, 1 + i % 3)})

    mix.append({  # text-only (ShareGPT) record: the real mix file has these
        "id": "i6IyJda_0",
        "conversations": [{"from": "human", "value": "Write a haiku about shapes."},
                          {"from": "gpt", "value": "Circles roll along / squares sit still upon the page / triangles point up"}],
    })
    planted.append(Planted(f"{MIX_STEM}/i6IyJda_0", "no_image"))
    mix.append({  # two human turns in a row
        "id": "000000999995", "image": "coco/train2017/000000000201.jpg",
        "conversations": [{"from": "human", "value": "<image>\nHow many shapes?"},
                          {"from": "human", "value": "Answer with a number."},
                          {"from": "gpt", "value": "2"}],
    })
    planted.append(Planted(f"{MIX_STEM}/000000999995", "malformed_record"))
    mix.append({  # a question that is never answered
        "id": "000000999996", "image": "coco/train2017/000000000201.jpg",
        "conversations": [{"from": "human", "value": "<image>\nHow many shapes?"}],
    })
    planted.append(Planted(f"{MIX_STEM}/000000999996", "malformed_record"))
    mix.append({  # no id at all
        "image": "coco/train2017/000000000201.jpg",
        "conversations": [{"from": "human", "value": "<image>\nHow many shapes?"}, {"from": "gpt", "value": "2"}],
    })
    planted.append(Planted(None, "malformed_record"))
    w.json(MIX_FILE, mix)
    return planted
