"""The embedded sample: small native-layout copies of all ten sources, written on demand.

Synthetic but faithful: each image really depicts its answer (counted shapes for CLEVR, plotted
values for ChartQA, rendered text for DocVQA, ...), each folder follows its dataset's published
layout so the real readers run on it, and each source plants a few bad rows of every quarantine
kind. Nothing is downloaded. Deterministic for a seed; rewriting an existing copy of the same
version and seed is skipped, so file stamps (and the source fingerprints) stay unchanged.
"""
from __future__ import annotations

import importlib
import json

from pipeline import SOURCES
from pipeline.demo.common import Planted
from pipeline.storage import Root

DEMO_VERSION = "1"
MARKER = ".demo.json"


def write_source(source: str, root: Root, seed: int = 0) -> list[Planted]:
    """Write one source's sample into `root` (the source folder); return its planted bad rows."""
    from pipeline.demo.common import DemoWriter

    module = importlib.import_module(f"pipeline.demo.{source}")
    return module.write(DemoWriter(root, seed))


def write_demo(raw_root: Root, seed: int = 0, force: bool = False) -> dict[str, list[Planted]]:
    """Write all ten sources under `raw_root/<source>/`. Returns the planted bad rows per source."""
    planted: dict[str, list[Planted]] = {}
    for source in SOURCES:
        root = raw_root.child(source)
        marker = {"demo_version": DEMO_VERSION, "seed": seed}
        if not force and root.exists(MARKER):
            with root.open(MARKER, "r") as f:
                existing = json.load(f)
            if {k: existing.get(k) for k in marker} == marker:
                planted[source] = [Planted(**p) for p in existing["planted"]]
                continue
        rows = write_source(source, root, seed)
        planted[source] = rows
        with root.open(MARKER, "w") as f:
            json.dump({**marker, "planted": [p.__dict__ for p in rows]}, f, indent=1)
    return planted
