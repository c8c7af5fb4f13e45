"""The embedded sample never overwrites a user's data: only absent, empty or its own folders."""
from __future__ import annotations

import json
import os

import pytest

from pipeline.demo import MARKER, DemoRefused, demo_state, ensure_source, write_demo
from pipeline.storage import Root


def test_written_into_an_absent_or_empty_folder_with_its_marker(tmp_path):
    raw = Root(str(tmp_path / "raw"))
    planted = ensure_source(raw, "clevr")
    assert planted and json.loads((tmp_path / "raw" / "clevr" / MARKER).read_text())["complete"] is True
    (tmp_path / "raw" / "pisc").mkdir()
    assert ensure_source(raw, "pisc") and demo_state(raw.child("pisc"))[0] == "current"
    assert not [p for p in (tmp_path / "raw").iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_a_second_call_rewrites_nothing(tmp_path):
    raw = Root(str(tmp_path / "raw"))
    ensure_source(raw, "ai2d")
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "raw" / "ai2d").rglob("*")}
    ensure_source(raw, "ai2d")
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "raw" / "ai2d").rglob("*")} == stamps


def test_a_folder_with_the_users_files_is_refused_and_left_untouched(tmp_path):
    user = tmp_path / "raw" / "sharegpt4v" / "sharegpt4v"
    user.mkdir(parents=True)
    (user / "sharegpt4v_instruct_gpt4-vision_cap100k.json").write_text("[]  my real data")
    with pytest.raises(DemoRefused, match="embedded_sample to false") as err:
        write_demo(Root(str(tmp_path / "raw")), sources=["sharegpt4v"])
    assert "did not write" in str(err.value)
    assert (user / "sharegpt4v_instruct_gpt4-vision_cap100k.json").read_text() == "[]  my real data"
    assert sorted(p.name for p in (tmp_path / "raw" / "sharegpt4v").rglob("*")) == [
        "sharegpt4v", "sharegpt4v_instruct_gpt4-vision_cap100k.json"]


def test_a_symlinked_folder_to_the_users_data_is_refused(tmp_path):
    real = tmp_path / "my-chartqa"
    real.mkdir()
    (real / "notes.txt").write_text("mine")
    (tmp_path / "raw").mkdir()
    os.symlink(real, tmp_path / "raw" / "chartqa", target_is_directory=True)
    with pytest.raises(DemoRefused):
        ensure_source(Root(str(tmp_path / "raw")), "chartqa")
    assert [p.name for p in real.iterdir()] == ["notes.txt"]


def test_a_link_inside_a_sample_folder_is_never_written_through(tmp_path):
    raw = Root(str(tmp_path / "raw"))
    ensure_source(raw, "aokvqa")
    shared = tmp_path / "shared-coco"
    shared.mkdir()
    (shared / "keep.txt").write_text("mine")
    coco = tmp_path / "raw" / "aokvqa" / "coco"
    for p in sorted(coco.rglob("*"), reverse=True):
        p.unlink() if p.is_file() else p.rmdir()
    coco.rmdir()
    os.symlink(shared, coco, target_is_directory=True)
    with pytest.raises(DemoRefused, match="symbolic link"):
        ensure_source(raw, "aokvqa", force=True)
    assert [p.name for p in shared.iterdir()] == ["keep.txt"]


def test_an_interrupted_sample_is_recognised_as_ours(tmp_path):
    folder = tmp_path / "raw" / "docvqa"
    folder.mkdir(parents=True)
    (folder / MARKER).write_text(json.dumps({"demo_version": "1", "seed": 0, "complete": False, "planted": []}))
    (folder / "half-written.json").write_text("[")
    assert demo_state(Root(str(folder)))[0] == "ours"
    assert ensure_source(Root(str(tmp_path / "raw")), "docvqa")  # rewritten: it was ours
    assert demo_state(Root(str(folder)))[0] == "current"
