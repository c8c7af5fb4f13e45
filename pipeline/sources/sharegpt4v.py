"""ShareGPT4V (and any LLaVA-format instruction JSON).

Native layout (ShareGPT4V docs/Data.md): the data folder holds the image collections
(`coco/train2017/`, `sam/images/`, `llava/llava_pretrain/images/`, `wikiart/images/`,
`share_textvqa/images/`, `web-celebrity/images/`, `web-landmark/images/`, `gqa/images/`,
`ocr_vqa/images/`, `textvqa/train_images/`, `vg/VG_100K*/`) and the annotation files in
`sharegpt4v/*.json` (a plain LLaVA copy may also keep them at the top: `*.json`).
Each file is a JSON array of `{id, image?, conversations: [{from: human|gpt, value}, ...]}`;
`image` is relative to the data folder; records without `image` are text-only (kept out by the
central `no_image` rule). Caption files are one round; the mix file is multi-turn.
ShareGPT4V has no splits: every row is `train`.
"""
from __future__ import annotations

import posixpath
from typing import Iterator

from pipeline.sources import register
from pipeline.sources.base import Item, Reader, Sample, SourceLayoutError, guarded, iter_json_array
from pipeline.storage import Root

IMAGE_TOKEN = "<image>"
ROLES = ("human", "gpt")


def annotation_files(root: Root) -> list[str]:
    """`sharegpt4v/*.json` first, then top-level `*.json`; hidden files (markers) are not data."""
    found: list[str] = []
    for pattern in ("sharegpt4v/*.json", "*.json"):
        for rel in root.glob(pattern):
            if not posixpath.basename(rel).startswith(".") and rel not in found:
                found.append(rel)
    return found


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
    skipped_splits = {}

    def check_layout(self, root: Root) -> None:
        super().check_layout(root)
        if not annotation_files(root):  # only hidden files (e.g. the demo marker) matched
            raise SourceLayoutError(
                f"{self.name}: not the expected layout under {root.uri!r}: missing 'sharegpt4v/*.json' or '*.json'"
            )

    def read(self, root: Root) -> Iterator[Item]:
        for rel in annotation_files(root):
            stem = posixpath.splitext(posixpath.basename(rel))[0]
            yield from guarded(self.name, rel, lambda rel=rel, stem=stem: self._read_file(root, rel, stem))

    def _read_file(self, root: Root, rel: str, stem: str) -> Iterator[Item]:
        reject = self.reject
        name = self.name
        prefix = stem + "/"
        for index, record in enumerate(iter_json_array(root, rel)):
            if type(record) is not dict:
                yield reject(None, "malformed_record", f"record is a {type(record).__name__}, not an object",
                             f"{rel}[{index}]", record)
                continue
            rid = record.get("id")
            if type(rid) is not str or not rid:
                if type(rid) is int:
                    rid = str(rid)
                else:
                    yield reject(None, "malformed_record", "record has no usable 'id' (a non-empty string)",
                                 f"{rel}[{index}]", record)
                    continue
            native_id = prefix + rid
            problem = None
            image = record.get("image")
            if image is not None:
                if type(image) is not str:
                    problem = f"'image' is a {type(image).__name__}, not a string"
                elif not is_clean_path(image):
                    image = clean_image_path(image) or None
            turns = record.get("conversations")
            if problem is None:
                problem = check_turns(turns)
            if problem is not None:
                yield reject(native_id, "malformed_record", problem, f"{rel}[{index}]", record)
                continue
            question = turns[0]["value"].replace(IMAGE_TOKEN, "").strip()
            conversations = [{"from": "human", "value": "<image>\n" + question}]
            conversations += turns[1:]
            yield Sample(
                name,
                native_id,
                "train",
                image,
                question,
                turns[1]["value"].strip(),
                conversations,
                meta={"file": stem, "native_id": rid, "turns": len(turns) >> 1},
            )


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
