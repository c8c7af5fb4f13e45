"""CLEVR v1.0: rendered 3-D scenes with compositional questions (counting, attributes, comparisons).

Native layout (the `CLEVR_v1.0/` folder the official `CLEVR_v1.0.zip` extracts into; the source
folder may be that folder, the folder the zip was extracted in, or the folder holding the zip
itself, which is then read in place):
    questions/CLEVR_{split}_questions.json  {info, questions: [{image_index, image_filename, split,
                                             question, answer, question_family_index,
                                             question_index, program}]}
    images/{split}/CLEVR_{split}_{image_index:06d}.png
    scenes/CLEVR_{split}_scenes.json        (scene graphs; not needed here)
Answers are strings ("3", "yes", "cube"). The test split's questions carry no answer and are
skipped as a whole. One question per sample; native id "<split>/<question_index>".
"""
from __future__ import annotations

import posixpath
import re
from typing import Iterator

from pipeline.sources import register
from pipeline.sources.base import Item, Reader, Reject, Sample, Skip, guarded, json_records, single_turn, text

QUESTION_FILE = re.compile(r"^CLEVR_(?P<split>[A-Za-z0-9]+)_questions\.json$")


def answer_text(value) -> str | None:
    """CLEVR answers are strings; an integer count is accepted as its digits. Anything else
    (a list, an object, a boolean, null) is not an answer this reader trusts."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return None


@register
class ClevrReader(Reader):
    name = "clevr"
    description = "CLEVR v1.0 questions over rendered scenes; one question per sample"
    required = (("questions/CLEVR_*_questions.json",), ("images",))
    wrappers = ("CLEVR_v1.0",)
    archives = (("CLEVR_v1.0.zip", "CLEVR_v1.0"),)
    inner_names = ("questions", "images", "scenes")
    image_hint = "CLEVR images are images/<split>/CLEVR_<split>_<index>.png in CLEVR_v1.0/"
    skipped_splits = {"test": "CLEVR test questions have no public answers"}
    stratify_key = "question_family_index"

    def read(self, root) -> Iterator[Item]:
        for rel in root.glob("questions/CLEVR_*_questions.json"):
            m = QUESTION_FILE.match(posixpath.basename(rel))
            if not m:
                yield Skip(rel, "not a CLEVR question file name (CLEVR_<split>_questions.json)")
                continue
            split = m.group("split")
            if split in self.skipped_splits:
                yield Skip(rel, self.skipped_splits[split])
                continue
            yield from guarded(self.name, rel, lambda rel=rel, split=split: self._read_file(root, rel, split))

    def _read_file(self, root, rel: str, split: str) -> Iterator[Item]:
        for pos, q in json_records(self, root, rel, key="questions"):
            where = f"{rel}#{pos}"
            if type(q) is Reject:
                yield q
                continue
            if not isinstance(q, dict):
                yield self.reject(None, "malformed_record", f"question #{pos} is not an object", where, q)
                continue
            qidx = q.get("question_index", pos)
            if isinstance(qidx, bool) or not isinstance(qidx, (int, str)) or text(qidx) == "":
                yield self.reject(None, "malformed_record", "question_index is not an integer or string", where, q)
                continue
            nid = f"{split}/{text(qidx)}"
            problems = []
            if "question" not in q or not isinstance(q["question"], (str, type(None))):
                problems.append("'question' is missing or not a string")
            answer = answer_text(q.get("answer"))
            if answer is None:
                problems.append("'answer' is missing or not a string")
            if problems:
                yield self.reject(nid, "malformed_record", "; ".join(problems), where, q)
                continue
            image_path = self._image_path(q, split)
            question = text(q.get("question"))
            meta = {
                "question_index": q.get("question_index"),
                "image_index": q.get("image_index"),
                "image_filename": q.get("image_filename"),
                "question_family_index": q.get("question_family_index"),
                "program": q.get("program"),
            }
            yield Sample(
                source=self.name,
                native_id=nid,
                split=split,
                image_path=image_path,
                question=question,
                answer=answer,
                conversations=single_turn(question, answer),
                meta=meta,
            )

    @staticmethod
    def _image_path(q: dict, split: str) -> str | None:
        """images/<split>/<image_filename>; the filename is rebuilt from image_index when absent.
        A question naming neither has no image (quarantined centrally as no_image)."""
        img_split = text(q.get("split")) or split
        filename = q.get("image_filename")
        if isinstance(filename, str) and filename.strip():
            return f"images/{img_split}/{posixpath.basename(filename.strip())}"
        index = q.get("image_index")
        if isinstance(index, int) and not isinstance(index, bool):
            return f"images/{img_split}/CLEVR_{img_split}_{index:06d}.png"
        return None
