"""Images for the teacher: a source's image files (read, rendered as its reader shows them, or
opened for a header-only read), the data URL a request carries, and the detail it asks for."""
from __future__ import annotations

import base64
import io
from dataclasses import dataclass

from pipeline.storage import Root


@dataclass(frozen=True)
class SourceImages:
    """A source's images for the teacher: read whole, rendered as the source's reader shows them,
    or opened for a header-only read (the estimate). Picklable, so that worker processes can
    rebuild it (pipeline.annotate.workers). `reader`: the source whose `prepare_image` applies."""

    root: Root
    reader: str | None = None

    def load(self, rel: str) -> bytes:
        with self.open(rel) as f:
            return f.read()

    def open(self, rel: str):
        return self.root.open(rel, "rb")  # the root resolves archives and linked views

    def prepare(self, data: bytes, turn) -> bytes:
        from pipeline.sources import get_reader

        return get_reader(self.reader).prepare_image(data, turn.meta) if self.reader else data


def data_url(data: bytes, path: str) -> str:
    ext = path.rsplit(".", 1)[-1].lower()
    mime = {"jpg": "image/jpeg", "jpeg": "image/jpeg", "png": "image/png", "gif": "image/gif",
            "webp": "image/webp"}.get(ext, "image/png")
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def header_size(data_or_file) -> tuple[int, int] | None:
    """(width, height) from an image's header: PIL reads the header only, nothing is decoded."""
    from PIL import Image, UnidentifiedImageError

    f = io.BytesIO(data_or_file) if isinstance(data_or_file, (bytes, bytearray)) else data_or_file
    try:
        with Image.open(f) as im:
            return im.size
    except (UnidentifiedImageError, OSError, ValueError):
        return None


def request_detail(setting: str, size: tuple[int, int] | None) -> str:
    if setting != "fit":
        return setting
    return "low" if size is not None and max(size) <= 512 else "auto"
