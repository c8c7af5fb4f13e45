"""Embedded PISC sample: drawn scenes of two or three figures whose boxes are the annotated bboxes.

Each scene is built so its relationship shows: a couple holds hands under a heart, a family of
two adults and a child stands before a house, friends share a ball on the grass, colleagues in
ties work at a desk with a laptop, a shopkeeper serves a customer across a counter, strangers
stand far apart on a street. Every person's box in annotation_image_info.json is the extent of
the figure drawn for it.
"""
from __future__ import annotations

from PIL import ImageDraw

from pipeline.demo.common import DemoWriter, Planted, canvas, font

W, H = 320, 240
SHIRTS = [(200, 60, 60), (60, 90, 200), (60, 150, 80), (220, 170, 40), (140, 70, 160), (40, 160, 170)]
SKIN = (236, 196, 160)


def draw_person(d: ImageDraw.ImageDraw, cx: int, feet: int, height: int, shirt, tie: bool = False,
                arm_out: int = 0) -> list[int]:
    """A simple figure standing on `feet`; returns its box [x1, y1, x2, y2] in pixels.
    `arm_out` (-1 left, 1 right, 0 none) stretches one arm sideways, e.g. to hold a hand."""
    top = feet - height
    r = max(4, height // 9)
    body_w = max(8, height // 4)
    body_top, body_bottom = top + 2 * r, top + int(height * 0.62)
    d.ellipse([cx - r, top, cx + r, top + 2 * r], fill=SKIN, outline=(90, 60, 40))
    d.rectangle([cx - body_w // 2, body_top, cx + body_w // 2, body_bottom], fill=shirt, outline=(40, 40, 40))
    if tie:
        d.polygon([(cx, body_top + 1), (cx - 3, body_top + 12), (cx, body_top + 18), (cx + 3, body_top + 12)],
                  fill=(30, 30, 90))
    leg = max(2, height // 30)
    d.line([(cx - body_w // 4, body_bottom), (cx - body_w // 3, feet)], fill=(50, 50, 80), width=leg + 1)
    d.line([(cx + body_w // 4, body_bottom), (cx + body_w // 3, feet)], fill=(50, 50, 80), width=leg + 1)
    reach = body_w // 2 + height // 6
    left = (cx - reach, body_top + height // 6) if arm_out < 0 else (cx - body_w // 2 - 3, body_bottom - 2)
    right = (cx + reach, body_top + height // 6) if arm_out > 0 else (cx + body_w // 2 + 3, body_bottom - 2)
    d.line([(cx - body_w // 2, body_top + 3), left], fill=SKIN, width=leg + 1)
    d.line([(cx + body_w // 2, body_top + 3), right], fill=SKIN, width=leg + 1)
    x1 = min(cx - body_w // 2, left[0], cx - body_w // 3) - 1
    x2 = max(cx + body_w // 2, right[0], cx + body_w // 3) + 1
    return [x1, top, x2, feet]


def _ground(d, colour, sky=(200, 225, 245)):
    d.rectangle([0, 0, W, 170], fill=sky)
    d.rectangle([0, 170, W, H], fill=colour)


def couple(w, d):
    _ground(d, (110, 170, 90), sky=(250, 200, 160))  # a park at sunset
    x = w.rng.randint(100, 160)
    a = draw_person(d, x, 215, 120, SHIRTS[0], arm_out=1)
    b = draw_person(d, x + 44, 215, 112, SHIRTS[4], arm_out=-1)
    hx, hy = x + 22, a[1] - 12
    d.ellipse([hx - 9, hy - 6, hx, hy + 3], fill=(220, 30, 60))
    d.ellipse([hx, hy - 6, hx + 9, hy + 3], fill=(220, 30, 60))
    d.polygon([(hx - 9, hy), (hx + 9, hy), (hx, hy + 11)], fill=(220, 30, 60))
    return [a, b], {(1, 2): 3}


def family(w, d):
    _ground(d, (120, 180, 100))
    d.rectangle([200, 90, 300, 170], fill=(230, 210, 170), outline=(90, 60, 40))  # the house
    d.polygon([(190, 92), (250, 45), (310, 92)], fill=(170, 60, 50))
    d.rectangle([240, 130, 262, 170], fill=(110, 70, 40))
    x = w.rng.randint(40, 70)
    a = draw_person(d, x, 220, 125, SHIRTS[1])
    child = draw_person(d, x + 50, 220, 70, SHIRTS[3])
    b = draw_person(d, x + 100, 220, 118, SHIRTS[2])
    return [a, child, b], {(1, 2): 2, (1, 3): 2, (2, 3): 2}


def friends(w, d):
    _ground(d, (90, 170, 80))
    x = w.rng.randint(50, 80)
    boxes = [draw_person(d, x, 210, 115, SHIRTS[5]), draw_person(d, x + 150, 210, 120, SHIRTS[3])]
    d.ellipse([x + 66, 190, x + 86, 210], fill=(250, 250, 250), outline=(30, 30, 30))  # the ball between them
    d.line([(x + 66, 200), (x + 86, 200)], fill=(30, 30, 30))
    return boxes, {(1, 2): 1}


def colleagues(w, d):
    d.rectangle([0, 0, W, H], fill=(215, 215, 220))  # an office
    d.rectangle([20, 20, 110, 80], fill=(170, 200, 230), outline=(80, 80, 90))  # a window
    x = w.rng.randint(60, 90)
    a = draw_person(d, x, 215, 125, (240, 240, 240), tie=True)
    b = draw_person(d, x + 150, 215, 120, (230, 230, 245), tie=True)
    d.rectangle([x + 30, 150, x + 120, 160], fill=(130, 90, 50))  # the desk between them
    d.line([(x + 40, 160), (x + 40, 215)], fill=(100, 70, 40), width=3)
    d.line([(x + 110, 160), (x + 110, 215)], fill=(100, 70, 40), width=3)
    d.polygon([(x + 55, 150), (x + 95, 150), (x + 100, 146), (x + 60, 146)], fill=(60, 60, 60))  # laptop
    d.rectangle([x + 60, 122, x + 100, 146], fill=(50, 50, 60), outline=(20, 20, 20))
    return [a, b], {(1, 2): 4}


def shop(w, d):
    d.rectangle([0, 0, W, H], fill=(240, 228, 200))
    d.rectangle([10, 8, 130, 36], fill=(200, 40, 40))
    d.text((30, 12), "SHOP", fill=(255, 255, 255), font=font(20))
    d.rectangle([10, 50, 120, 120], outline=(120, 90, 60), width=3)  # shelves with goods
    for i in range(5):
        d.rectangle([16 + 20 * i, 60, 30 + 20 * i, 76], fill=SHIRTS[i])
        d.rectangle([16 + 20 * i, 92, 30 + 20 * i, 110], fill=SHIRTS[-1 - i])
    keeper = draw_person(d, 70, 200, 115, (250, 250, 250))
    d.rectangle([20, 150, 150, 215], fill=(150, 105, 60), outline=(80, 50, 30))  # the counter, in front
    keeper[3] = 200
    x = w.rng.randint(195, 215)
    customer = draw_person(d, x, 222, 118, SHIRTS[1], arm_out=-1)
    friend = draw_person(d, x + 65, 222, 112, SHIRTS[3])
    return [keeper, customer, friend], {(1, 2): 5, (2, 3): 1, (1, 3): 5}


def strangers(w, d):
    d.rectangle([0, 0, W, H], fill=(190, 200, 210))
    d.rectangle([0, 175, W, H], fill=(110, 110, 115))  # the street
    for i in range(6):
        d.rectangle([20 + 50 * i, 190, 45 + 50 * i, 196], fill=(240, 240, 240))
    a = draw_person(d, w.rng.randint(30, 50), 185, 100, SHIRTS[0])
    b = draw_person(d, w.rng.randint(265, 285), 200, 112, SHIRTS[2])
    return [a, b], {(1, 2): 6}


SCENES = [couple, family, friends, colleagues, shop, strangers]


def _picture(w: DemoWriter, scene):
    im, d = canvas(W, H)
    boxes, pairs = scene(w, d)
    return im, boxes, pairs


def write(w: DemoWriter) -> list[Planted]:
    ids = sorted(w.rng.sample(range(1, 22000), 18))
    plan = [(s, "train") for s in SCENES] + [
        (SCENES[0], "val"), (SCENES[1], "val"), (SCENES[3], "val"),
        (SCENES[0], "test"), (SCENES[2], "test"), (SCENES[4], "test"),
        (SCENES[5], None),  # listed in no split file
    ]
    info, relationship, splits = [], {}, {"train": [], "val": [], "test": []}
    for image_id, (scene, split) in zip(ids, plan):
        im, boxes, pairs = _picture(w, scene)
        w.image(f"image/{image_id:05d}.jpg", im)
        info.append({"id": image_id, "imgW": W, "imgH": H, "bbox": boxes})
        relationship[str(image_id)] = {f"{i} {j}": label for (i, j), label in pairs.items()}
        if split:
            splits[split].append(str(image_id))

    planted: list[Planted] = []
    spare = ids[len(plan):]
    # an annotated image whose file is missing / cannot be decoded
    missing, broken, odd, no_info = spare[0], spare[1], spare[2], spare[3]
    for image_id in (missing, broken):
        _, boxes, pairs = _picture(w, SCENES[5])
        info.append({"id": image_id, "imgW": W, "imgH": H, "bbox": boxes})
        relationship[str(image_id)] = {"1 2": 6}
        splits["train"].append(str(image_id))
    w.corrupt_image(f"image/{broken:05d}.jpg")
    planted += [Planted(f"{missing}/1-2", "missing_image"), Planted(f"{broken}/1-2", "unreadable_image")]
    # a real picture with bad annotations: an unknown label, a person index past the boxes, a bad key
    im, boxes, _ = _picture(w, SCENES[2])
    w.image(f"image/{odd:05d}.jpg", im)
    info.append({"id": odd, "imgW": W, "imgH": H, "bbox": boxes})
    relationship[str(odd)] = {"1 2": 9, "1 3": 1, "1 x": 1}
    splits["val"].append(str(odd))
    planted += [Planted(f"{odd}/1-2", "malformed_record"), Planted(f"{odd}/1-3", "malformed_record"),
                Planted(f"{odd}/1 x", "malformed_record")]
    # an image id with relationships but no entry in annotation_image_info.json
    relationship[str(no_info)] = {"1 2": 1}
    planted.append(Planted(f"{no_info}/1-2", "malformed_record"))

    w.json("annotation_image_info.json", info)
    w.json("relationship.json", relationship)
    for split, members in splits.items():
        w.json(f"relationship_split/relation_{split}idx.json", members)
    return planted
