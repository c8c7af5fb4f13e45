"""CLEVR-Math: arithmetic word problems over CLEVR scenes ("Subtract all red cubes. How many
objects are left?").

Native layout, as released on the Hugging Face hub (dali-does/clevr-math, loader
`clevr-math.py`): two zips of question files, each holding `clevr-math-{train,val,test}.json` =
`{info, questions: [{split, image_filename, image_index, image (file stem), question, program,
answer (int), template_filename, question_family_index, question_index}]}`:
    clevr-math.zip              the "general" configuration
    clevr-math-multihop.zip     the "multihop" configuration (multi-hop questions in test)
Either zip may also be extracted into a folder of the same name (`clevr-math/`,
`clevr-math-multihop/`; loose `clevr-math-{split}.json` files at the root count as "general").
When a configuration is present both extracted and zipped, the extracted files are read and the
zip is not, so no question is read twice.

Images (as the official loader joins them): train/val questions use the original CLEVR renders,
`CLEVR_v1.0/images/{split}/{image_filename}` (the extracted CLEVR_v1.0.zip); the test split uses
CLEVR-Math's own renders, kept apart because CLEVR's own test images share their names:
`clevr-math-test-images/CLEVR_v1.0/images/test/{image_filename}` (the extracted
clevr-math-test-images.zip). Images must be extracted; question files may stay zipped.
Answers are integers and all splits are public. Native id "<configuration>/<split>/<question_index>".
"""
from __future__ import annotations

import posixpath
import re
import zipfile
import zlib
from typing import IO, Iterator

import ijson

from pipeline.sources import register
from pipeline.sources.base import Item, Reader, Sample, guarded, single_turn, text

QUESTION_FILE = re.compile(r"^clevr-math-(?P<split>[a-z]+)\.json$")
TEST_IMAGE_ROOT = "clevr-math-test-images/CLEVR_v1.0/images"
CLEVR_IMAGE_ROOT = "CLEVR_v1.0/images"


def configuration(stem: str) -> str | None:
    """'clevr-math' -> 'general', 'clevr-math-multihop' -> 'multihop'; None for anything else
    (the test-images zip in particular)."""
    if stem == "clevr-math":
        return "general"
    if stem.startswith("clevr-math-") and "image" not in stem:
        return stem[len("clevr-math-"):]
    return None


def answer_text(value) -> str | None:
    """An integer answer as its digits; numeric strings are tolerated; anything else is refused."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
        return str(int(value))
    return None


@register
class ClevrMathReader(Reader):
    name = "clevr_math"
    description = "CLEVR-Math addition/subtraction questions over CLEVR scenes (zips or extracted JSON)"
    required = (("clevr-math*.zip", "clevr-math*/clevr-math-*.json", "clevr-math-*.json"),)
    skipped_splits: dict[str, str] = {}
    stratify_key = "template"

    def read(self, root) -> Iterator[Item]:
        extracted: dict[str, list[tuple[str, str]]] = {}
        for rel in root.glob("clevr-math-*.json") + root.glob("clevr-math*/clevr-math-*.json"):
            m = QUESTION_FILE.match(posixpath.basename(rel))
            folder = posixpath.dirname(rel)
            config = "general" if not folder else configuration(folder)
            if m and config:
                extracted.setdefault(config, []).append((rel, m.group("split")))
        for config in sorted(extracted):
            for rel, split in sorted(extracted[config]):
                yield from guarded(self.name, rel, lambda rel=rel, split=split, config=config: self._questions(
                    root.open(rel, "rb"), config, split, rel))
        for rel in root.glob("clevr-math*.zip"):
            config = configuration(posixpath.basename(rel)[: -len(".zip")])
            if config is None or config in extracted:
                continue
            yield from self._read_zip(root, rel, config)

    def _read_zip(self, root, rel: str, config: str) -> Iterator[Item]:
        try:
            with root.open(rel, "rb") as fh, zipfile.ZipFile(fh) as zf:
                members = []
                for member in zf.namelist():
                    base = posixpath.basename(member)
                    m = QUESTION_FILE.match(base)
                    if m and "__MACOSX" not in member:
                        members.append((member, m.group("split")))
                for member, split in sorted(members):
                    where = f"{rel}!{member}"
                    yield from guarded(self.name, where, lambda member=member, split=split, where=where: self._questions(
                        zf.open(member), config, split, where))
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
            yield self.reject(None, "malformed_record", f"not a readable zip archive: {type(exc).__name__}: {exc}", rel)

    def _questions(self, fh: IO[bytes], config: str, split: str, where_file: str) -> Iterator[Item]:
        with fh:
            for pos, q in enumerate(ijson.items(fh, "questions.item", use_float=True)):
                yield self._item(q, pos, config, split, f"{where_file}#{pos}")

    def _item(self, q, pos: int, config: str, split: str, where: str) -> Item:
        if not isinstance(q, dict):
            return self.reject(None, "malformed_record", f"question #{pos} is not an object", where, q)
        qidx = q.get("question_index", pos)
        if isinstance(qidx, bool) or not isinstance(qidx, (int, str)) or text(qidx) == "":
            return self.reject(None, "malformed_record", "question_index is not an integer or string", where, q)
        nid = f"{config}/{split}/{text(qidx)}"
        problems = []
        if "question" not in q or not isinstance(q["question"], (str, type(None))):
            problems.append("'question' is missing or not a string")
        answer = answer_text(q.get("answer"))
        if answer is None:
            problems.append(f"'answer' is missing or not an integer: {q.get('answer')!r}")
        if problems:
            return self.reject(nid, "malformed_record", "; ".join(problems), where, q)
        question = text(q.get("question"))
        template = text(q.get("template_filename"))
        meta = {
            "configuration": config,
            "template": template[:-5] if template.endswith(".json") else template,
            "question_family_index": q.get("question_family_index"),
            "question_index": q.get("question_index"),
            "image_index": q.get("image_index"),
            "image_filename": q.get("image_filename"),
            "program": q.get("program"),
        }
        return Sample(
            source=self.name,
            native_id=nid,
            split=split,
            image_path=self._image_path(q, split),
            question=question,
            answer=answer,
            conversations=single_turn(question, answer),
            meta=meta,
        )

    @staticmethod
    def _image_path(q: dict, split: str) -> str | None:
        filename = q.get("image_filename")
        if not (isinstance(filename, str) and filename.strip()):
            stem = q.get("image")
            filename = f"{stem.strip()}.png" if isinstance(stem, str) and stem.strip() else None
        if filename is None:
            return None
        filename = posixpath.basename(filename.strip())
        img_split = text(q.get("split")) or split
        if split == "test":
            return f"{TEST_IMAGE_ROOT}/{img_split}/{filename}"
        return f"{CLEVR_IMAGE_ROOT}/{img_split}/{filename}"
