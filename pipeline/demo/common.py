"""Shared helpers of the embedded sample writers: deterministic files, drawing, planted bad rows."""
from __future__ import annotations

import io
import json
import os
import posixpath
import random
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

from pipeline.storage import Root


@dataclass(frozen=True)
class Planted:
    """A deliberately bad row in the embedded sample and the quarantine reason it must get.
    `native_id` is the id the reader reports for that row (None when the row has no usable id)."""

    native_id: str | None
    reason: str


class DemoRefused(Exception):
    """The embedded sample will not be written there: the folder holds someone else's files, or
    the target is a symbolic link (writing through it would change a file elsewhere)."""


class DemoWriter:
    """Writes files below one source's folder. Everything is deterministic for a seed: the same
    seed gives byte-identical files (PNG and JSON encoders here are deterministic)."""

    def __init__(self, root: Root, seed: int) -> None:
        self.root = root
        self.rng = random.Random(seed)

    def bytes(self, rel: str, data: bytes) -> None:
        self._refuse_links(rel)
        with self.root.open(rel, "wb") as f:
            f.write(data)

    def _refuse_links(self, rel: str) -> None:
        """Never write through a symbolic link below the sample's folder (a linked `coco/` inside
        it points at someone's real data)."""
        if not self.root.is_local:
            return
        path = self.root.path()
        for part in posixpath.normpath(rel).split("/"):
            path = os.path.join(path, part)
            if os.path.islink(path):
                raise DemoRefused(f"{path} is a symbolic link; the embedded sample never writes through links")

    def text(self, rel: str, data: str) -> None:
        self.bytes(rel, data.encode("utf-8"))

    def json(self, rel: str, obj, indent: int | None = None) -> None:
        self.text(rel, json.dumps(obj, ensure_ascii=False, indent=indent, sort_keys=False))

    def image(self, rel: str, im: Image.Image) -> None:
        buf = io.BytesIO()
        fmt = "JPEG" if rel.lower().endswith((".jpg", ".jpeg")) else "PNG"
        im.save(buf, format=fmt, **({"quality": 90} if fmt == "JPEG" else {"optimize": False}))
        self.bytes(rel, buf.getvalue())

    def corrupt_image(self, rel: str) -> None:
        """A file with an image name whose bytes are not an image: must be quarantined
        as `unreadable_image`."""
        self.bytes(rel, b"\x89PNG\r\n\x1a\n this is not really a PNG file")


def font(size: int = 14) -> ImageFont.ImageFont:
    """Pillow's bundled font, so rendering needs no system fonts and nothing downloaded."""
    return ImageFont.load_default(size=size)


def canvas(width: int, height: int, color=(255, 255, 255)) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    im = Image.new("RGB", (width, height), color)
    return im, ImageDraw.Draw(im)


COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (200, 40, 40),
    "blue": (40, 70, 200),
    "green": (40, 160, 60),
    "yellow": (230, 200, 40),
    "purple": (130, 50, 160),
    "cyan": (40, 190, 200),
    "brown": (120, 80, 40),
    "gray": (128, 128, 128),
}
