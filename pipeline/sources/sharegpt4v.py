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

The mix and caption files hold up to 1.2 M records, so records are handled in batches on a
columnar fast path: msgspec splits the file into records without decoding them, Arrow's JSON
reader parses a batch of them straight into columns, and the checks and the canonical columns are
Arrow compute kernels (no Python object per record or turn). A batch Arrow refuses (a field of
another type somewhere in it) and every record that fails a check take the careful path below, one
record at a time, which says exactly what is wrong.
"""
from __future__ import annotations

import io
import posixpath
import re
from typing import Iterator

import msgspec
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

from pipeline.sources import register
from pipeline import schema
from pipeline.quarantine import Reject
from pipeline.sources.base import Item, Reader, Sample, SampleTable, Skip, SourceLayoutError
from pipeline.sources.jsonio import BadRecord, FileProblem, decode, raw_list, records
from pipeline.storage import Root

IMAGE_TOKEN = "<image>"
ROLES = ("human", "gpt")
BATCH = 20_000
SNIFF_BYTES = 1 << 16
COLLECTIONS = ("coco", "sam", "llava", "wikiart", "share_textvqa", "web-celebrity", "web-landmark", "gqa",
               "ocr_vqa", "textvqa", "vg")


RECORD_SCHEMA = pa.schema([("id", pa.string()), ("image", pa.string()), ("conversations", pa.list_(schema.TURN))])
_PARSE = pajson.ParseOptions(explicit_schema=RECORD_SCHEMA, unexpected_field_behavior="ignore",
                             newlines_in_values=True)
# image paths `clean_image_path` would change, and ids that need escaping in JSON
_UNCLEAN_PATH = r"^/|[/.]$|//|\./|\\|^\.$"
_PLAIN_ID = r'^[^"\\\x00-\x1f]+$'
_BLANK = r"^[\s\p{Z}]*$"
_EDGE_SPACE = r"^[\s\p{Z}]|[\s\p{Z}]$"


def _ends(values: pa.Array) -> pa.Array:
    """The first and last character of every value (one short string each: cheap to test)."""
    return pc.binary_join_element_wise(pc.utf8_slice_codeunits(values, 0, 1),
                                       pc.utf8_slice_codeunits(values, -1), "")


def _strip(values: pa.Array) -> pa.Array:
    """`str.strip()` of every value, copying only when some value has whitespace at an end."""
    if pc.any(pc.match_substring_regex(_ends(values), _EDGE_SPACE)).as_py():
        return pc.utf8_trim_whitespace(values)
    return values


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
        whole = raw_list(root, rel)
        if whole is not None:  # the common case: a valid array, sliced into batches
            for start in range(0, len(whole), BATCH):
                yield from self._batch(list(enumerate(whole[start:start + BATCH], start)), rel, stem)
            return
        batch: list[tuple[int, object]] = []
        try:
            for index, raw in records(root, rel, raw=True):
                if type(raw) is BadRecord:
                    yield from self._batch(batch, rel, stem)
                    batch = []
                    yield self._careful(raw, rel, index, stem)
                    continue
                batch.append((index, raw))
                if len(batch) >= BATCH:
                    yield from self._batch(batch, rel, stem)
                    batch = []
        except FileProblem as exc:
            yield from self._batch(batch, rel, stem)
            yield Reject(self.name, None, exc.reason, f"{rel}: {exc.detail}", rel, rows=exc.rows)
            return
        yield from self._batch(batch, rel, stem)

    def _batch(self, batch: list[tuple[int, object]], rel: str, stem: str) -> Iterator[Item]:
        """The records of a batch: the valid ones as one SampleTable, the others one by one."""
        if not batch:
            return
        data = b"\n".join(raw for _, raw in batch)
        # only JSON objects go to Arrow's reader (a bare `null` record crashes pyarrow's JSON
        # reader); anything else is not a record anyway and goes the careful way. Checked per
        # record only when a `null` line is there, or when the records come from the tolerant
        # scanner (the file was not valid JSON as a whole).
        if b"\nnull\n" in b"\n" + data + b"\n" or type(batch[0][1]) is not msgspec.Raw:
            objects = [(i, raw) for i, raw in batch if bytes(memoryview(raw)[:1]) == b"{"]
            if len(objects) < len(batch):
                for index, raw in batch:
                    if bytes(memoryview(raw)[:1]) != b"{":
                        yield self._careful(decode(raw), rel, index, stem)
                batch = objects
                data = b"\n".join(raw for _, raw in batch)
        if not batch:
            return
        table = None
        try:
            table = pajson.read_json(io.BytesIO(data), parse_options=_PARSE,
                                     read_options=pajson.ReadOptions(use_threads=False, block_size=len(data) + 1))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, UnicodeDecodeError, ValueError):
            table = None  # a field of another type somewhere in the batch: record by record
        if table is None or table.num_rows != len(batch):
            for index, raw in batch:
                yield self._careful(decode(raw), rel, index, stem)
            return
        ok = valid_rows(table)
        if ok.true_count:
            yield SampleTable(self.name, canonical(table.filter(ok), self.name, stem))
        if ok.true_count < len(batch):
            for (index, raw), good in zip(batch, ok.to_pylist()):
                if not good:
                    yield self._careful(decode(raw), rel, index, stem)

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


def _offsets(conv: pa.ListArray) -> pa.Array:
    """Offsets of `conv`'s lists into `list_flatten(conv)`, from 0 (`conv.offsets` are into the
    unsliced values, which a sliced or filtered array does not start at)."""
    lengths = pc.cast(pc.fill_null(pc.list_value_length(conv), 0), pa.int32())
    return pa.concat_arrays([pa.array([0], pa.int32()), pc.cumulative_sum(lengths)])


def _positions(conv: pa.ListArray) -> tuple[pa.Array, pa.Array]:
    """(index of each turn's record, index of the turn within its record) of the flattened turns."""
    parent = pc.list_parent_indices(conv)
    starts = pc.take(_offsets(conv), parent)
    position = pc.subtract(pa.array(np.arange(len(parent), dtype=np.int64)), pc.cast(starts, pa.int64()))
    return parent, position


def valid_rows(table: pa.Table) -> pa.BooleanArray:
    """Records the fast path may take as they are: the checks of `check_turns` (and a non-empty
    id, an image path already clean) as Arrow kernels; everything else goes the careful way."""
    conv = table.column("conversations").combine_chunks()
    ids = table.column("id").combine_chunks()
    image = table.column("image").combine_chunks()
    n = pc.list_value_length(conv)
    ok = pc.and_kleene(pc.greater(pc.utf8_length(ids), 0), pc.greater_equal(n, 2))
    ok = pc.and_kleene(ok, pc.equal(pc.bit_wise_and(n, 1), 0))
    ok = pc.and_kleene(ok, pc.or_kleene(pc.is_null(image), pc.invert(pc.match_substring_regex(image, _UNCLEAN_PATH))))
    flat = pc.list_flatten(conv)
    if len(flat):
        parent, position = _positions(conv)
        froms, values = flat.field("from"), flat.field("value")
        expected = pc.if_else(pc.equal(pc.bit_wise_and(position, 1), 0), "human", "gpt")
        bad = pc.or_kleene(pc.invert(pc.fill_null(pc.equal(froms, expected), False)), pc.is_null(values))
        # blank later turns: only a value that starts with whitespace can be blank
        later = pc.fill_null(values, "")
        maybe = pc.match_substring_regex(pc.utf8_slice_codeunits(later, 0, 1), r"^([\s\p{Z}]|)$")
        empty_later = pc.and_(pc.greater_equal(position, 2), maybe)
        if pc.any(empty_later).as_py():
            empty_later = pc.and_(empty_later, pc.match_substring_regex(later, _BLANK))
        bad = pc.or_kleene(bad, empty_later)
        bad_rows = pc.unique(pc.filter(parent, bad))
        rows = pa.array(np.arange(len(ids), dtype=np.int64))
        ok = pc.and_kleene(ok, pc.invert(pc.is_in(rows, value_set=pc.cast(bad_rows, pa.int64()))))
    return pc.fill_null(ok, False)


def canonical(table: pa.Table, source: str, stem: str) -> pa.Table:
    """The first ten columns of `schema.SAMPLE` for records that passed `valid_rows`: the same
    values the careful path computes (question without `<image>`, which leads the first turn)."""
    conv = table.column("conversations").combine_chunks()
    ids = table.column("id").combine_chunks()
    rows = len(ids)
    flat = pc.list_flatten(conv)
    _, position = _positions(conv)
    turn_values = flat.field("value")
    first = pc.filter(turn_values, pc.equal(position, 0))
    question = pc.utf8_trim_whitespace(pc.replace_substring(first, "<image>", ""))
    answer = _strip(pc.filter(turn_values, pc.equal(position, 1)))
    lead = pc.binary_join_element_wise("<image>\n", question, "")
    values = pc.replace_with_mask(turn_values, pc.equal(position, 0), lead)  # each record's first turn
    turns = pa.ListArray.from_arrays(_offsets(conv), pa.StructArray.from_arrays(
        [flat.field("from"), values], fields=list(schema.TURN)))
    native = pc.binary_join_element_wise(stem, ids, "/")
    n_rounds = pc.cast(pc.divide(pc.list_value_length(conv), 2), pa.string())
    file_json = orjson.dumps(stem).decode()
    plain = pc.match_substring_regex(ids, _PLAIN_ID)
    meta = pc.binary_join_element_wise(f'{{"file":{file_json},"native_id":"', ids, '","turns":', n_rounds, "}", "")
    if not pc.all(plain).as_py():  # ids needing JSON escapes: written by orjson, like every other meta
        exact = [f'{{"file":{file_json},"native_id":{orjson.dumps(i).decode()},"turns":{len(c) >> 1}}}'
                 for i, c in zip(ids.to_pylist(), conv.to_pylist())]
        meta = pc.if_else(plain, meta, pa.array(exact, pa.string()))
    empty = pa.ListArray.from_arrays(pa.array([0] * (rows + 1), pa.int32()), pa.array([], pa.string()))
    columns = [
        pc.binary_join_element_wise(source, native, "/"), pa.array([source] * rows, pa.string()),
        pa.array(["train"] * rows, pa.string()), table.column("image").combine_chunks(), question, answer,
        empty, empty, turns, meta,
    ]
    return pa.Table.from_arrays(columns, schema=pa.schema(list(schema.SAMPLE)[:10]))


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
