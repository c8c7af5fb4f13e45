"""Assemble the dataset: merge the validated sources, drop duplicates, split, shard, export.

One streaming pass in source order: each sample's image is read once, checked to decode, hashed
for the duplicate key (image content + normalised question), assigned to train or validation by a
hash of its id, and appended to that split's Parquet shards. Rejects (unreadable image, duplicate)
are kept with a reason. Then the manifest (files, rows, bytes, sha256, counts, lineage) and the
LLaVA-CoT-100k layout export (JSONL + image folder).
"""
from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field

import pyarrow.parquet as pq
from PIL import Image, UnidentifiedImageError

from pipeline import schema
from pipeline.agreement import normalise
from pipeline.sources import get_reader
from pipeline.shards import ShardWriter, export_llava_jsonl, write_manifest
from pipeline.stages import STAGES, parse
from pipeline.storage import Root
from pipeline.tables import TableSink

DATASET_VERSION = "1"
SPLITS = ("train", "validation")


def split_of(sample_id: str, validation_fraction: float, seed: int = 0) -> str:
    digest = hashlib.blake2b(f"split\0{seed}\0{sample_id}".encode(), digest_size=8).digest()
    return "validation" if int.from_bytes(digest, "big") / 2**64 < validation_fraction else "train"


@dataclass
class SourceInput:
    source: str
    validated_path: str  # path on `fs` of validated samples.parquet
    image_root: Root  # the source root that image paths are relative to


@dataclass
class DatasetSummary:
    rows: dict[str, int]
    rows_by_source: dict[str, dict[str, int]]
    rejects_by_reason: dict[str, int]
    shards: list[dict]
    manifest_path: str
    export: dict
    stage_chars: dict[str, list[int]] = field(default_factory=dict)
    content_hash: str = ""


def _load_image(root: Root, rel: str) -> tuple[bytes | None, str | None]:
    try:
        with root.open(rel, "rb") as f:
            data = f.read()
        with Image.open(io.BytesIO(data)) as im:
            im.verify()
        return data, None
    except FileNotFoundError:
        return None, f"image {rel!r} no longer exists"
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        return None, f"image {rel!r} cannot be decoded ({type(exc).__name__})"


def assemble(inputs: list[SourceInput], out: Root, fs, *, validation_fraction: float = 0.02, seed: int = 0,
             target_bytes: int = 256 * 1024 * 1024, lineage: dict | None = None, export: bool = True,
             log=print) -> DatasetSummary:
    writers = {s: ShardWriter(out, f"data/{s}", target_bytes, split=s) for s in SPLITS}
    rejects = TableSink(out, "rejects.parquet", schema.REJECT)
    seen: dict[str, str] = {}  # duplicate key -> id kept
    image_hash: dict[tuple, str] = {}
    reasons: dict[str, int] = {}
    by_source: dict[str, dict[str, int]] = {}
    chars: dict[str, list[int]] = {s: [] for s in STAGES}

    def reject(row, reason, detail):
        rejects.add({"sample_id": row["id"], "source": row["source"], "turn_index": None,
                     "reason": reason, "detail": detail})
        reasons[reason] = reasons.get(reason, 0) + 1

    try:
        for inp in inputs:
            reader = get_reader(inp.source)
            with fs.open(inp.validated_path, "rb") as f:
                for batch in pq.ParquetFile(f).iter_batches(batch_size=1_000):
                    for row in batch.to_pylist():
                        data, problem = _load_image(inp.image_root, row["image_path"])
                        if data is None:
                            reject(row, "image_unreadable", problem)
                            continue
                        prepared = reader.prepare_image(data, json.loads(row["meta"] or "{}"))
                        if prepared is not data:  # e.g. AI2D letters drawn for this question
                            data = prepared
                            key_img = (inp.source, row["image_path"], hashlib.sha256(data).hexdigest())
                        else:
                            key_img = (inp.source, row["image_path"])
                        if key_img not in image_hash:
                            image_hash[key_img] = hashlib.sha256(data).hexdigest()
                        key = image_hash[key_img] + "\0" + normalise(row["question"])
                        if key in seen:
                            reject(row, "duplicate", f"same image and question as {seen[key]}")
                            continue
                        seen[key] = row["id"]
                        split = split_of(row["id"], validation_fraction, seed)
                        writers[split].add({
                            "id": row["id"], "source": row["source"], "split": split, "image_bytes": data,
                            "image_path": row["image_path"],  # relative to its source root
                            "conversations": row["conversations"],
                        })
                        by_source.setdefault(row["source"], {s: 0 for s in SPLITS})[split] += 1
                        for t in row["conversations"]:
                            if t["from"] == "gpt":
                                for name, body in parse(t["value"], caption_may_be_empty=True).stages.items():
                                    chars[name].append(len(body))
        infos = [info for s in SPLITS for info in writers[s].close()]
        rejects.close()
    except BaseException:
        for w in writers.values():
            w.abort()
        rejects.abort()
        raise
    manifest = write_manifest(out, infos, extra={"lineage": lineage or {}, "dataset_version": DATASET_VERSION,
                                                  "validation_fraction": validation_fraction, "seed": seed})
    exported = {}
    if export:
        for s in SPLITS:
            exported[s] = export_llava_jsonl(out.child("export"), _shard_rows(out, [i for i in infos if i.split == s]),
                                             name=f"{s}.jsonl")
    shard_dicts = [{"name": i.name, "split": i.split, "rows": i.rows, "bytes": i.bytes, "sha256": i.sha256,
                    "rewritten": i.replaced} for i in infos]
    # the data version: what the files hold (the manifest) and what was rejected
    digest = hashlib.sha256(
        (json.dumps(manifest, sort_keys=True) + rejects.hasher.hexdigest()).encode()
    ).hexdigest()[:32]
    rows = {s: sum(v[s] for v in by_source.values()) for s in SPLITS}
    return DatasetSummary(rows, dict(sorted(by_source.items())), dict(sorted(reasons.items())), shard_dicts,
                          out.path("manifest.json"), exported, chars, digest)


def _shard_rows(out: Root, infos):
    for info in infos:
        with out.open(info.name, "rb") as f:
            for batch in pq.ParquetFile(f).iter_batches(batch_size=256):
                yield from batch.to_pylist()
