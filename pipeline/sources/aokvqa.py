"""A-OKVQA.

Native layout (allenai/aokvqa README and load_aokvqa.py): `aokvqa_v1p0_{split}.json`, a JSON array of
`{split, image_id (int), question_id, question, choices (4), correct_choice_idx, direct_answers (10),
difficult_direct_answer, rationales (3)}`. Images are COCO 2017: `get_coco_path` builds
`<coco_dir>/{split}2017/{image_id:012}.jpg`; the README keeps `datasets/aokvqa/` (where the
annotation tarball is extracted) and `datasets/coco/` side by side. The source folder may be
`datasets/` (the parent), `datasets/aokvqa/` itself, or a folder holding the annotations with
COCO inside it (`coco/{split}2017/`) or flat (`{split}2017/`). Whichever it is, the COCO folder
found (inside, flat, or beside the annotation folder one level up, or the data store's explicit
image root for `coco`) is mounted as `coco/`, so image paths are always `coco/{split}2017/...`.
The test split has no answer keys: skipped. Rows are multiple choice: `options` = choices, `answer` =
the correct letter, `meta.answer_text` = its text, `hints` = the rationales.
"""
from __future__ import annotations

import posixpath
import re
from typing import Iterator

from pipeline.sources import register
from pipeline.sources.base import (
    Item,
    Reader,
    Reject,
    Sample,
    Skip,
    guarded,
    json_records,
    letter,
    multiple_choice_question,
    single_turn,
)
from pipeline.storage import Root

FILE = re.compile(r"^aokvqa_v1p0_(?P<split>[A-Za-z0-9_]+)\.json$")


def coco_store(base: Root) -> Root | None:
    """Where COCO's `{split}2017/` folders are, when not at `coco/` inside the dataset folder:
    the dataset folder itself (flat), or `coco/` beside it (the README's `datasets/` layout)."""
    if base.isdir("coco"):
        return None
    if base.glob("*2017"):
        return base
    parent = base.parent()
    if parent is not None and parent.isdir("coco"):
        return parent.child("coco")
    return None


def str_list(value) -> list[str] | None:
    if type(value) is not list or any(type(v) is not str for v in value):
        return None
    return value


@register
class AOKVQAReader(Reader):
    name = "aokvqa"
    description = "A-OKVQA: outside-knowledge questions over COCO, multiple choice with rationales"
    required = (("aokvqa_v1p0_*.json",),)
    wrappers = ("aokvqa", "datasets/aokvqa")
    image_hint = ("A-OKVQA images are COCO 2017's: expected coco/{split}2017/ inside the A-OKVQA folder or a "
                  "coco/ folder beside it (datasets/coco next to datasets/aokvqa), or the data store's image "
                  "root for 'coco'")

    def stores(self, base: Root) -> dict[str, Root]:
        coco = coco_store(base)
        return {"coco": coco} if coco is not None else {}
    skipped_splits = {"test": "answer keys are not public (the test file has no correct_choice_idx)"}

    def read(self, root: Root) -> Iterator[Item]:
        for rel in root.glob("aokvqa_v1p0_*.json"):
            m = FILE.match(posixpath.basename(rel))
            if not m:
                yield Skip(rel, "not an A-OKVQA annotation file name (aokvqa_v1p0_<split>.json)")
                continue
            split = m.group("split")
            if split in self.skipped_splits:
                yield Skip(rel, self.skipped_splits[split])
                continue
            coco_split = split.split("_", 1)[0]  # test_w_ans -> test2017
            folder = f"coco/{coco_split}2017"
            yield from guarded(self.name, rel, lambda rel=rel, split=split, folder=folder: self._read_file(root, rel, split, folder))

    def _read_file(self, root: Root, rel: str, split: str, folder: str) -> Iterator[Item]:
        for index, record in json_records(self, root, rel):
            where = f"{rel}[{index}]"
            if type(record) is Reject:
                yield record
                continue
            if type(record) is not dict:
                yield self.reject(None, "malformed_record", f"record is a {type(record).__name__}, not an object", where, record)
                continue
            qid = record.get("question_id")
            if type(qid) is int:
                qid = str(qid)
            if type(qid) is not str or not qid.strip():
                yield self.reject(None, "malformed_record", "'question_id' is missing or not a string", where, record)
                continue
            qid = qid.strip()
            image_id = record.get("image_id")
            question = record.get("question")
            choices = str_list(record.get("choices"))
            idx = record.get("correct_choice_idx")
            problem = None
            if type(image_id) is not int:
                problem = "'image_id' is missing or not an integer"
            elif type(question) is not str:
                problem = "'question' is missing or not a string"
            elif choices is None or len(choices) < 2:
                problem = "'choices' is missing or not a list of at least two strings"
            elif type(idx) is not int:
                problem = "'correct_choice_idx' is missing or not an integer"
            if problem:
                yield self.reject(qid, "malformed_record", problem, where, record)
                continue
            if not 0 <= idx < len(choices):
                yield self.reject(qid, "bad_option_index", f"correct_choice_idx {idx} is outside the {len(choices)} choices", where, record)
                continue
            options = [c.strip() for c in choices]
            question = question.strip()
            answer = letter(idx)
            rationales = str_list(record.get("rationales")) or []
            direct = str_list(record.get("direct_answers")) or []
            meta = {
                "answer_text": options[idx],
                "direct_answers": direct,
                "difficult_direct_answer": record.get("difficult_direct_answer") is True,
                "image_id": image_id,
                "question_id": qid,
            }
            yield Sample(
                self.name,
                qid,
                split,
                f"{folder}/{image_id:012d}.jpg",
                question,
                answer,
                single_turn(multiple_choice_question(question, options), answer),
                options=options,
                hints=[r.strip() for r in rationales if r.strip()],
                meta=meta,
            )
