"""The embedded sample: small native-layout copies of all ten sources, written on demand.

Synthetic but faithful: each image really depicts its answer (counted shapes for CLEVR, plotted
values for ChartQA, rendered text for DocVQA, ...), each folder follows its dataset's published
layout so the real readers run on it, and each source plants a few bad rows of every quarantine
kind. Nothing is downloaded. Deterministic for a seed; rewriting an existing copy of the same
version and seed is skipped, so file stamps (and the source fingerprints) stay unchanged.

Never over a user's data: the sample is written only into a folder that is absent or empty, or
that holds the marker (`.demo.json`) of a sample written here before. A folder with anything else
in it is refused with `DemoRefused`, saying what to do; no file is written through a symbolic
link. An absent local folder is written under a temporary name and renamed into place, so an
interrupted write never leaves a half sample without its marker.
"""
from __future__ import annotations

import importlib
import json
import os
import uuid

from pipeline import SOURCES
from pipeline.demo.common import DemoRefused, Planted
from pipeline.storage import Root

DEMO_VERSION = "1"
MARKER = ".demo.json"

__all__ = ["DEMO_VERSION", "MARKER", "DemoRefused", "Planted", "demo_state", "ensure_source", "write_demo",
           "write_source"]


def write_source(source: str, root: Root, seed: int = 0) -> list[Planted]:
    """Write one source's sample into `root` (the source folder); return its planted bad rows.
    No checks: for tests and callers that own `root` (see `ensure_source` for a user's raw root)."""
    from pipeline.demo.common import DemoWriter

    module = importlib.import_module(f"pipeline.demo.{source}")
    return module.write(DemoWriter(root, seed))


def demo_state(root: Root, seed: int = 0) -> tuple[str, dict | None]:
    """("absent" | "empty" | "current" | "ours" | "foreign", the marker): "current" is a complete
    sample of this version and seed, "ours" any other sample written here (stale or interrupted)."""
    if not root.exists():
        return "absent", None
    if not root.isdir():
        return "foreign", None
    entries = root.ls()
    if not entries:
        return "empty", None
    if not any(e.name == MARKER for e in entries):
        return "foreign", None
    try:
        with root.open(MARKER, "r") as f:
            marker = json.load(f)
    except (OSError, ValueError):
        return "ours", None
    if (isinstance(marker, dict) and marker.get("complete", True) and marker.get("demo_version") == DEMO_VERSION
            and marker.get("seed") == seed and isinstance(marker.get("planted"), list)):
        return "current", marker
    return "ours", marker


def ensure_source(raw_root: Root, source: str, seed: int = 0, force: bool = False) -> list[Planted]:
    """The embedded sample of `source` in `raw_root/<source>/`, written if needed and allowed."""
    root = raw_root.child(source)
    state, marker = demo_state(root, seed)
    if state == "foreign":
        raise DemoRefused(
            f"{root.uri} holds files the embedded sample did not write (it has no {MARKER}), so the sample "
            f"is not written there. To use your own {source} data, set the data store's embedded_sample to "
            f"false (and raw_uri to the folder holding your sources); to use the sample, move those files "
            f"away or point raw_uri at an empty folder."
        )
    if state == "current" and not force:
        return [Planted(**p) for p in marker["planted"]]
    if state == "absent" and root.is_local:
        return _write_then_rename(raw_root, source, seed)
    return _write_in_place(root, source, seed)


def _marker(seed: int, planted: list[Planted] | None) -> dict:
    return {"demo_version": DEMO_VERSION, "seed": seed, "complete": planted is not None,
            "planted": [p.__dict__ for p in planted or []]}


def _write_in_place(root: Root, source: str, seed: int) -> list[Planted]:
    root.makedirs()
    with root.open(MARKER, "w") as f:  # first: an interrupted write is still recognisably ours
        json.dump(_marker(seed, None), f)
    planted = write_source(source, root, seed)
    with root.open(MARKER, "w") as f:
        json.dump(_marker(seed, planted), f, indent=1)
    return planted


def _write_then_rename(raw_root: Root, source: str, seed: int) -> list[Planted]:
    tmp_name = f".{source}.demo-{uuid.uuid4().hex[:8]}"
    tmp = raw_root.child(tmp_name)
    try:
        planted = _write_in_place(tmp, source, seed)
        try:
            os.rename(tmp.path(), raw_root.child(source).path())
        except OSError:  # another writer got there first (or a folder appeared): use what is there
            state, marker = demo_state(raw_root.child(source), seed)
            if state != "current":
                raise
            planted = [Planted(**p) for p in marker["planted"]]
        return planted
    finally:
        if tmp.exists():
            tmp.fs.rm(tmp.path(), recursive=True)


def write_demo(raw_root: Root, seed: int = 0, force: bool = False, sources=None) -> dict[str, list[Planted]]:
    """The embedded sample of every source (or `sources`) under `raw_root/<source>/`; returns the
    planted bad rows per source. Refuses (DemoRefused) a folder holding someone else's files."""
    return {source: ensure_source(raw_root, source, seed, force) for source in (sources or SOURCES)}
