"""PISC (People in Social Context): the social relationship between two people in a photo.

Native layout (the Zenodo release, record 1059155):
    annotation_image_info.json   [{id, imgW, imgH, bbox: [[x1, y1, x2, y2], ...]}, ...]  (pixels)
    relationship.json            {"<image id>": {"<i> <j>": label}}  1-based person indices into
                                 that image's bbox list; fine labels 1 friends, 2 family, 3 couple,
                                 4 professional, 5 commercial, 6 no relation
    relationship_split/relation_{train,val,test}idx.json   lists of image ids (strings)
    image/{id:05d}.jpg
(`domain.json` / `domain_split/` hold the coarse three-way labels and are not used.) The photos
may also stay zipped as downloaded (`image.zip`, read in place). The source folder may be the
folder holding these files or its parent (a `PISC/` folder inside).

One multiple-choice sample per annotated pair, native id "<image id>/<i>-<j>". The photos carry no
drawn boxes, so the question names the two people by their relative position and their pixel
boxes; `meta["boxes"]` keeps both boxes in the order the question mentions them, so a later step
may draw them. The test split's labels are public and are read like the others. An image listed in
no split file gets the split "unassigned" (kept, never guessed into train).
"""
from __future__ import annotations

import re
from typing import Iterator

from pipeline.sources import register
from pipeline.sources.base import (
    Item,
    Reader,
    Sample,
    Reject,
    guarded,
    json_records,
    letter,
    load_json,
    multiple_choice_question,
    single_turn,
)

LABELS = {1: "Friends", 2: "Family", 3: "Couple", 4: "Professional", 5: "Commercial", 6: "No relation"}
OPTIONS = [LABELS[k] for k in sorted(LABELS)]
SPLITS = ("train", "val", "test")
UNASSIGNED = "unassigned"
INFO_FILE = "annotation_image_info.json"
RELATION_FILE = "relationship.json"
PAIR_KEY = re.compile(r"^\s*(\d+)\s+(\d+)\s*$")


def norm_id(value) -> str | None:
    """Image ids appear as ints (info file) and strings (relationship keys, split lists)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int):
        return str(value) if value >= 0 else None
    if isinstance(value, str) and value.strip().isdigit():
        return str(int(value.strip()))
    return None


def box_of(raw) -> list[float] | None:
    """Four numbers [x1, y1, x2, y2] (kept as given: ints stay ints), or None."""
    if not isinstance(raw, list) or len(raw) != 4:
        return None
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in raw):
        return None
    return list(raw)


def fmt_box(box: list[float]) -> str:
    return "[" + ", ".join(str(int(v)) if float(v).is_integer() else f"{v:.1f}" for v in box) + "]"


def relative_positions(a: list[float], b: list[float]) -> tuple[str, str, bool]:
    """Words for two boxes by their centres: ('on the left', 'on the right', swap) where `swap`
    says b is the one mentioned first. Side by side first; one above the other otherwise."""
    ax, ay = (a[0] + a[2]) / 2, (a[1] + a[3]) / 2
    bx, by = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
    if ax != bx:
        return "on the left", "on the right", bx < ax
    if ay != by:
        return "higher in the picture", "lower in the picture", by < ay
    return "in the first box", "in the second box", False


@register
class PiscReader(Reader):
    name = "pisc"
    description = "PISC social relationships: one six-way multiple-choice question per annotated pair of people"
    required = (
        (INFO_FILE,),
        (RELATION_FILE,),
        ("relationship_split/relation_*idx.json",),
        ("image", "image.zip"),
    )
    wrappers = ("PISC",)
    inner_names = ("image", "relationship_split", "domain_split")
    image_hint = "PISC photos are image/<id:05d>.jpg in the PISC folder (the extracted image.zip, or the zip itself)"

    def stores(self, base) -> dict:
        if base.isdir("image") or not base.isfile("image.zip"):
            return {}
        inside = "image" if any(e.name == "image" for e in base.zip_root("image.zip").ls()) else ""
        return {"image": base.zip_root("image.zip", inside)}
    skipped_splits: dict[str, str] = {}
    stratify_key = "answer_text"

    def read(self, root) -> Iterator[Item]:
        split_of: dict[str, str] = {}
        for split in SPLITS:
            rel = f"relationship_split/relation_{split}idx.json"
            if root.exists(rel):
                yield from guarded(self.name, rel, lambda rel=rel, split=split: self._load_split(root, rel, split, split_of))
        info: dict[str, tuple] = {}
        yield from guarded(self.name, INFO_FILE, lambda: self._load_info(root, info))
        yield from guarded(self.name, RELATION_FILE, lambda: self._pairs(root, info, split_of))

    def _load_split(self, root, rel: str, split: str, split_of: dict[str, str]) -> Iterator[Item]:
        ids = load_json(root, rel)
        if not isinstance(ids, list):
            yield Reject(self.name, None, "wrong_shape", f"{rel}: a split file must hold a list of image ids, "
                         f"not a {type(ids).__name__}", rel, ids, rows=None)
            return
        for raw in ids:
            key = norm_id(raw)
            if key is None:
                yield self.reject(None, "malformed_record", f"split entry {raw!r} is not an image id", rel, raw)
            else:
                split_of.setdefault(key, split)  # listed twice: the first of train, val, test wins

    def _load_info(self, root, info: dict[str, tuple]) -> Iterator[Item]:
        """image id -> (width, height, raw bbox list); only these fields are kept in memory."""
        for pos, item in json_records(self, root, INFO_FILE):
            if type(item) is Reject:
                yield item
                continue
            key = norm_id(item.get("id")) if isinstance(item, dict) else None
            if key is None:
                yield self.reject(None, "malformed_record", "image info entry without a usable 'id'",
                                  f"{INFO_FILE}#{pos}", item)
                continue
            info[key] = (item.get("imgW"), item.get("imgH"), item.get("bbox"))

    def _pairs(self, root, info: dict[str, tuple], split_of: dict[str, str]) -> Iterator[Item]:
        for raw_id, pairs in json_records(self, root, RELATION_FILE, kind="object"):
            if type(pairs) is Reject:
                yield pairs
                continue
            image_id = norm_id(raw_id)
            where = f"{RELATION_FILE}[{raw_id}]"
            if image_id is None or not isinstance(pairs, dict):
                yield self.reject(raw_id, "malformed_record",
                                  "relationship entry needs a numeric image id mapping to an object of pairs",
                                  where, pairs)
                continue
            for key, label in pairs.items():
                yield self._pair(image_id, key, label, info.get(image_id), split_of.get(image_id, UNASSIGNED),
                                 f"{where}[{key}]")

    def _pair(self, image_id: str, key, label, entry, split: str, where: str) -> Item:
        m = PAIR_KEY.match(key) if isinstance(key, str) else None
        nid = f"{image_id}/{m.group(1)}-{m.group(2)}" if m else f"{image_id}/{key}"
        record = {"image_id": image_id, "pair": key, "label": label}
        if not m:
            return self.reject(nid, "malformed_record", f"pair key {key!r} is not two person indices", where, record)
        i, j = int(m.group(1)), int(m.group(2))
        lab = label if isinstance(label, int) and not isinstance(label, bool) else norm_id(label)
        lab = int(lab) if lab is not None else None
        if lab not in LABELS:
            return self.reject(nid, "malformed_record", f"unknown relationship label {label!r} (expected 1-6)",
                               where, record)
        if entry is None:
            return self.reject(nid, "malformed_record", f"image {image_id} has no entry in {INFO_FILE}", where, record)
        width, height, bboxes = entry
        record["bbox"] = bboxes
        if not isinstance(bboxes, list):
            return self.reject(nid, "malformed_record", f"image {image_id} has no bbox list", where, record)
        if i == j or not (1 <= i <= len(bboxes)) or not (1 <= j <= len(bboxes)):
            return self.reject(nid, "malformed_record",
                               f"pair ({i}, {j}) is outside the image's {len(bboxes)} person boxes (1-based)",
                               where, record)
        a, b = box_of(bboxes[i - 1]), box_of(bboxes[j - 1])
        if a is None or b is None:
            return self.reject(nid, "malformed_record", "a person box is not four numbers [x1, y1, x2, y2]",
                               where, record)
        first_words, second_words, swap = relative_positions(a, b)
        persons, boxes = ([j, i], [b, a]) if swap else ([i, j], [a, b])
        question = (f"What is the social relationship between the person {first_words} (box {fmt_box(boxes[0])}) "
                    f"and the person {second_words} (box {fmt_box(boxes[1])})? "
                    "Boxes are pixel coordinates [x1, y1, x2, y2].")
        answer = letter(lab - 1)
        meta = {
            "image_id": image_id,
            "pair": [i, j],
            "persons": persons,
            "boxes": boxes,
            "positions": [first_words, second_words],
            "label": lab,
            "answer_text": LABELS[lab],
            "image_size": [width, height],
            "num_people": len(bboxes),
        }
        return Sample(
            source=self.name,
            native_id=nid,
            split=split,
            image_path=f"image/{int(image_id):05d}.jpg",
            question=question,
            answer=answer,
            conversations=single_turn(multiple_choice_question(question, OPTIONS), answer),
            options=list(OPTIONS),
            meta=meta,
        )
