"""Parquet shards, manifest and LLaVA JSONL export (pipeline/shards.py)."""
import hashlib
import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline import schema, shards
from pipeline.shards import (
    ShardWriter,
    export_llava_jsonl,
    read_llava_jsonl,
    replace_if_changed,
    verify_manifest,
    write_manifest,
)
from pipeline.storage import Root

REPO = Path(__file__).resolve().parents[2]
FOUR_STAGES = "<SUMMARY>s</SUMMARY> <CAPTION>c</CAPTION> <REASONING>r</REASONING> <CONCLUSION>{}</CONCLUSION>"


def image_bytes(i: int, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    # distinct size per row, and noise so the file has some bulk (lets size-based splitting work)
    im = Image.effect_noise((20 + i, 10 + i % 7), 64).convert("RGB")
    im.save(buf, format=fmt)
    return buf.getvalue()


def make_rows(n: int, split: str = "train") -> list[dict]:
    sources = ["chartqa", "clevr", "ai2d"]
    rows = []
    for i in range(n):
        fmt = "JPEG" if i % 3 == 0 else "PNG"
        rows.append({
            "id": f"{sources[i % 3]}/{i:04d}",
            "source": sources[i % 3],
            "split": split,
            "image_bytes": image_bytes(i, fmt),
            "image_path": f"png/{i:04d}.{'jpg' if fmt == 'JPEG' else 'png'}",
            "conversations": [
                {"from": "human", "value": f"<image>\nQuestion {i}? (ünïcode ok)"},
                {"from": "gpt", "value": FOUR_STAGES.format(i)},
            ] + ([{"from": "human", "value": "And then?"}, {"from": "gpt", "value": FOUR_STAGES.format("x")}]
                 if i % 4 == 1 else []),
        })
    return rows


def write(root: Root, rows: list[dict], **kwargs) -> list[shards.ShardInfo]:
    with ShardWriter(root, "train", **kwargs) as w:
        for r in rows:
            w.add(r)
    return w.shards


def visible_parquet(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.parquet") if not p.name.startswith("."))


@pytest.fixture(scope="module")
def rows():
    return make_rows(24)


# the format ------------------------------------------------------------------------------------


def test_metadata_is_what_datasets_writes(tmp_path):
    import datasets
    from datasets import Features, Image as HFImage, Value

    features = Features({
        "id": Value("string"), "source": Value("string"), "split": Value("string"), "image": HFImage(),
        "conversations": [{"from": Value("string"), "value": Value("string")}],
    })
    ds = datasets.Dataset.from_dict(
        {"id": ["a"], "source": ["s"], "split": ["train"], "image": [{"bytes": image_bytes(0), "path": "a.png"}],
         "conversations": [[{"from": "human", "value": "hi"}]]},
        features=features,
    )
    ds.to_parquet(str(tmp_path / "hf.parquet"))
    theirs = pq.read_schema(tmp_path / "hf.parquet").metadata[b"huggingface"]
    assert shards.SHARD_SCHEMA.metadata[b"huggingface"] == theirs
    assert shards.SHARD_SCHEMA.names == schema.SHARD.names


def test_shards_load_with_datasets_and_decode_images(tmp_path, rows):
    import datasets

    infos = write(Root(str(tmp_path / "out")), rows, target_bytes=20_000, row_group_rows=4)
    files = [str(tmp_path / "out" / s.name) for s in infos]
    assert len(files) > 1
    ds = datasets.load_dataset("parquet", data_files=files, split="train", cache_dir=str(tmp_path / "cache"))
    assert ds.num_rows == len(rows)
    assert ds.features["image"] == datasets.Image()
    for got, want in zip(ds, rows):
        assert got["id"] == want["id"] and got["source"] == want["source"] and got["split"] == "train"
        assert isinstance(got["image"], Image.Image)
        assert got["image"].size == Image.open(io.BytesIO(want["image_bytes"])).size
        assert got["conversations"] == want["conversations"]


def test_columns_and_compression(tmp_path, rows):
    info = write(Root(str(tmp_path)), rows[:6])[0]
    meta = pq.ParquetFile(tmp_path / info.name).metadata
    chunks = {meta.row_group(0).column(i).path_in_schema: meta.row_group(0).column(i) for i in range(meta.num_columns)}
    assert chunks["image.bytes"].compression == "UNCOMPRESSED"
    assert not chunks["image.bytes"].is_stats_set
    assert chunks["conversations.list.element.value"].compression == "ZSTD"
    table = pq.read_table(tmp_path / info.name)
    assert table.column("image").to_pylist()[2] == {"bytes": rows[2]["image_bytes"], "path": rows[2]["image_path"]}


def test_row_without_image_is_null(tmp_path, rows):
    import datasets

    row = dict(rows[0], image_bytes=None, image_path=None)
    info = write(Root(str(tmp_path / "out")), [row, rows[1]])[0]
    ds = datasets.load_dataset("parquet", data_files=str(tmp_path / "out" / info.name), split="train",
                               cache_dir=str(tmp_path / "cache"))
    assert ds[0]["image"] is None and isinstance(ds[1]["image"], Image.Image)


def test_split_by_target_size_keeps_row_order(tmp_path, rows):
    out = tmp_path / "out"
    infos = write(Root(str(out)), rows, target_bytes=15_000, row_group_rows=3)
    assert len(infos) >= 3
    assert [s.name for s in infos] == [f"train-{i:05d}.parquet" for i in range(len(infos))]
    assert visible_parquet(out) == [s.name for s in infos]
    ids = []
    for s in infos:
        f = pq.ParquetFile(out / s.name)
        assert f.metadata.num_rows == s.rows
        assert all(f.metadata.row_group(g).num_rows <= 3 for g in range(f.metadata.num_row_groups))
        assert s.bytes == (out / s.name).stat().st_size
        assert s.sha256 == hashlib.sha256((out / s.name).read_bytes()).hexdigest()
        ids += f.read(columns=["id"]).column("id").to_pylist()
    assert ids == [r["id"] for r in rows]
    assert sum(sum(s.sources.values()) for s in infos) == len(rows)


def test_buffers_at_most_one_row_group(tmp_path, rows):
    with ShardWriter(Root(str(tmp_path)), "train", row_group_rows=3) as w:
        for r in rows:
            w.add(r)
            assert len(w._cols[0]) < 3 and len(w._images.data) < 3  # a full row group goes at once
    with ShardWriter(Root(str(tmp_path / "b")), "train", row_group_bytes=5_000) as w:
        for r in rows:
            w.add(r)
            assert w._pending < 5_000
    assert w._queue.unfinished_tasks == 0


def test_row_of_another_split_is_refused(tmp_path, rows):
    with pytest.raises(ValueError, match="split"):
        with ShardWriter(Root(str(tmp_path)), "validation") as w:
            w.add(rows[0])  # a train row
    assert visible_parquet(tmp_path) == []


# the manifest ----------------------------------------------------------------------------------


@pytest.fixture
def sharded(tmp_path, rows):
    out = tmp_path / "out"
    root = Root(str(out))
    infos = write(root, rows[:18], target_bytes=15_000)
    with ShardWriter(root, "validation") as w:
        for r in make_rows(4, split="validation"):
            w.add(r)
    extra = {"teacher_model": "gpt-4o", "prompt_version": "v3", "code_versions": {"annotations": "7"}}
    manifest = write_manifest(root, infos + w.shards, extra)
    return out, root, manifest


def test_manifest_contents_and_verify(sharded):
    out, root, manifest = sharded
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk == manifest
    assert manifest["extra"]["prompt_version"] == "v3"
    names = [f["name"] for f in manifest["files"]]
    assert "validation-00000.parquet" in names and "train-00000.parquet" in names
    assert manifest["totals"]["rows"] == 22
    assert manifest["totals"]["splits"]["validation"]["rows"] == 4
    assert manifest["sources"]["train"] == {"ai2d": 6, "chartqa": 6, "clevr": 6}
    assert sum(manifest["sources"]["validation"].values()) == 4
    for f in manifest["files"]:
        assert f["bytes"] == (out / f["name"]).stat().st_size
    assert verify_manifest(root) == []


def test_verify_reports_changed_byte(sharded):
    out, root, _ = sharded
    path = out / "train-00001.parquet"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one byte different
    path.write_bytes(bytes(data))
    problems = verify_manifest(root)
    assert len(problems) == 1 and "train-00001.parquet: sha256" in problems[0]


def test_verify_reports_truncated_missing_and_unlisted(sharded):
    out, root, _ = sharded
    path = out / "train-00000.parquet"
    path.write_bytes(path.read_bytes()[:-100])
    (out / "validation-00000.parquet").unlink()
    (out / "train-00042.parquet").write_bytes(b"PAR1")
    problems = "\n".join(verify_manifest(root))
    assert "train-00000.parquet: size" in problems
    assert "train-00000.parquet: unreadable Parquet footer" in problems
    assert "validation-00000.parquet: missing" in problems
    assert "train-00042.parquet: shard not listed" in problems


def test_verify_reports_row_count_mismatch(sharded):
    out, root, manifest = sharded
    manifest["files"][0]["rows"] += 1
    manifest["totals"]["rows"] += 1
    (out / "manifest.json").write_text(json.dumps(manifest))
    problems = verify_manifest(root)
    assert len(problems) == 1 and "rows in the footer" in problems[0]


def test_verify_without_manifest(tmp_path):
    assert verify_manifest(Root(str(tmp_path))) == ["manifest.json: missing"]


# interrupted writes ----------------------------------------------------------------------------


def test_exception_mid_write_removes_the_temporary_shard(tmp_path, rows):
    params = dict(target_bytes=15_000, row_group_rows=2)
    full = write(Root(str(tmp_path / "full")), rows, **params)
    assert len(full) >= 2 and full[1].rows > 3
    fail_at = full[0].rows + 3  # inside the second shard, after a row group of it was written
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="upstream failed"):
        with ShardWriter(Root(str(out)), "train", **params) as w:
            for i, r in enumerate(rows):
                if i == fail_at:
                    raise RuntimeError("upstream failed")
                w.add(r)
    # the first shard is whole (identical to a complete run's); of the second nothing is left
    assert sorted(p.name for p in out.iterdir()) == ["train-00000.parquet"]
    assert (out / "train-00000.parquet").read_bytes() == (tmp_path / "full" / "train-00000.parquet").read_bytes()


def test_failing_writer_thread_surfaces_and_cleans_up(tmp_path, rows, monkeypatch):
    out = tmp_path / "out"

    def broken(self, table, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(shards.pq.ParquetWriter, "write_table", broken)
    with pytest.raises(OSError, match="disk full"):
        with ShardWriter(Root(str(out)), "train", row_group_rows=2) as w:
            for r in rows:
                w.add(r)
    assert list(out.iterdir()) == []


CRASH = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, sys.argv[1])
    from tests.pipeline.test_shards import make_rows
    from pipeline.shards import ShardWriter
    from pipeline.storage import Root
    w = ShardWriter(Root(sys.argv[2]), "train", row_group_rows=2)
    for r in make_rows(9):
        w.add(r)
    w._send(("sync",))  # wait until the writer thread has written the row groups handed to it
    os._exit(0)  # a crash: close() never runs
""")


def test_crash_without_close_leaves_only_hidden_temporary_files(tmp_path):
    import datasets

    out = tmp_path / "out"
    subprocess.run([sys.executable, "-c", CRASH, str(REPO), str(out)], check=True, timeout=60)
    names = sorted(p.name for p in out.iterdir())
    assert names == [".tmp-train-00000.parquet"]
    assert (out / names[0]).stat().st_size > 0  # row groups did reach the disk
    assert visible_parquet(out) == []
    assert Root(str(out)).glob("train-*.parquet") == []
    with pytest.raises(FileNotFoundError, match="doesn't contain any data files"):  # nothing partial is seen
        datasets.load_dataset("parquet", data_dir=str(out), split="train", cache_dir=str(tmp_path / "cache"))
    # the next writer of the prefix clears the leftovers
    write(Root(str(out)), make_rows(2))
    assert sorted(p.name for p in out.iterdir()) == ["train-00000.parquet"]


# determinism and re-runs -----------------------------------------------------------------------


def test_identical_rows_give_identical_bytes(tmp_path, rows):
    a = write(Root(str(tmp_path / "a")), rows, target_bytes=15_000, row_group_rows=5)
    b = write(Root(str(tmp_path / "b")), rows, target_bytes=15_000, row_group_rows=5)
    assert [(s.name, s.rows, s.bytes, s.sha256) for s in a] == [(s.name, s.rows, s.bytes, s.sha256) for s in b]
    for s in a:
        assert (tmp_path / "a" / s.name).read_bytes() == (tmp_path / "b" / s.name).read_bytes()
    ma = write_manifest(Root(str(tmp_path / "a")), a, {"k": 1})
    mb = write_manifest(Root(str(tmp_path / "b")), b, {"k": 1})
    assert ma == mb
    assert (tmp_path / "a" / "manifest.json").read_bytes() == (tmp_path / "b" / "manifest.json").read_bytes()


def test_rerun_keeps_unchanged_files_and_removes_stale_ones(tmp_path, rows):
    out = tmp_path / "out"
    root = Root(str(out))
    first = write(root, rows, target_bytes=15_000)
    assert len(first) >= 3 and all(s.replaced for s in first)
    past = 1_000_000_000
    for s in first:
        os.utime(out / s.name, (past, past))
    again = write(root, rows, target_bytes=15_000)
    assert [s.sha256 for s in again] == [s.sha256 for s in first]
    assert not any(s.replaced for s in again)
    assert all((out / s.name).stat().st_mtime == past for s in again)
    # fewer rows: the first shard changes, the shards past the new end are removed
    fewer = write(root, rows[:5], target_bytes=15_000)
    assert len(fewer) == 1 and fewer[0].replaced
    assert visible_parquet(out) == ["train-00000.parquet"]


def test_replace_if_changed(tmp_path):
    root = Root(str(tmp_path))
    (tmp_path / "f").write_bytes(b"abc")
    (tmp_path / ".tmp-f").write_bytes(b"abc")
    digest = hashlib.sha256(b"abc").hexdigest()
    assert replace_if_changed(root, ".tmp-f", "f", digest, 3) is False
    assert not (tmp_path / ".tmp-f").exists() and (tmp_path / "f").read_bytes() == b"abc"
    (tmp_path / ".tmp-f").write_bytes(b"abd")
    assert replace_if_changed(root, ".tmp-f", "f", hashlib.sha256(b"abd").hexdigest(), 3) is True
    assert (tmp_path / "f").read_bytes() == b"abd" and not (tmp_path / ".tmp-f").exists()


def test_works_on_a_non_local_filesystem(rows):
    root = Root("memory://shards-test-out")
    try:
        infos = write(root, rows[:10], target_bytes=15_000)
        write_manifest(root, infos, {})
        assert verify_manifest(root) == []
        assert root.glob("train-*.parquet") == [s.name for s in infos]
    finally:
        root.fs.rm(root.path(""), recursive=True)


# the LLaVA JSONL export ------------------------------------------------------------------------


def test_jsonl_export_round_trip(tmp_path, rows):
    canonical = rows[:6]
    shared = dict(rows[6], id="chartqa/shared", image_bytes=canonical[0]["image_bytes"],
                  image_path=canonical[0]["image_path"], source=canonical[0]["source"])
    unsafe = dict(rows[7], image_path="../../etc/passwd.png")
    clash = dict(rows[8], source=canonical[0]["source"], image_path=canonical[0]["image_path"])  # other bytes
    no_image = dict(rows[9], image_bytes=None, image_path=None)
    all_rows = canonical + [shared, unsafe, clash, no_image]
    root = Root(str(tmp_path / "export"))
    stats = export_llava_jsonl(root, iter(all_rows))
    assert stats["rows"] == len(all_rows) and stats["images"] == len(all_rows) - 2  # shared once, none

    lines = (tmp_path / "export" / "train.jsonl").read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    assert list(records[0]) == ["id", "image", "conversations"]
    assert records[0]["image"] == f"images/{canonical[0]['source']}/{canonical[0]['image_path']}"
    assert records[6]["image"] == records[0]["image"]
    assert "/_by_id/" in records[7]["image"] and ".." not in records[7]["image"]  # unusable path: id-based name
    assert records[8]["image"] != records[0]["image"]
    assert "image" not in records[9]
    for rec in records:
        if "image" in rec:
            path = (tmp_path / "export" / rec["image"]).resolve()
            assert path.is_relative_to((tmp_path / "export" / "images").resolve()) and path.is_file()

    back = list(read_llava_jsonl(root))
    assert len(back) == len(all_rows)
    for got, want in zip(back, all_rows):
        assert got["id"] == want["id"]
        assert got["source"] == want["source"]
        assert got["image_bytes"] == want["image_bytes"]
        assert got["conversations"] == want["conversations"]
    for got, want in zip(back[:7], all_rows[:7]):  # plain relative paths come back as they were
        assert got["image_path"] == want["image_path"]

    # and back into shards: the same canonical fields
    infos = write(Root(str(tmp_path / "reshard")), back)
    table = pq.read_table(tmp_path / "reshard" / infos[0].name)
    assert table.column("id").to_pylist() == [r["id"] for r in all_rows]
    assert [im and im["bytes"] for im in table.column("image").to_pylist()] == [r["image_bytes"] for r in all_rows]


def test_jsonl_export_from_shard_rows_and_rerun_keeps_images(tmp_path, rows):
    infos = write(Root(str(tmp_path / "shards")), rows[:5])
    shard_rows = pq.read_table(tmp_path / "shards" / infos[0].name).to_pylist()
    root = Root(str(tmp_path / "export"))
    export_llava_jsonl(root, shard_rows)
    first = {p: p.stat().st_mtime_ns for p in (tmp_path / "export").rglob("*") if p.is_file()}
    again = export_llava_jsonl(root, shard_rows)
    assert again["images_unchanged"] == 5
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "export").rglob("*") if p.is_file()} == first
    back = list(read_llava_jsonl(root))
    assert [b["image_bytes"] for b in back] == [r["image_bytes"] for r in rows[:5]]


def test_jsonl_export_failure_leaves_no_jsonl(tmp_path, rows):
    def gen():
        yield rows[0]
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        export_llava_jsonl(Root(str(tmp_path)), gen())
    assert not (tmp_path / "train.jsonl").exists() and not (tmp_path / ".tmp-train.jsonl").exists()
