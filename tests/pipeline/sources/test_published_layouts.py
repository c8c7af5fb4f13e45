"""Every reader reads its dataset as published, from each folder a user may point at: the archive's
extraction root, the dataset folder itself, the parent where the README puts images beside the
annotations, an inner folder; zips read in place; a symlinked image store; a read-only raw root."""
from __future__ import annotations

import os
import shutil
import stat

import pyarrow.parquet as pq
import pytest

from pipeline.ingest import ingest_source
from pipeline.sources import SourceLayoutError, get_reader
from pipeline.sources.layout import locate
from pipeline.storage import ReadOnlyRootError, Root
from tests.pipeline.sources import trees

CASES = [
    ("sharegpt4v", trees.sharegpt4v), ("chartqa", trees.chartqa), ("aokvqa", trees.aokvqa),
    ("docvqa", trees.docvqa), ("docvqa", trees.docvqa_original), ("pisc", trees.pisc),
    ("pisc", lambda top: trees.pisc(top, zipped_images=True)), ("clevr", trees.clevr),
    ("clevr", lambda top: trees.clevr(top, zipped=True)), ("clevr_math", trees.clevr_math),
    ("geoqa_plus", trees.geoqa_plus), ("geoqa_plus", trees.geo170k),
    ("geoqa_plus", lambda top: trees.geo170k(top, zipped_images=True)), ("ai2d", trees.ai2d),
    ("scienceqa", trees.scienceqa), ("scienceqa", lambda top: trees.scienceqa(top, zipped_images=True)),
]
NAMES = ["sharegpt4v", "chartqa", "aokvqa+coco", "docvqa-current", "docvqa-original", "pisc", "pisc-image.zip",
         "clevr", "clevr-zip-in-place", "clevr_math-hf-zips", "geoqa_plus-pickles", "geo170k", "geo170k-images.zip",
         "ai2d", "scienceqa", "scienceqa-image-zips"]


def ingest(source, folder, tmp_path, name="out"):
    out = Root(str(tmp_path / name))
    summary = ingest_source(source, Root(str(folder)), out, derived=Root(str(tmp_path / "derived")),
                            cache=Root(str(tmp_path / "cache")))
    rows = {r["id"]: r for r in pq.read_table(out.path("samples.parquet")).to_pylist()}
    rejects = pq.read_table(out.path("quarantine.parquet")).to_pylist()
    return summary, rows, rejects


@pytest.mark.parametrize(("source", "build"), CASES, ids=NAMES)
def test_every_folder_a_user_may_point_at_reads_the_same_rows(tmp_path, source, build):
    tree = build(tmp_path / "raw")
    seen = None
    for how, folder in tree.folders.items():
        summary, rows, rejects = ingest(source, folder, tmp_path, name=f"out-{len(how)}-{hash(how) % 1000}")
        assert set(rows) == tree.ids, how
        bad = [(r["native_id"], r["reason"], r["detail"]) for r in rejects if r["reason"] != "no_image"]
        assert bad == [], how  # every image found, decoded; nothing lost
        for r in rows.values():  # the full decode's facts are on every row
            assert r["image_width"] > 0 and r["image_height"] > 0 and len(r["image_sha256"]) == 64
        view = {k: (r["image_path"], r["image_sha256"], r["question"]) for k, r in rows.items()}
        assert seen is None or view == seen, how  # same paths and images whichever folder was given
        seen = view


def test_aokvqa_and_sharegpt4v_skip_what_is_not_theirs_and_say_so(tmp_path):
    tree = trees.sharegpt4v(tmp_path / "s")
    summary, _, _ = ingest("sharegpt4v", tree.folders["data folder"], tmp_path, "o1")
    assert [s["location"] for s in summary.skipped] == ["dataset_info.json"]
    tree = trees.aokvqa(tmp_path / "a")
    summary, _, _ = ingest("aokvqa", tree.folders["dataset folder"], tmp_path, "o2")
    assert [s["location"] for s in summary.skipped] == ["aokvqa_v1p0_test.json"]


def test_an_explicit_image_root_serves_a_shared_coco(tmp_path):
    tree = trees.aokvqa(tmp_path / "raw")
    shared = tmp_path / "shared-coco"
    shutil.move(str(tmp_path / "raw" / "datasets" / "coco"), str(shared))
    _, rows, rejects = ingest("aokvqa", tree.folders["dataset folder"], tmp_path, "without")
    assert rows == {} and {r["reason"] for r in rejects} == {"missing_image"}  # without it: missing, with a hint
    assert "image root for 'coco'" in rejects[0]["detail"]
    out = Root(str(tmp_path / "with"))
    summary = ingest_source("aokvqa", Root(str(tree.folders["dataset folder"])), out,
                            stores={"coco": Root(str(shared))}, derived=Root(str(tmp_path / "d")))
    assert summary.rows == 2 and summary.quarantined == {}


def test_a_symlinked_image_store_is_followed_and_a_link_loop_is_harmless(tmp_path):
    """The usual ShareGPT4V set-up: data/coco, data/sam, data/llava are links into one shared copy."""
    tree = trees.sharegpt4v(tmp_path / "raw")
    data = tree.folders["data folder"]
    store = tmp_path / "store"
    store.mkdir()
    for name in ("coco", "sam", "llava"):
        shutil.move(str(data / name), str(store / name))
        os.symlink(store / name, data / name, target_is_directory=True)
    os.symlink(data, store / "coco" / "back-to-data", target_is_directory=True)  # a loop through the store
    (data / "sharegpt4v").rename(tmp_path / "annotations")
    os.symlink(tmp_path / "annotations", data / "sharegpt4v", target_is_directory=True)  # linked folder of JSON
    summary, rows, rejects = ingest("sharegpt4v", data, tmp_path)
    assert set(rows) == tree.ids and [r for r in rejects if r["reason"] != "no_image"] == []
    assert Root(str(data)).has_file("coco/train2017/000000000009.jpg")


def _listing(top):
    out = {}
    for folder, dirs, files in os.walk(top):
        for name in dirs + files:
            path = os.path.join(folder, name)
            st = os.lstat(path)
            out[os.path.relpath(path, top)] = (st.st_size, st.st_mtime_ns, stat.S_IMODE(st.st_mode))
    return out


@pytest.mark.parametrize(("source", "build"), [("geoqa_plus", trees.geoqa_plus), ("clevr_math", trees.clevr_math),
                                               ("ai2d", trees.ai2d)], ids=["geoqa_plus", "clevr_math", "ai2d"])
def test_a_read_only_raw_root_is_read_and_never_written(tmp_path, source, build):
    tree = build(tmp_path / "raw")
    for folder, dirs, files in os.walk(tmp_path / "raw"):
        for name in dirs + files:
            os.chmod(os.path.join(folder, name), 0o555 if name in dirs else 0o444)
    os.chmod(tmp_path / "raw", 0o555)
    before = _listing(tmp_path / "raw")
    try:
        folder = next(iter(tree.folders.values()))
        summary, rows, rejects = ingest(source, folder, tmp_path)
        summary2, rows2, _ = ingest(source, folder, tmp_path, "again")  # a re-run: served from caches
        after = _listing(tmp_path / "raw")
    finally:
        for folder_, dirs, files in os.walk(tmp_path / "raw"):
            for name in dirs:
                os.chmod(os.path.join(folder_, name), 0o755)
    assert set(rows) == tree.ids and rows2 == rows
    assert after == before  # nothing written, touched or re-stamped (also as root)
    assert summary2.images_decoded == 0 and summary.images_decoded > 0  # decode verdicts cached by (path, size, stamp)


def test_the_data_view_refuses_writes_even_where_permissions_would_allow_them(tmp_path):
    tree = trees.scienceqa(tmp_path / "raw")
    view = locate(get_reader("scienceqa"), Root(str(tree.folders["repository root"])))
    with pytest.raises(ReadOnlyRootError, match="read only"):
        view.open("problems.json", "wb")
    with pytest.raises(ReadOnlyRootError):
        view.makedirs("new")


def test_layout_errors_name_the_folders_tried_and_what_is_one_level_up_and_down(tmp_path):
    (tmp_path / "dl" / "CLEVR_v1.0_renamed_wrongly" / "quest").mkdir(parents=True)
    (tmp_path / "dl" / "notes.txt").write_text("x")
    with pytest.raises(SourceLayoutError) as err:
        locate(get_reader("clevr"), Root(str(tmp_path / "dl")))
    message = str(err.value)
    assert "Folders tried:" in message and str(tmp_path / "dl" / "CLEVR_v1.0") in message
    assert "One level down" in message and "CLEVR_v1.0_renamed_wrongly/" in message and "notes.txt" in message
    assert "One level up" in message and "dl/" in message


def test_two_copies_below_the_folder_given_are_an_error_not_a_silent_choice(tmp_path):
    for name in ("one", "two"):  # two downloads side by side, each under its own name
        trees.chartqa(tmp_path / name)
        (tmp_path / "both").mkdir(exist_ok=True)
        (tmp_path / name / "ChartQA" / "ChartQA Dataset").rename(tmp_path / "both" / name)
    with pytest.raises(SourceLayoutError, match="several folders"):
        locate(get_reader("chartqa"), Root(str(tmp_path / "both")))


def test_clevr_math_without_clevr_images_says_where_they_belong(tmp_path):
    tree = trees.clevr_math(tmp_path / "raw")
    (tree.folders["data folder"] / "CLEVR_v1.0.zip").unlink()
    _, rows, rejects = ingest("clevr_math", tree.folders["data folder"], tmp_path)
    missing = [r for r in rejects if r["reason"] == "missing_image"]
    assert len(missing) == 2 and "CLEVR_v1.0.zip" in missing[0]["detail"]
    assert set(rows) == {"clevr_math/general/test/0"}  # the test renders come from their own zip
