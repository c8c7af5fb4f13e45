"""DocVQA (single page, Task 1).

Each annotation file is `{dataset_name, dataset_split, dataset_version, data: [{questionId, question,
question_types?, image: "documents/<stem>.png", docId, ucsf_document_id, ucsf_document_page_no,
answers, data_split}]}`. Two published layouts, both accepted (and both read when both are there):
- current (RRC downloads `spdocvqa_qas.zip` + `spdocvqa_images.tar.gz`):
  `spdocvqa_qas/{train,val}_v1.0_withQT.json`, `spdocvqa_qas/test_v1.0.json`, images flat in
  `spdocvqa_images/<stem>.png`, so the record's `documents/` prefix maps to `spdocvqa_images/`;
- original: `{split}/{split}_v1.0.json` with images in `{split}/documents/<stem>.png`.
The source folder may be the folder holding either layout, or one of its inner folders
(`spdocvqa_qas/`, `train/`, ...: then its parent is the dataset folder). The test split has no
answers: skipped. answer = answers[0]; all answers go to meta.
native_id = `<split>/<questionId>`.
"""
from __future__ import annotations

import posixpath
import re
from typing import Iterator

from pipeline.sources import register
from pipeline.sources.base import Item, Reader, Reject, Sample, Skip, guarded, json_records, single_turn
from pipeline.storage import Root

CURRENT_QAS = "spdocvqa_qas"
CURRENT_IMAGES = "spdocvqa_images"
FILE = re.compile(r"^(?P<split>[A-Za-z]+)_v1\.0(?:_withQT)?\.json$")
OPTIONAL_META = ("docId", "ucsf_document_id", "ucsf_document_page_no", "data_split")


def current_image(image: str) -> str:
    """`documents/abc_1.png` -> `spdocvqa_images/abc_1.png` (the current release is flat)."""
    return f"{CURRENT_IMAGES}/{posixpath.basename(image)}"


def annotation_files(root: Root) -> list[tuple[str, str, str]]:
    """(relative path, split, layout) of every annotation file of either layout."""
    found = []
    for rel in root.glob(f"{CURRENT_QAS}/*.json"):
        m = FILE.match(posixpath.basename(rel))
        if m:
            found.append((rel, m.group("split"), "current"))
    for rel in root.glob("*/*_v1.0.json"):
        folder, base = posixpath.split(rel)
        m = FILE.match(base)
        if m and folder == m.group("split") and folder != CURRENT_QAS:
            found.append((rel, m.group("split"), "original"))
    return found


@register
class DocVQAReader(Reader):
    name = "docvqa"
    description = "DocVQA single-page: questions whose answers are text in scanned documents"
    required = ((f"{CURRENT_QAS}/*_v1.0*.json", "*/*_v1.0.json"),)
    inner_names = (CURRENT_QAS, CURRENT_IMAGES, "train", "val", "test")
    image_hint = (f"DocVQA images are in {CURRENT_IMAGES}/ (current release) or <split>/documents/ "
                  "(original release), beside the annotation folders")
    skipped_splits = {"test": "answers are not public"}

    def read(self, root: Root) -> Iterator[Item]:
        for rel, split, layout in annotation_files(root):
            if split in self.skipped_splits:
                yield Skip(rel, self.skipped_splits[split])
                continue
            yield from guarded(
                self.name, rel, lambda rel=rel, split=split, layout=layout: self._read_file(root, rel, split, layout)
            )

    def _read_file(self, root: Root, rel: str, split: str, layout: str) -> Iterator[Item]:
        for index, record in json_records(self, root, rel, key="data"):
            where = f"{rel}[data][{index}]"
            if type(record) is Reject:
                yield record
                continue
            if type(record) is not dict:
                yield self.reject(None, "malformed_record", f"record is a {type(record).__name__}, not an object", where, record)
                continue
            qid = record.get("questionId")
            if type(qid) is float and qid.is_integer():
                qid = int(qid)
            if type(qid) not in (int, str) or not str(qid).strip():
                yield self.reject(None, "malformed_record", "'questionId' is missing or not an integer/string", where, record)
                continue
            native_id = f"{split}/{str(qid).strip()}"
            question, image, answers = record.get("question"), record.get("image"), record.get("answers")
            problem = None
            if type(question) is not str:
                problem = "'question' is missing or not a string"
            elif type(image) is not str:
                problem = "'image' is missing or not a string"
            elif type(answers) is not list or any(type(a) is not str for a in answers):
                problem = "'answers' is missing or not a list of strings"
            if problem:
                yield self.reject(native_id, "malformed_record", problem, where, record)
                continue
            image = image.strip().lstrip("/")
            if not image:
                image_path = None
            elif layout == "current":
                image_path = current_image(image)
            else:
                image_path = posixpath.normpath(f"{split}/{image}")
            answers = [a.strip() for a in answers]
            question = question.strip()
            answer = answers[0] if answers else ""
            meta = {"answers": answers, "layout": layout}
            types = record.get("question_types")
            if type(types) is list:
                meta["question_types"] = [t for t in types if type(t) is str]
            for key in OPTIONAL_META:
                value = record.get(key)
                if value is not None and type(value) in (int, float, str):
                    meta[key] = value
            yield Sample(
                self.name,
                native_id,
                split,
                image_path,
                question,
                answer,
                single_turn(question, answer),
                meta=meta,
            )
