"""Small trees in each dataset's published layout, written by hand from the datasets' own READMEs
and loaders (not by the demo generator): the folders a user has after downloading and extracting.

Each builder writes under `top` and returns a `Tree`: the folders a user may point the source at
(the archive's extraction root, the dataset folder itself, the parent where the README puts images
beside the annotations, ...), the ids the reader must produce, and the annotation file that the fuzz
tests mutate. Records follow the documented schemas (field names, types, nesting) with made-up
values.
"""
from __future__ import annotations

import io
import json
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image


@dataclass
class Tree:
    folders: dict[str, Path]  # how the folder is reached -> path
    ids: set[str]  # the sample ids every folder must give
    records: Path  # the main annotation file (what the fuzz tests mutate)
    extra: dict = field(default_factory=dict)


def image(path: Path, size=(24, 16), colour=(200, 30, 30), fmt=None) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    fmt = fmt or ("JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG")
    Image.new("RGB", size, colour).save(buf, format=fmt)
    path.write_bytes(buf.getvalue())
    return buf.getvalue()


def image_bytes(size=(24, 16), colour=(10, 120, 30), fmt="PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format=fmt)
    return buf.getvalue()


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=1), encoding="utf-8")


def zip_of(path: Path, members: dict[str, bytes | str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)


# ---- ShareGPT4V (docs/Data.md: ShareGPT4V/data/{coco,sam,llava,...,sharegpt4v/*.json}) ------------

def sharegpt4v(top: Path) -> Tree:
    data = top / "ShareGPT4V" / "data"
    image(data / "coco" / "train2017" / "000000000009.jpg")
    image(data / "sam" / "images" / "sa_227.jpg", colour=(0, 0, 200))
    image(data / "llava" / "llava_pretrain" / "images" / "00000" / "000000010.jpg", colour=(0, 90, 0))
    cap = [
        {"id": "000000000009", "image": "coco/train2017/000000000009.jpg", "conversations": [
            {"from": "human", "value": "What do you see happening in this image?\n<image>"},
            {"from": "gpt", "value": "A red rectangle fills the frame."}]},
        {"id": "sa_227", "image": "sam/images/sa_227.jpg", "conversations": [
            {"from": "human", "value": "<image>\nDescribe this image in detail."},
            {"from": "gpt", "value": "A blue field."}]},
    ]
    mix = [
        {"id": "000000010", "image": "llava/llava_pretrain/images/00000/000000010.jpg", "conversations": [
            {"from": "human", "value": "<image>\nWhat colour is it?"}, {"from": "gpt", "value": "Green."},
            {"from": "human", "value": "Is there text?"}, {"from": "gpt", "value": "No."}]},
        {"id": "text-only-1", "conversations": [{"from": "human", "value": "Write a haiku."},
                                                {"from": "gpt", "value": "Leaves fall."}]},
    ]
    write_json(data / "sharegpt4v" / "sharegpt4v_instruct_gpt4-vision_cap100k.json", cap)
    write_json(data / "sharegpt4v" / "sharegpt4v_mix665k_cap23k_coco-ap9k_lcs3k_sam9k_div2k.json", mix)
    # JSON files of other datasets live in the same data/ folder: never read as rows
    write_json(data / "coco" / "annotations" / "instances_train2017.json", {"images": [], "annotations": []})
    write_json(data / "textvqa" / "TextVQA_0.5.1_train.json", {"dataset_type": "train", "data": []})
    write_json(data / "dataset_info.json", {"description": "not LLaVA records"})
    ids = {"sharegpt4v/sharegpt4v_instruct_gpt4-vision_cap100k/000000000009",
           "sharegpt4v/sharegpt4v_instruct_gpt4-vision_cap100k/sa_227",
           "sharegpt4v/sharegpt4v_mix665k_cap23k_coco-ap9k_lcs3k_sam9k_div2k/000000010"}
    return Tree({"repository root": top / "ShareGPT4V", "data folder": data,
                 "annotation folder": data / "sharegpt4v"}, ids,
                data / "sharegpt4v" / "sharegpt4v_instruct_gpt4-vision_cap100k.json")


# ---- ChartQA (vis-nlp/ChartQA: "ChartQA Dataset/{split}/{split}_{human,augmented}.json, png/") -----

def chartqa(top: Path) -> Tree:
    ds = top / "ChartQA" / "ChartQA Dataset"
    for split in ("train", "test"):
        image(ds / split / "png" / "two_col_1.png")
        write_json(ds / split / f"{split}_human.json", [{"imgname": "two_col_1.png", "query": "What is the peak?",
                                                        "label": "42"}])
        write_json(ds / split / f"{split}_augmented.json", [{"imgname": "two_col_1.png", "query": "List both.",
                                                            "label": "[63, 26]"}])
        (ds / split / "tables").mkdir(exist_ok=True)
        (ds / split / "tables" / "two_col_1.csv").write_text("Year,Value\n2020,42\n")
    ids = {f"chartqa/{s}/{o}/0" for s in ("train", "test") for o in ("human", "augmented")}
    return Tree({"extraction root": top / "ChartQA", "dataset folder": ds, "split folder": ds / "train"}, ids,
                ds / "train" / "train_human.json")


# ---- A-OKVQA (allenai/aokvqa README: datasets/aokvqa/ beside datasets/coco/) -----------------------

def aokvqa_record(qid: str, image_id: int, split: str) -> dict:
    return {"split": split, "image_id": image_id, "question_id": qid, "question": "What is the man holding?",
            "choices": ["an umbrella", "a bat", "a kite", "a phone"], "correct_choice_idx": 2,
            "direct_answers": ["kite"] * 10, "difficult_direct_answer": False,
            "rationales": ["It flies.", "There is a string.", "Wind."]}


def aokvqa(top: Path) -> Tree:
    datasets = top / "datasets"
    write_json(datasets / "aokvqa" / "aokvqa_v1p0_train.json", [aokvqa_record("22MexNkBPpdZGX6sxbxVBH", 299207, "train")])
    write_json(datasets / "aokvqa" / "aokvqa_v1p0_val.json", [aokvqa_record("2gNYDZKsHMcjDMPoRWkVJE", 42, "val")])
    write_json(datasets / "aokvqa" / "aokvqa_v1p0_test.json", [{**aokvqa_record("t1", 7, "test"),
                                                               "correct_choice_idx": None}])
    image(datasets / "coco" / "train2017" / "000000299207.jpg", colour=(1, 2, 3))
    image(datasets / "coco" / "val2017" / "000000000042.jpg")
    (datasets / "coco" / "annotations").mkdir()
    ids = {"aokvqa/22MexNkBPpdZGX6sxbxVBH", "aokvqa/2gNYDZKsHMcjDMPoRWkVJE"}
    return Tree({"parent (README layout)": datasets, "dataset folder": datasets / "aokvqa"}, ids,
                datasets / "aokvqa" / "aokvqa_v1p0_train.json")


# ---- DocVQA (both published layouts) --------------------------------------------------------------

def docvqa_doc(split: str, image: str) -> dict:
    return {"dataset_name": "docvqa", "dataset_split": split, "dataset_version": "1.0", "data": [
        {"questionId": 337, "question": "what is the date mentioned in this letter?", "question_types": ["handwritten"],
         "image": image, "docId": 279, "ucsf_document_id": "xnbl0037", "ucsf_document_page_no": "1",
         "answers": ["1/8/93"], "data_split": split}]}


def docvqa(top: Path) -> Tree:
    cur = top / "docvqa"
    write_json(cur / "spdocvqa_qas" / "train_v1.0_withQT.json", docvqa_doc("train", "documents/xnbl0037_1.png"))
    write_json(cur / "spdocvqa_qas" / "test_v1.0.json", {"dataset_name": "docvqa", "data": []})
    image(cur / "spdocvqa_images" / "xnbl0037_1.png")
    return Tree({"extraction root": cur, "annotation folder": cur / "spdocvqa_qas"}, {"docvqa/train/337"},
                cur / "spdocvqa_qas" / "train_v1.0_withQT.json")


def docvqa_original(top: Path) -> Tree:
    orig = top / "docvqa-original"
    write_json(orig / "val" / "val_v1.0.json", docvqa_doc("val", "documents/xnbl0037_1.png"))
    image(orig / "val" / "documents" / "xnbl0037_1.png")
    return Tree({"extraction root": orig, "split folder": orig / "val"}, {"docvqa/val/337"},
                orig / "val" / "val_v1.0.json")


# ---- PISC (Zenodo record: annotation_image_info.json, relationship.json, relationship_split/, image/) -

def pisc(top: Path, zipped_images: bool = False) -> Tree:
    ds = top / "PISC"
    write_json(ds / "annotation_image_info.json", [
        {"id": 1, "imgW": 640, "imgH": 480, "bbox": [[10, 20, 110, 300], [300, 40, 420, 310]]}])
    write_json(ds / "relationship.json", {"1": {"1 2": 3}})
    for split, members in (("train", ["1"]), ("val", []), ("test", [])):
        write_json(ds / "relationship_split" / f"relation_{split}idx.json", members)
    write_json(ds / "domain.json", {"1": {"1 2": 1}})
    if zipped_images:
        zip_of(ds / "image.zip", {"image/00001.jpg": image_bytes(fmt="JPEG")})
    else:
        image(ds / "image" / "00001.jpg")
    return Tree({"extraction root": top, "dataset folder": ds}, {"pisc/1/1-2"}, ds / "relationship.json")


# ---- CLEVR (CLEVR_v1.0.zip -> CLEVR_v1.0/{questions,images,scenes}) --------------------------------

def clevr_questions(split: str, n: int = 2) -> dict:
    return {"info": {"split": split, "license": "CC BY 4.0", "version": "1.0"}, "questions": [
        {"image_index": i, "image_filename": f"CLEVR_{split}_{i:06d}.png", "split": split,
         "question": f"How many cubes are there {i}?", "answer": str(i + 1), "question_family_index": 40,
         "question_index": i, "program": [{"inputs": [], "function": "scene", "value_inputs": []}]}
        for i in range(n)]}


def clevr(top: Path, zipped: bool = False) -> Tree:
    ids = {"clevr/val/0", "clevr/val/1"}
    members = {"CLEVR_v1.0/questions/CLEVR_val_questions.json": json.dumps(clevr_questions("val")),
               "CLEVR_v1.0/questions/CLEVR_test_questions.json": json.dumps({"info": {}, "questions": []}),
               "CLEVR_v1.0/scenes/CLEVR_val_scenes.json": json.dumps({"info": {}, "scenes": []})}
    for i in range(2):
        members[f"CLEVR_v1.0/images/val/CLEVR_val_{i:06d}.png"] = image_bytes(colour=(i * 90, 40, 40))
    if zipped:
        zip_of(top / "downloads" / "CLEVR_v1.0.zip", members)
        return Tree({"folder holding the zip": top / "downloads"}, ids, top / "downloads" / "CLEVR_v1.0.zip")
    for name, data in members.items():
        path = top / "extracted" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data if isinstance(data, bytes) else data.encode())
    ds = top / "extracted" / "CLEVR_v1.0"
    return Tree({"extraction root": top / "extracted", "dataset folder": ds, "questions folder": ds / "questions"},
                ids, ds / "questions" / "CLEVR_val_questions.json")


# ---- CLEVR-Math (Hugging Face dali-does/clevr-math: data/*.zip, loader joins CLEVR_v1.0/images/...) --

def clevr_math_questions(split: str, template: str) -> dict:
    return {"info": {"split": split}, "questions": [
        {"split": split, "image_filename": f"CLEVR_{split}_000000.png", "image_index": 0,
         "image": f"CLEVR_{split}_000000", "question": "Subtract all red cubes. How many objects are left?",
         "answer": 2, "template_filename": f"{template}.json", "question_family_index": 0, "question_index": 0,
         "program": [{"type": "scene", "inputs": []}]}]}


def clevr_math(top: Path) -> Tree:
    data = top / "clevr-math" / "data"
    zip_of(data / "clevr-math.zip", {
        "clevr-math-train.json": json.dumps(clevr_math_questions("train", "subtraction")),
        "clevr-math-test.json": json.dumps(clevr_math_questions("test", "subtraction"))})
    # the multihop configuration repeats the general one's train question (same image, same words)
    zip_of(data / "clevr-math-multihop.zip", {
        "clevr-math-train.json": json.dumps(clevr_math_questions("train", "subtraction"))})
    zip_of(data / "CLEVR_v1.0.zip", {"CLEVR_v1.0/images/train/CLEVR_train_000000.png": image_bytes(),
                                     "CLEVR_v1.0/LICENSE": "CC BY 4.0"})
    zip_of(data / "clevr-math-test-images.zip", {"CLEVR_v1.0/images/test/CLEVR_test_000000.png": image_bytes(
        colour=(1, 2, 3))})
    ids = {"clevr_math/general/train/0", "clevr_math/general/test/0", "clevr_math/multihop/train/0"}
    return Tree({"repository root": top / "clevr-math", "data folder": data}, ids, data / "clevr-math.zip")


# ---- GeoQA+ (SCNU203/GeoQA-Plus: data/GeoQA2.2/*.pk; chen-judge/GeoQA: GeoQA3/json + image) ---------

def geoqa_problem(pid: int, shade: int = 0) -> dict:
    img = np.full((12, 16), 255 - shade, dtype=np.uint8)
    img[3:9, 4:12] = 0
    return {"id": pid, "subject": f"如图，∠{pid}的度数为（）", "choices": ["30°", "40°", "50°", "60°"],
            "choice_nums": [30.0, 40.0, 50.0, 60.0], "label": 1, "image": img, "manual_program": ["g_half", "N_0"],
            "numbers": [80.0], "formal_point": ["A", "B"]}


def geoqa_plus(top: Path) -> Tree:
    g = top / "GeoQA+" / "data" / "GeoQA2.2"
    g.mkdir(parents=True)
    train = [geoqa_problem(1), geoqa_problem(2, shade=5)]
    (g / "GeoQA-train.pk").write_bytes(pickle.dumps(train, protocol=4))
    (g / "Mix-train.pk").write_bytes(pickle.dumps(train + [geoqa_problem(3, shade=9)], protocol=4))
    (g / "Backtrans-train.pk").write_bytes(pickle.dumps(train, protocol=4))
    (g / "new-test.pk").write_bytes(pickle.dumps([geoqa_problem(4, shade=12)], protocol=4))
    ids = {f"geoqa_plus/GeoQA2.2/GeoQA-train/{i}" for i in (1, 2)} | {
        f"geoqa_plus/GeoQA2.2/Mix-train/{i}" for i in (1, 2, 3)} | {"geoqa_plus/GeoQA2.2/new-test/4"}
    return Tree({"repository root": top / "GeoQA+", "data folder": top / "GeoQA+" / "data"}, ids,
                g / "Mix-train.pk")


def geo170k(top: Path, zipped_images: bool = False) -> Tree:
    ds = top / "Geo170K"
    rows = [{"image": "geoqa_plus/5.png", "conversations": [
        {"from": "human", "value": "<image>\nFirst perform reasoning, then finally select the question from the "
         "choices in the following format: Answer: xxx.\nQuestion: As shown in the figure, angle A = 55°, angle B = "
         "75°, then angle C is ()\nChoices:\nA:130°\nB:50°\nC:60°\nD:40°"},
        {"from": "gpt", "value": "The angles of a triangle add up to 180°, so C = 50°.\nAnswer:B"}]},
        {"image": "geo3k/train/1/img_diagram.png", "conversations": [
            {"from": "human", "value": "<image>\nFind x."}, {"from": "gpt", "value": "Answer:A"}]}]
    write_json(ds / "qa_tuning.json", rows)
    write_json(ds / "alignment.json", [])
    if zipped_images:
        zip_of(ds / "images.zip", {"images/geoqa_plus/5.png": image_bytes()})
    else:
        image(ds / "images" / "geoqa_plus" / "5.png")
    return Tree({"download folder": ds, "images folder": ds / "images"} if not zipped_images else
                {"download folder": ds}, {"geoqa_plus/qa_tuning/0"}, ds / "qa_tuning.json")


# ---- AI2D (ai2d-all.zip -> ai2d/{images,questions,annotations,categories.json}; ids csv beside) -----

def ai2d(top: Path) -> Tree:
    ds = top / "ai2d"
    image(ds / "images" / "0.png", size=(60, 40))
    image(ds / "images" / "1.png", size=(60, 40))
    for n in (0, 1):
        write_json(ds / "questions" / f"{n}.png.json", {"imageName": f"{n}.png", "questions": {
            "What is A in the diagram?": {"abcLabel": True, "answerTexts": ["ears", "nose", "mouth", "face"],
                                          "correctAnswer": 3, "questionId": f"{n}.png-0"},
            "Which part is shown?": {"abcLabel": False, "answerTexts": ["leaf", "root", "stem", "seed"],
                                     "correctAnswer": 0, "questionId": f"{n}.png-1"}}})
        write_json(ds / "annotations" / f"{n}.png.json", {"imageName": f"{n}.png", "text": {
            "T0": {"id": "T0", "rectangle": [[5, 5], [25, 15]], "replacementText": "A", "value": "face"}}})
    write_json(ds / "categories.json", {"0.png": "partsOfA", "1.png": "partsOfA"})
    (top / "ai2d_test_ids.csv").write_text("1\n")
    ids = {"ai2d/0.png-0", "ai2d/0.png-1", "ai2d/1.png-0", "ai2d/1.png-1"}
    return Tree({"extraction root": top, "dataset folder": ds}, ids, ds / "questions" / "0.png.json")


# ---- ScienceQA (lupantech/ScienceQA: data/scienceqa/{problems.json,pid_splits.json,images/{split}/}) --

def scienceqa_problem(split: str, image: str | None = "image.png") -> dict:
    return {"question": "Which of these states is farthest north?", "choices": ["West Virginia", "Louisiana",
            "Arizona", "Oklahoma"], "answer": 0, "hint": "", "image": image, "task": "closed choice",
            "grade": "grade2", "subject": "social science", "topic": "geography", "category": "Geography",
            "skill": "Read a map: cardinal directions", "lecture": "Maps have four cardinal directions.",
            "solution": "West Virginia is farthest north.", "split": split}


def scienceqa(top: Path, zipped_images: bool = False) -> Tree:
    ds = top / "ScienceQA" / "data" / "scienceqa"
    write_json(ds / "problems.json", {"1": scienceqa_problem("train"), "2": scienceqa_problem("train", None),
                                      "3": scienceqa_problem("val")})
    write_json(ds / "pid_splits.json", {"train": ["1", "2"], "val": ["3"], "test": [], "minival": []})
    if zipped_images:
        zip_of(ds / "images" / "train.zip", {"train/1/image.png": image_bytes()})
        zip_of(ds / "images" / "val.zip", {"val/3/image.png": image_bytes(colour=(9, 9, 9))})
    else:
        image(ds / "images" / "train" / "1" / "image.png")
        image(ds / "images" / "val" / "3" / "image.png", colour=(9, 9, 9))
    return Tree({"repository root": top / "ScienceQA", "dataset folder": ds}, {"scienceqa/1", "scienceqa/3"},
                ds / "problems.json")


BUILDERS = {
    "sharegpt4v": sharegpt4v, "chartqa": chartqa, "aokvqa": aokvqa, "docvqa": docvqa, "pisc": pisc,
    "clevr": clevr, "clevr_math": clevr_math, "geoqa_plus": geoqa_plus, "ai2d": ai2d, "scienceqa": scienceqa,
}
