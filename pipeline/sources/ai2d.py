"""AI2D (AI2 Diagrams, allenai release `ai2d-all.zip` + `ai2d_test_ids.csv`).

Native layout (`ai2d-all.zip` extracts into `ai2d/`; `ai2d_test_ids.csv` is a separate download,
kept inside `ai2d/` or beside it in the folder the zip was extracted in; the source folder may be
either of the two):
  images/<n>.png
  questions/<n>.png.json   {imageName, questions: {"<question text>": {abcLabel, answerTexts,
                                                                       correctAnswer, questionId}}}
  annotations/<n>.png.json {text: {"T0": {rectangle: [[x1, y1], [x2, y2]], replacementText, value}}, ...}
  categories.json          {"<n>.png": "<category>"}
  ai2d_test_ids.csv        one image id (the integer <n>) per line, no header

One sample per question, multiple choice. Rows of test images are kept with split "test" (their
answers are public; the subsample step excludes the test split by default, so AI2D_TEST, a
benchmark, never leaks into training data). Questions with `abcLabel` refer to letters that loaders
draw over the diagram's text boxes (each box's `replacementText`); they are kept, and the boxes to
draw are recorded in `meta["abc_boxes"]` so the image can be rendered before it is shown.
"""
from __future__ import annotations

import math
import posixpath
import re
from typing import Iterator

from pipeline.sources import register
from pipeline.sources.base import (
    Item,
    Reader,
    Reject,
    Sample,
    guarded,
    letter,
    load_json,
    multiple_choice_question,
    single_turn,
    text,
)
from pipeline.sources.jsonio import FileProblem
from pipeline.storage import Root

QUESTIONS_DIR = "questions"
IMAGES_DIR = "images"
ANNOTATIONS_DIR = "annotations"
CATEGORIES = "categories.json"
TEST_IDS = "ai2d_test_ids.csv"
# An answer text of "{}" stands for an empty option slot in the release; it is never the answer.
NULL_OPTION = "{}"


def _natural_key(rel: str) -> tuple:
    """questions/10.png.json after questions/9.png.json: order by the number, then by name."""
    name = posixpath.basename(rel)
    m = re.match(r"(\d+)", name)
    return (0, int(m.group(1)), name) if m else (1, 0, name)


def _image_id(image_name: str) -> str:
    """'12.png' -> '12' (the id used by ai2d_test_ids.csv); leading zeros dropped when numeric."""
    stem = image_name.split(".", 1)[0]
    return str(int(stem)) if stem.isdigit() else stem


@register
class AI2DReader(Reader):
    name = "ai2d"
    description = "AI2 Diagrams: science diagrams with four-way multiple-choice questions"
    required = ((f"{QUESTIONS_DIR}/*.json",), (IMAGES_DIR,), (TEST_IDS, f"_up/{TEST_IDS}"))
    wrappers = ("ai2d",)
    inner_names = (QUESTIONS_DIR, IMAGES_DIR, ANNOTATIONS_DIR)
    image_hint = "AI2D images are images/<n>.png in the ai2d folder"

    def stores(self, base: Root) -> dict[str, Root]:
        """The test id list where it was downloaded beside `ai2d/` (mounted as `_up/`, a folder
        name the source fingerprint ignores, holding only that one file's folder)."""
        parent = base.parent()
        if not base.isfile(TEST_IDS) and parent is not None and parent.isfile(TEST_IDS):
            return {"_up": parent}
        return {}

    def is_dataset_folder(self, root: Root) -> bool:
        return bool(root.glob(f"{QUESTIONS_DIR}/*.json")) and root.isdir(IMAGES_DIR)
    skipped_splits: dict[str, str] = {}  # test rows are kept (answers are public), marked "test"
    stratify_key = "category"

    def read(self, root: Root) -> Iterator[Item]:
        test_ids: set[str] = set()
        ids_file = TEST_IDS if root.isfile(TEST_IDS) else f"_up/{TEST_IDS}"
        yield from guarded(self.name, ids_file, lambda: self._test_ids(root, ids_file, test_ids))
        categories = self._categories(root)
        for rel in sorted(root.glob(f"{QUESTIONS_DIR}/*.json"), key=_natural_key):
            yield from guarded(self.name, rel, lambda rel=rel: self._read_file(root, rel, test_ids, categories))

    # ------------------------------------------------------------------------------------------

    def _test_ids(self, root: Root, rel: str, ids: set[str]) -> Iterator[Item]:
        """The test image ids. A line that is not an id is reported: losing one would let a test
        (benchmark) image into training."""
        data = root.read_bytes(rel)
        for number, raw in enumerate(data.splitlines(), 1):
            line = raw.decode("utf-8", errors="replace")
            value = line.strip().split(",")[0].strip()
            if value.isascii() and value.isdigit():
                ids.add(str(int(value)))
            elif value and not (number == 1 and not any(c.isdigit() for c in value)):  # blank or a header
                yield Reject(self.name, None, "malformed_record", f"{rel} line {number} is not an image id: {line[:80]!r}",
                             f"{rel}:{number}", line[:200], rows=0)

    def _categories(self, root: Root) -> dict[str, str]:
        """Optional: an absent or unreadable categories.json leaves `category` unset."""
        if not root.exists(CATEGORIES):
            return {}
        try:
            data = load_json(root, CATEGORIES)
        except FileProblem:
            return {}
        if not isinstance(data, dict):
            return {}
        return {str(k): v for k, v in data.items() if isinstance(v, str)}

    def prepare_image(self, data: bytes, meta: dict) -> bytes:
        if meta.get("abcLabel") and meta.get("abc_boxes"):
            return draw_letter_boxes(data, meta["abc_boxes"])
        return data

    def _abc_boxes(self, root: Root, image_name: str) -> list[dict] | None:
        """The letter boxes loaders draw for abcLabel questions, from annotations/<image>.json."""
        rel = f"{ANNOTATIONS_DIR}/{image_name}.json"
        if not root.exists(rel):
            return None
        try:
            data = load_json(root, rel)
        except FileProblem:
            return None
        boxes = data.get("text") if isinstance(data, dict) else None
        if not isinstance(boxes, dict):
            return None
        out = []
        for key in sorted(boxes):
            box = boxes[key]
            if not isinstance(box, dict):
                continue
            rect, repl = rectangle(box.get("rectangle")), box.get("replacementText")
            if rect is not None and isinstance(repl, str):
                value = box.get("value")
                out.append({"id": str(key), "rectangle": rect, "letter": repl,
                            "value": value if isinstance(value, str) else None})
        return out

    def _read_file(self, root: Root, rel: str, test_ids: set[str], categories: dict[str, str]) -> Iterator[Item]:
        data = load_json(root, rel)  # question files are small (a few kB): parsed whole
        if isinstance(data, dict) and isinstance(data.get("questions"), dict):
            rows = len(data["questions"])
        else:
            rows = None
        file_name = posixpath.basename(rel)
        fallback_name = file_name[: -len(".json")]
        if not isinstance(data, dict) or not isinstance(data.get("questions"), dict):
            found = f"a list of {len(data)} items" if isinstance(data, list) else f"a {type(data).__name__}"
            yield Reject(self.name, fallback_name, "wrong_shape",
                         f"{rel}: question file is {found}, not an object with a 'questions' object", rel, data,
                         rows=len(data) if isinstance(data, (list, dict)) else None)
            return
        image_name = data.get("imageName", fallback_name)
        if not isinstance(image_name, str) or not image_name.strip():
            yield Reject(self.name, fallback_name, "malformed_record", "'imageName' is not a non-empty string", rel,
                         data, rows=rows)
            return
        image_name = image_name.strip()
        split = "test" if _image_id(image_name) in test_ids else "train"
        category = categories.get(image_name)
        abc_boxes: list[dict] | None = None
        abc_loaded = False
        for index, (question_text, entry) in enumerate(data["questions"].items()):
            where = f"{rel}#{index}"
            qid = entry.get("questionId") if isinstance(entry, dict) else None
            if not isinstance(qid, (str, int)) or isinstance(qid, bool) or not str(qid).strip():
                yield self.reject(None, "malformed_record", "question lacks a 'questionId'", where,
                                  {question_text: entry})
                continue
            qid = str(qid).strip()
            problem = self._check_entry(entry)
            if problem:
                yield self.reject(qid, "malformed_record", problem, where, {question_text: entry})
                continue
            texts: list[str] = entry["answerTexts"]
            correct: int = entry["correctAnswer"]
            if not 0 <= correct < len(texts):
                yield self.reject(qid, "bad_option_index",
                                  f"correctAnswer {correct} is outside the {len(texts)} answer texts", where,
                                  {question_text: entry})
                continue
            if text(texts[correct]) in ("", NULL_OPTION):
                yield self.reject(qid, "bad_option_index",
                                  f"correctAnswer {correct} points at an empty option slot", where,
                                  {question_text: entry})
                continue
            options, answer_index = self._prune(texts, correct)
            abc = entry.get("abcLabel", False) is True
            meta = {
                "questionId": qid,
                "image_name": image_name,
                "category": category,
                "abcLabel": abc,
                "answer_text": options[answer_index],
                "correctAnswer": correct,
            }
            if options != [text(t) for t in texts]:
                meta["native_answer_texts"] = texts
            if abc:
                if not abc_loaded:
                    abc_boxes, abc_loaded = self._abc_boxes(root, image_name), True
                meta["abc_boxes"] = abc_boxes
            question = text(question_text)
            answer = letter(answer_index)
            yield Sample(
                source=self.name,
                native_id=qid,
                split=split,
                image_path=f"{IMAGES_DIR}/{image_name}",
                question=question,
                answer=answer,
                conversations=single_turn(multiple_choice_question(question, options), answer),
                options=options,
                hints=[],
                meta=meta,
            )

    @staticmethod
    def _check_entry(entry) -> str | None:
        if not isinstance(entry, dict):
            return "question entry is not an object"
        texts = entry.get("answerTexts")
        if not isinstance(texts, list) or not texts:
            return "'answerTexts' is missing or not a non-empty list"
        if not all(isinstance(t, (str, int, float)) and not isinstance(t, bool) for t in texts):
            return "'answerTexts' holds a value that is not text"
        if len(texts) > 26:
            return "'answerTexts' has more options than letters"
        correct = entry.get("correctAnswer")
        if not isinstance(correct, int) or isinstance(correct, bool):
            return "'correctAnswer' is missing or not an integer"
        abc = entry.get("abcLabel", False)
        if not isinstance(abc, bool):
            return "'abcLabel' is not a boolean"
        return None

    @staticmethod
    def _prune(texts: list, correct: int) -> tuple[list[str], int]:
        """Drop empty slots ("{}") and repeated options, keeping the correct one's position mapped.
        A repeated option that is the correct one maps to its first occurrence."""
        options: list[str] = []
        position: dict[str, int] = {}
        answer_index = -1
        for i, raw in enumerate(texts):
            value = text(raw)
            if value in ("", NULL_OPTION):
                continue
            if value not in position:
                position[value] = len(options)
                options.append(value)
            if i == correct:
                answer_index = position[value]
        return options, answer_index


def rectangle(raw) -> list[list[float]] | None:
    """[[x1, y1], [x2, y2]] of finite numbers, or None (a box that cannot be drawn)."""
    if not isinstance(raw, list) or len(raw) != 2:
        return None
    points = []
    for point in raw:
        if not isinstance(point, list) or len(point) != 2:
            return None
        if any(isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) for v in point):
            return None
        points.append(list(point))
    return points


def draw_letter_boxes(data: bytes, boxes: list[dict]) -> bytes:
    """Cover each text box with a white rectangle holding its replacement letter, as AI2D's loaders
    do for `abcLabel` questions (the released images show the original words, not the letters)."""
    import io

    from PIL import Image, ImageDraw, ImageFont

    with Image.open(io.BytesIO(data)) as im:
        im = im.convert("RGB")
    draw = ImageDraw.Draw(im)
    for box in boxes:
        rect = rectangle(box.get("rectangle")) if isinstance(box, dict) else None
        if rect is None:  # meta written by an older reader, or edited: never crash the step
            continue
        (x1, y1), (x2, y2) = rect
        x1, x2 = sorted((int(x1), int(x2)))
        y1, y2 = sorted((int(y1), int(y2)))
        draw.rectangle([x1, y1, x2, y2], fill=(255, 255, 255), outline=(0, 0, 0))
        size = max(8, min(x2 - x1, y2 - y1) - 2)
        font = ImageFont.load_default(size=size)
        draw.text(((x1 + x2) / 2, (y1 + y2) / 2), str(box.get("letter", "")), fill=(0, 0, 0), font=font, anchor="mm")
    out = io.BytesIO()
    im.save(out, format="PNG")
    return out.getvalue()
