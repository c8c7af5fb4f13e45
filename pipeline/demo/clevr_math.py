"""Embedded CLEVR-Math sample: CLEVR-style scenes with add/subtract questions answered from the
scene graph. Questions of the "general" configuration ship zipped (clevr-math.zip, as released);
the "multihop" configuration ships extracted, to exercise both forms the reader accepts.
"""
from __future__ import annotations

import io
import json
import random
import zipfile

from pipeline.demo.clevr import COLOUR_NAMES, SHAPES, SIZES, Obj, _select, draw_scene, make_scene
from pipeline.demo.common import DemoWriter, Planted

ZIP_TIME = (2022, 8, 1, 0, 0, 0)  # fixed member stamps: the zip is byte-identical for a seed
INFO = {"license": "Creative Commons Attribution Share Alike 4.0 International", "version": "1.0"}


def _describe(colour: str | None, size: str | None, shape: str) -> str:
    words = [w for w in (size, colour) if w]
    return " ".join(words + [shape + "s"])


def _filter_prog(start: int, **attrs) -> list[dict]:
    prog, last = [], start
    for key in ("size", "color", "shape"):
        if attrs.get(key):
            prog.append({"inputs": [last], "type": f"filter_{key}", "value_inputs": [attrs[key]]})
            last = start + len(prog)
    return prog


def math_questions(rng: random.Random, objs: list[Obj]) -> list[dict]:
    """Candidate questions; each answer is computed from `objs` and is true for the drawn scene."""
    out = []
    o = rng.choice(objs)
    colour, shape = o.colour, o.shape
    removed = len(_select(objs, color=colour, shape=shape))
    out.append({
        "template_filename": "subtraction.json", "question_family_index": 0,
        "question": f"Subtract all {_describe(colour, None, shape)}. How many objects are left?",
        "answer": len(objs) - removed,
        "program": [{"inputs": [], "type": "scene"}] + _filter_prog(0, color=colour, shape=shape)
        + [{"inputs": [0, 2], "type": "subtraction"}],
    })
    size, shape = rng.choice(SIZES), rng.choice(SHAPES)
    removed = len(_select(objs, size=size, shape=shape))
    out.append({
        "template_filename": "subtraction.json", "question_family_index": 1,
        "question": f"Subtract all {_describe(None, size, shape)}. How many objects are left?",
        "answer": len(objs) - removed,
        "program": [{"inputs": [], "type": "scene"}] + _filter_prog(0, size=size, shape=shape)
        + [{"inputs": [0, 2], "type": "subtraction"}],
    })
    k, colour, shape = rng.randint(1, 3), rng.choice(COLOUR_NAMES), rng.choice(SHAPES)
    noun = _describe(colour, None, shape) if k > 1 else f"{colour} {shape}"
    out.append({
        "template_filename": "addition.json", "question_family_index": 0,
        "question": f"Add {k} {noun}. How many objects exist?",
        "answer": len(objs) + k,
        "program": [{"inputs": [], "type": "scene"}, {"inputs": [], "type": "choose", "value_inputs": [str(k)]},
                    {"inputs": [0, 1], "type": "addition"}],
    })
    o = rng.choice(objs)
    other = rng.choice([s for s in SHAPES if s != o.shape])
    left = len(_select(objs, shape=other))  # removing o.colour o.shape objects leaves every `other`
    counted = rng.choice([o.shape, other])
    if counted == o.shape:
        left = len(_select(objs, shape=o.shape)) - len(_select(objs, color=o.colour, shape=o.shape))
    out.append({
        "template_filename": "adversarial.json", "question_family_index": 0,
        "question": f"Subtract all {_describe(o.colour, None, o.shape)}. How many {counted}s are left?",
        "answer": left,
        "program": [{"inputs": [], "type": "scene"}] + _filter_prog(0, color=o.colour, shape=o.shape)
        + [{"inputs": [0], "type": "filter_shape", "value_inputs": [counted]},
           {"inputs": [3, 2], "type": "subtraction"}],
    })
    return out


def multihop_question(rng: random.Random, objs: list[Obj]) -> dict:
    a, b = rng.sample(objs, 2) if len(objs) > 1 else (objs[0], objs[0])
    gone = {id(x) for x in _select(objs, color=a.colour, shape=a.shape)}
    gone |= {id(x) for x in _select(objs, size=b.size, shape=b.shape)}
    return {
        "template_filename": "subtraction-multihop.json", "question_family_index": 0,
        "question": (f"Subtract all {_describe(a.colour, None, a.shape)}. "
                     f"Subtract all {_describe(None, b.size, b.shape)}. How many objects are left?"),
        "answer": len(objs) - len(gone),
        "program": [{"inputs": [], "type": "scene"}],
    }


def _record(split: str, index: int, fname: str, q: dict, qindex: int) -> dict:
    return {"split": split, "image_filename": fname, "image_index": index, "image": fname[:-4],
            "question": q["question"], "program": q["program"], "answer": q["answer"],
            "template_filename": q["template_filename"],
            "question_family_index": q["question_family_index"], "question_index": qindex}


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            info = zipfile.ZipInfo(name, date_time=ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, data)
    return buf.getvalue()


def _image_rel(split: str, fname: str) -> str:
    if split == "test":
        return f"clevr-math-test-images/CLEVR_v1.0/images/test/{fname}"
    return f"CLEVR_v1.0/images/{split}/{fname}"


def write(w: DemoWriter) -> list[Planted]:
    planted: list[Planted] = []
    general: dict[str, bytes] = {}
    test_scenes: list[tuple[int, str, list[Obj]]] = []
    for split, images, per_image in (("train", 4, 3), ("val", 2, 3), ("test", 2, 2)):
        questions = []
        for index in range(images):
            objs = make_scene(w.rng, 3, 7)
            fname = f"CLEVR_{split}_{index:06d}.png"
            w.image(_image_rel(split, fname), draw_scene(objs))
            if split == "test":
                test_scenes.append((index, fname, objs))
            for q in w.rng.sample(math_questions(w.rng, objs), per_image):
                questions.append(_record(split, index, fname, q, len(questions)))
        if split == "train":
            planted += _plant_bad_rows(w, questions)
        general[f"clevr-math-{split}.json"] = json.dumps(
            {"info": {**INFO, "split": split}, "questions": questions}).encode()
    w.bytes("clevr-math.zip", _zip(general))

    # the multihop configuration, extracted: multi-hop questions on the test renders
    hops = [_record("test", index, fname, multihop_question(w.rng, objs), i)
            for i, (index, fname, objs) in enumerate(test_scenes)]
    w.json("clevr-math-multihop/clevr-math-test.json", {"info": {**INFO, "split": "test"}, "questions": hops})
    # a question file cut short: a reject for the file (no usable id), not a crash
    w.text("clevr-math-multihop/clevr-math-val.json", '{"info": {}, "questions": [{"split": "val", "quest')
    planted.append(Planted(None, "unreadable_file"))
    return planted


def _plant_bad_rows(w: DemoWriter, questions: list[dict]) -> list[Planted]:
    planted = []
    base = dict(questions[0])

    def add(reason: str, drop: tuple = (), **changes) -> None:
        q = {**base, **changes, "question_index": len(questions)}
        for key in drop:
            q.pop(key, None)
        questions.append(q)
        planted.append(Planted(f"general/train/{q['question_index']}", reason))

    add("missing_image", image_index=80, image_filename="CLEVR_train_000080.png", image="CLEVR_train_000080")
    w.corrupt_image(_image_rel("train", "CLEVR_train_000081.png"))
    add("unreadable_image", image_index=81, image_filename="CLEVR_train_000081.png", image="CLEVR_train_000081")
    add("malformed_record", answer="three")  # not an integer
    add("malformed_record", drop=("answer",))
    add("malformed_record", question=["Subtract all cubes."])
    add("empty_question", question="")
    add("no_image", drop=("image_filename", "image", "image_index"))
    return planted
