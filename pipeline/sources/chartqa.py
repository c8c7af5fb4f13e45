"""ChartQA.

Native layout (vis-nlp/ChartQA README and the `ChartQA Dataset` folder of that repository):
`ChartQA Dataset/{train,val,test}/` (the folder name has a space; the dataset folder is
`ChartQA Dataset` itself, found from the repository checkout or the folder its zip extracts into),
each split with
`{split}_human.json` (ChartQA-H, human-written) and `{split}_augmented.json` (ChartQA-M, machine
generated): JSON arrays of `{imgname, query, label}`; chart images in `png/<imgname>`, the data
tables in `tables/<stem>.csv`, and (full version only) `annotations/<stem>.json`.
`label` is a string, sometimes list-like (`"[4, 9]"`). The test answers are public, so every split
present is read; the split is recorded on each row.
native_id = `<split>/<human|augmented>/<index in the file>`; image paths are relative to
`ChartQA Dataset/` (`train/png/<imgname>`).
"""
from __future__ import annotations

import posixpath
import re
from typing import Iterator

from pipeline.sources import register
from pipeline.sources.base import Item, Reader, Reject, Sample, Skip, guarded, json_records, single_turn
from pipeline.storage import Root

TOP = "ChartQA Dataset"
ORIGINS = ("human", "augmented")
FILE = re.compile(r"^(?P<split>[^/]+)_(?P<origin>human|augmented)\.json$")


def label_text(label) -> str | None:
    """The answer as text; numbers (not in the release, but harmless) are written plainly."""
    if type(label) is str:
        return label
    if type(label) is int:
        return str(label)
    if type(label) is float:
        return str(int(label)) if label.is_integer() else repr(label)
    return None


def list_items(label: str) -> list[str] | None:
    """`"[63, 26]"` -> ["63", "26"]; None when the label is not list-like."""
    s = label.strip()
    if len(s) < 2 or s[0] != "[" or s[-1] != "]":
        return None
    inner = s[1:-1].strip()
    return [part.strip().strip("'\"").strip() for part in inner.split(",")] if inner else []


@register
class ChartQAReader(Reader):
    name = "chartqa"
    description = "ChartQA: questions over real charts (human-written and machine-generated)"
    required = (("*/*_human.json", "*/*_augmented.json"),)
    wrappers = (TOP,)
    inner_names = ("train", "val", "test")
    image_hint = "ChartQA images are in <split>/png/ of the 'ChartQA Dataset' folder"
    skipped_splits = {}
    stratify_key = "origin"

    def read(self, root: Root) -> Iterator[Item]:
        files = sorted(set(root.glob("*/*_human.json")) | set(root.glob("*/*_augmented.json")))
        for rel in files:
            folder, base = posixpath.split(rel)
            split = posixpath.basename(folder)
            m = FILE.match(base)
            if not m or m.group("split") != split:  # e.g. train/val_human.json: not this layout
                yield Skip(rel, f"not a ChartQA annotation file name (expected {split}/{split}_human.json "
                           f"or {split}_augmented.json)")
                continue
            origin = m.group("origin")
            yield from guarded(
                self.name, rel, lambda rel=rel, split=split, origin=origin: self._read_file(root, rel, split, origin)
            )

    def _read_file(self, root: Root, rel: str, split: str, origin: str) -> Iterator[Item]:
        png = f"{split}/png/"
        for index, record in json_records(self, root, rel):
            native_id = f"{split}/{origin}/{index}"
            where = f"{rel}[{index}]"
            if type(record) is Reject:
                yield record
                continue
            if type(record) is not dict:
                yield self.reject(native_id, "malformed_record", f"record is a {type(record).__name__}, not an object", where, record)
                continue
            imgname, query = record.get("imgname"), record.get("query")
            label = label_text(record.get("label"))
            problem = None
            if type(imgname) is not str:
                problem = "'imgname' is missing or not a string"
            elif type(query) is not str:
                problem = "'query' is missing or not a string"
            elif label is None:
                problem = "'label' is missing or not a string"
            if problem:
                yield self.reject(native_id, "malformed_record", problem, where, record)
                continue
            imgname = imgname.strip()
            question, answer = query.strip(), label.strip()
            meta = {"origin": origin, "imgname": imgname}
            items = list_items(answer)
            if items is not None:
                meta["answer_items"] = items
            yield Sample(
                self.name,
                native_id,
                split,
                png + imgname if imgname else None,
                question,
                answer,
                single_turn(question, answer),
                meta=meta,
            )
