"""ShareGPT4V (and any LLaVA-format instruction JSON).

Native layout (ShareGPT4V docs/Data.md): the repository's `data/` folder holds the image
collections (`coco/train2017/`, `sam/images/`, `llava/llava_pretrain/images/`, `wikiart/images/`,
`share_textvqa/images/`, `web-celebrity/images/`, `web-landmark/images/`, `gqa/images/`,
`ocr_vqa/images/`, `textvqa/train_images/`, `vg/VG_100K*/`, often symlinks to one shared copy) and
the annotation files in `data/sharegpt4v/*.json` (the Hugging Face release keeps the same files at
its top: `*.json`). The folder may be given as the repository root, `data/` itself, or
`data/sharegpt4v/`. Each annotation file is a JSON array of `{id, image?, conversations: [{from:
human|gpt, value}, ...]}`; `image` is relative to the data folder; records without `image` are
text-only (kept out by the central `no_image` rule). Caption files are one round; the mix file is
multi-turn. ShareGPT4V has no splits: every row is `train`.

A `*.json` beside them that does not hold LLaVA-format records (COCO's instances file, a config,
a dataset's own annotations) is passed over with a reported `Skip`, never parsed as rows.

The mix and caption files hold up to 1.2 M records, so the common record is handled on a fast
path: msgspec decodes it into a typed struct and the rows go out as a columnar `SampleBatch`; a
record the typed decoder refuses takes the careful path below, which says what is wrong.
"""
from __future__ import annotations

import posixpath
from typing import Iterator

import msgspec
import orjson

from pipeline.sources import register
from pipeline.quarantine import Reject
from pipeline.sources.base import Item, Reader, Sample, SampleBatch, Skip, SourceLayoutError
from pipeline.sources.jsonio import BadRecord, FileProblem, decode, records
from pipeline.storage import Root

IMAGE_TOKEN = "<image>"
ROLES = ("human", "gpt")
BATCH = 20_000
SNIFF_BYTES = 1 << 16
COLLECTIONS = ("coco", "sam", "llava", "wikiart", "share_textvqa", "web-celebrity", "web-landmark", "gqa",
               "ocr_vqa", "textvqa", "vg")


class Turn(msgspec.Struct):
    from_: str = msgspec.field(name="from")
    value: str


class Record(msgspec.Struct):
    id: str | int
    conversations: list[Turn]
    image: str | None = None


_RECORD = msgspec.json.Decoder(Record)


def annotation_files(root: Root) -> list[str]:
    """`sharegpt4v/*.json` first, then top-level `*.json`; hidden files (markers) are not data."""
    found: list[str] = []
    for pattern in ("sharegpt4v/*.json", "*.json"):
        for rel in root.glob(pattern):
            if not posixpath.basename(rel).startswith(".") and rel not in found:
                found.append(rel)
    return found


def looks_like_llava(root: Root, rel: str) -> str | None:
    """None when the file starts as a JSON array of LLaVA conversation records (or is an empty
    array); otherwise why it is not one. Reads only the first 64 kB."""
    with root.open(rel, "rb") as f:
        head = f.read(SNIFF_BYTES)
    body = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if not body:
        return "the file is empty"
    if body[:1] != b"[":
        return "its top level is not a list of records"
    rest = body[1:].lstrip()
    if rest[:1] == b"]":
        return None
    if rest[:1] != b"{" or b'"conversations"' not in head:
        return "its records have no 'conversations' (not LLaVA-format records)"
    return None


def is_clean_path(value: str) -> bool:
    """True when `clean_image_path` would return `value` unchanged (the common case, checked fast)."""
    return (
        bool(value) and value[0] != "/" and value[-1] not in "/." and "//" not in value
        and "./" not in value and "\\" not in value and value != "."
    )


def clean_image_path(value: str) -> str:
    """Posix, relative, normalised: `./coco/x.jpg` and `/coco/x.jpg` both become `coco/x.jpg`."""
    rel = posixpath.normpath(value.replace("\\", "/")).lstrip("/")
    return "" if rel == "." else rel


@register
class ShareGPT4VReader(Reader):
    name = "sharegpt4v"
    description = "ShareGPT4V captions and LLaVA-format multi-turn conversations (GPT-4V)"
    required = (("sharegpt4v/*.json", "*.json"),)
    wrappers = ("data",)
    inner_names = ("sharegpt4v",)
    skipped_splits = {}
    image_hint = ("image paths are relative to the ShareGPT4V data folder (coco/train2017/..., sam/images/...): "
                  "put (or symlink) the image collections there, or give the data store an image root per "
                  "collection")

    def is_dataset_folder(self, root: Root) -> bool:
        if root.glob("sharegpt4v/*.json"):
            return True
        # top-level JSON files count only beside image collections or as LLaVA records
        return bool(root.glob("*.json")) and (any(root.isdir(c) for c in COLLECTIONS) or any(
            looks_like_llava(root, rel) is None for rel in root.glob("*.json")[:3]))

    def check_layout(self, root: Root) -> None:
        super().check_layout(root)
        if not annotation_files(root):  # only hidden files (e.g. the demo marker) matched
            raise SourceLayoutError(
                f"{self.name}: not the expected layout under {root.uri!r}: missing 'sharegpt4v/*.json' or '*.json'"
            )

    def read(self, root: Root) -> Iterator[Item]:
        for rel in annotation_files(root):
            # files in sharegpt4v/ are this dataset's (an unreadable one is a reject); a top-level
            # *.json may be anything: read only when it holds LLaVA-format records
            why = None if rel.startswith("sharegpt4v/") else looks_like_llava(root, rel)
            if why:
                yield Skip(rel, f"not ShareGPT4V/LLaVA records: {why}")
                continue
            stem = posixpath.splitext(posixpath.basename(rel))[0]
            yield from self._read_file(root, rel, stem)

    def _read_file(self, root: Root, rel: str, stem: str) -> Iterator[Item]:
        batch = _Batch(self.name, stem)
        index = -1
        try:
            for index, raw in records(root, rel, raw=True):
                if batch.add_fast(raw):
                    if len(batch) >= BATCH:
                        yield batch.take()
                    continue
                if len(batch):
                    yield batch.take()
                yield self._careful(decode(raw) if type(raw) is not BadRecord else raw, rel, index, stem)
        except FileProblem as exc:
            if len(batch):
                yield batch.take()
            yield Reject(self.name, None, exc.reason, f"{rel}: {exc.detail}", rel, rows=exc.rows)
            return
        if len(batch):
            yield batch.take()

    def _careful(self, record, rel: str, index: int, stem: str) -> Item:
        """One record the fast path refused: a Sample if it is usable after all, else why not."""
        where = f"{rel}[{index}]"
        if type(record) is BadRecord:
            return self.reject(None, "malformed_record", f"record is not valid JSON: {record.detail}", where,
                               record.text)
        if type(record) is not dict:
            return self.reject(None, "malformed_record", f"record is a {type(record).__name__}, not an object",
                               where, record)
        rid = record.get("id")
        if type(rid) is int:
            rid = str(rid)
        if type(rid) is not str or not rid:
            return self.reject(None, "malformed_record", "record has no usable 'id' (a non-empty string)", where,
                               record)
        native_id = f"{stem}/{rid}"
        image = record.get("image")
        problem = None
        if image is not None:
            if type(image) is not str:
                problem = f"'image' is a {type(image).__name__}, not a string"
            elif not is_clean_path(image):
                image = clean_image_path(image) or None
        turns = record.get("conversations")
        if problem is None:
            problem = check_turns(turns)
        if problem is not None:
            return self.reject(native_id, "malformed_record", problem, where, record)
        question = turns[0]["value"].replace(IMAGE_TOKEN, "").strip()
        conversations = [{"from": "human", "value": "<image>\n" + question}]
        conversations += [{"from": t["from"], "value": t["value"]} for t in turns[1:]]
        return Sample(self.name, native_id, "train", image, question, turns[1]["value"].strip(), conversations,
                      meta={"file": stem, "native_id": rid, "turns": len(turns) >> 1})


class _Batch:
    """Columns of the records accepted on the fast path (see `SampleBatch`)."""

    def __init__(self, source: str, stem: str) -> None:
        self.source, self.stem = source, stem
        self.prefix = stem + "/"
        self.file_json = orjson.dumps(stem).decode()
        self._new()

    def _new(self) -> None:
        self.ids, self.images, self.questions, self.answers = [], [], [], []
        self.offsets, self.froms, self.values, self.meta = [0], [], [], []

    def __len__(self) -> int:
        return len(self.ids)

    def add_fast(self, raw) -> bool:
        """Add a record that is valid as it stands; False (nothing added) for anything else."""
        if type(raw) is BadRecord:
            return False
        try:
            rec = _RECORD.decode(raw)
        except (msgspec.DecodeError, RecursionError, ValueError):
            return False
        rid = rec.id
        if type(rid) is int:
            rid = str(rid)
        elif not rid:
            return False
        turns = rec.conversations
        n = len(turns)
        if n < 2 or n & 1:
            return False
        i = 0
        for t in turns:
            if t.from_ != ROLES[i & 1] or (i >= 2 and not t.value.strip()):
                return False
            i += 1
        image = rec.image
        if image is not None and not is_clean_path(image):
            image = clean_image_path(image) or None
        question = turns[0].value.replace(IMAGE_TOKEN, "").strip()
        self.ids.append(self.prefix + rid)
        self.images.append(image)
        self.questions.append(question)
        self.answers.append(turns[1].value.strip())
        froms, values = self.froms, self.values
        froms.append("human")
        values.append("<image>\n" + question)
        for t in turns[1:]:
            froms.append(t.from_)
            values.append(t.value)
        self.offsets.append(len(froms))
        self.meta.append(f'{{"file":{self.file_json},"native_id":{orjson.dumps(rid).decode()},"turns":{n >> 1}}}')
        return True

    def take(self) -> SampleBatch:
        b = SampleBatch(self.source, self.ids, "train", self.images, self.questions, self.answers, self.offsets,
                        self.froms, self.values, self.meta)
        self._new()
        return b


def check_turns(turns) -> str | None:
    """Why a conversation is unusable, or None: a list of {from, value} turns alternating
    human/gpt, starting with human, ending with gpt, every value a string (later turns non-empty;
    the first question and answer are checked centrally)."""
    if type(turns) is not list:
        return "'conversations' is missing or not a list"
    n = len(turns)
    if n >= 2 and not n & 1:  # the common shape: check it in one pass, explain only on failure
        i = 0
        for turn in turns:
            if type(turn) is not dict or turn.get("from") != ROLES[i & 1] or type(turn.get("value")) is not str:
                break
            if i >= 2 and not turn["value"].strip():
                break
            i += 1
        else:
            return None
    return explain_turns(turns)


def explain_turns(turns: list) -> str:
    n = len(turns)
    if n < 2:
        return "conversation has no gpt turn" if n == 1 else "conversation is empty"
    for i, turn in enumerate(turns):
        if type(turn) is not dict:
            return f"turn {i} is not an object"
        value = turn.get("value")
        if type(value) is not str:
            return f"turn {i} has no string 'value'"
        if turn.get("from") != ROLES[i & 1]:
            return f"turn {i} is from {turn.get('from')!r}, expected {ROLES[i & 1]!r} (turns must alternate human/gpt)"
        if i >= 2 and not value.strip():
            return f"turn {i} is empty"
    return "the last human turn has no gpt answer"
