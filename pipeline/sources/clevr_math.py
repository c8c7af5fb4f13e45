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
`CLEVR_v1.0/images/{split}/{image_filename}` (CLEVR_v1.0.zip); the test split uses CLEVR-Math's
own renders, kept apart because CLEVR's own test images share their names:
`clevr-math-test-images/CLEVR_v1.0/images/test/{image_filename}` (clevr-math-test-images.zip holds
`CLEVR_v1.0/images/test/`). Either image store may be extracted into a folder of that name or stay
zipped as downloaded (read in place), or be given as an image root of the data store
(`{"clevr_math": {"CLEVR_v1.0": "<a CLEVR_v1.0 folder>"}}`, e.g. the clevr source's own copy).
The Hugging Face repository keeps all four zips in `data/`: the repository root, `data/` or any
folder holding the question files is accepted. Answers are integers and all splits are public.
Native id "<configuration>/<split>/<question_index>".
"""
from __future__ import annotations

import posixpath
import re
import zipfile
import zlib
from typing import Iterator

from pipeline.sources import register
from pipeline.sources.base import Item, Reader, Reject, Sample, Skip, guarded, json_records, single_turn, text

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
    wrappers = ("data",)
    image_hint = ("CLEVR-Math's train/val images are CLEVR v1.0's: put CLEVR_v1.0.zip (as downloaded) or the "
                  "extracted CLEVR_v1.0/ in the CLEVR-Math folder, or give the data store the image root "
                  "{'clevr_math': {'CLEVR_v1.0': '<your CLEVR_v1.0 folder>'}}; test images come from "
                  "clevr-math-test-images.zip (or its extracted folder)")

    def stores(self, base) -> dict:
        found = {}
        if not base.isdir("CLEVR_v1.0") and base.isfile("CLEVR_v1.0.zip"):
            found["CLEVR_v1.0"] = base.zip_root("CLEVR_v1.0.zip", "CLEVR_v1.0")
        if not base.isdir("clevr-math-test-images") and base.isfile("clevr-math-test-images.zip"):
            found["clevr-math-test-images"] = base.zip_root("clevr-math-test-images.zip")
        return found
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
                    root, rel, config, split, rel))
        for rel in root.glob("clevr-math*.zip"):
            config = configuration(posixpath.basename(rel)[: -len(".zip")])
            if config is None:
                continue  # the test-images zip: an image store, mounted by `stores`
            if config in extracted:
                yield Skip(rel, f"the {config!r} questions are read from the extracted folder")
                continue
            yield from self._read_zip(root, rel, config)

    def _read_zip(self, root, rel: str, config: str) -> Iterator[Item]:
        try:
            archive = root.zip_root(rel)
            members = [(p, QUESTION_FILE.match(posixpath.basename(p))) for p, _ in archive.walk_files(detail=False)]
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as exc:
            yield Reject(self.name, None, "unreadable_file", f"{rel}: not a readable zip archive: "
                         f"{type(exc).__name__}: {exc}", rel, rows=None)
            return
        for member, m in sorted(members, key=lambda x: x[0]):
            if m is None or "__MACOSX" in member:
                continue
            where = f"{rel}!{member}"
            yield from guarded(self.name, where, lambda member=member, split=m.group("split"), where=where:
                               self._questions(archive, member, config, split, where))

    def _questions(self, root, rel: str, config: str, split: str, where_file: str) -> Iterator[Item]:
        for pos, q in json_records(self, root, rel, key="questions"):
            yield q if type(q) is Reject else self._item(q, pos, config, split, f"{where_file}#{pos}")

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
