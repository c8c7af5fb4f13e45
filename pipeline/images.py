"""Is an image usable? A full decode, bounded in bytes, pixels and time, in parallel, cached.

`Image.verify()` reads a PNG's chunks but not a JPEG's compressed data, so a truncated JPEG passes
it and fails later in training. Here every image is decoded whole (`Image.load()`), which reads
every byte of the compressed stream. Bounds, so no file can stall or exhaust the step:
- a file larger than `MAX_IMAGE_BYTES` is refused before it is read;
- an image with more than `MAX_IMAGE_PIXELS` pixels (Pillow's own decompression-bomb limit) is
  refused from its header, before its pixels are decoded;
- a decode that takes longer than `DECODE_TIMEOUT_S` is given up (the verdict says so).
The same decode yields the width, height and SHA-256 of the file's bytes (the sample schema's
`image_width`, `image_height`, `image_sha256`).

Decoding is the slow part of ingesting a large source (ShareGPT4V: ~1.2 M images), so it runs on
a thread pool (Pillow's decoders and hashlib release the GIL) and each verdict is cached under the
data root keyed by (path, size, modification stamp): a re-run decodes only new or changed files.
"""
from __future__ import annotations

import hashlib
import io
import os
import warnings
from concurrent.futures import Future, ThreadPoolExecutor, TimeoutError as FutureTimeout
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from pipeline.storage import Root

MAX_IMAGE_BYTES = 256 * 2**20
MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485
DECODE_TIMEOUT_S = 120.0
CHECKER_VERSION = "2"  # bump when the verdict for the same bytes can change: old cache entries are dropped
CACHE_FILE = f"image_checks-v{CHECKER_VERSION}.parquet"


@dataclass(frozen=True, slots=True)
class Verdict:
    """ok: width/height/sha256 set; otherwise reason (a quarantine reason) and detail."""

    width: int | None = None
    height: int | None = None
    sha256: str | None = None
    reason: str | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.reason is None


def inspect(data: bytes, rel: str) -> Verdict:
    """Decode `data` whole; the verdict names what is wrong with it."""
    sha = hashlib.sha256(data).hexdigest()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit is checked below
            with Image.open(io.BytesIO(data)) as im:
                width, height = im.size
                if width * height > MAX_IMAGE_PIXELS:
                    return Verdict(width, height, sha, "unreadable_image",
                                   f"image file {rel!r} has {width}x{height} pixels, above the decode limit "
                                   f"of {MAX_IMAGE_PIXELS:,}")
                im.load()  # every byte of the compressed data: a truncated file fails here
    except UnidentifiedImageError:
        # (Pillow's own message names a file object's memory address: not stable across runs)
        return Verdict(reason="unreadable_image", detail=f"image file {rel!r} is not in a recognised image format")
    except Exception as exc:  # noqa: BLE001 - any decoder failure (OSError, SyntaxError, struct.error, ...) is a bad file
        return Verdict(reason="unreadable_image",
                       detail=f"image file {rel!r} cannot be decoded: {type(exc).__name__}: {exc}")
    return Verdict(width, height, sha)


def _stamp(info: dict) -> str:
    for key in ("mtime", "ETag", "etag", "LastModified", "CRC", "date_time"):
        if info.get(key) is not None:
            return str(info[key])
    return ""


class ImageChecker:
    """Verdicts for the images a source references, each path checked once.

    `submit(paths)` starts checks without waiting; `verdict(path)` waits for one. Paths missing
    from the source view are answered at once (one listing, no request per row)."""

    def __init__(self, root: Root, cache: Root | None = None, workers: int | None = None,
                 missing_hint: str = "") -> None:
        self.root = root
        self.cache = cache
        self.missing_hint = missing_hint
        self.verdicts: dict[str, Verdict] = {}
        self._pending: dict[str, Future] = {}
        self._cached = self._load_cache()
        self._seen: dict[tuple, Verdict] = {}
        self.decoded = 0  # images decoded this run (not served from the cache)
        self._pool = ThreadPoolExecutor(max_workers=workers or max(2, os.cpu_count() or 2),
                                        thread_name_prefix="image-check")

    # -- the cache ----------------------------------------------------------------------------------

    def _load_cache(self) -> dict[tuple, Verdict]:
        if self.cache is None or not self.cache.exists(CACHE_FILE):
            return {}
        import pyarrow.parquet as pq

        try:
            with self.cache.open(CACHE_FILE, "rb") as f:
                rows = pq.read_table(f).to_pylist()
        except Exception:  # noqa: BLE001 - an unreadable cache is rebuilt, never trusted
            return {}
        return {(r["path"], r["size"], r["stamp"]): Verdict(r["width"], r["height"], r["sha256"], r["reason"],
                                                          r["detail"] or "") for r in rows}

    def save_cache(self) -> None:
        """Write the verdicts of this run (keyed by path, size, stamp) under the cache folder."""
        if self.cache is None or not self._seen:
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        keys = sorted(self._seen)
        table = pa.table({
            "path": [k[0] for k in keys], "size": [k[1] for k in keys], "stamp": [k[2] for k in keys],
            "width": pa.array([self._seen[k].width for k in keys], pa.int32()),
            "height": pa.array([self._seen[k].height for k in keys], pa.int32()),
            "sha256": [self._seen[k].sha256 for k in keys],
            "reason": pa.array([self._seen[k].reason for k in keys], pa.string()),
            "detail": [self._seen[k].detail for k in keys],
        })
        tmp = CACHE_FILE + ".tmp"
        with self.cache.open(tmp, "wb") as f:
            pq.write_table(table, f, compression="zstd")
        self.cache.replace(tmp, CACHE_FILE)

    # -- checking -----------------------------------------------------------------------------------

    def submit(self, paths) -> None:
        for rel in paths:
            if rel in self.verdicts or rel in self._pending:
                continue
            if not self.root.has_file(rel):
                hint = f"; {self.missing_hint}" if self.missing_hint else ""
                self.verdicts[rel] = Verdict(reason="missing_image",
                                             detail=f"image file {rel!r} not found under {self.root.uri}{hint}")
                continue
            self._pending[rel] = self._pool.submit(self._check, rel)

    def verdict(self, rel: str) -> Verdict:
        v = self.verdicts.get(rel)
        if v is not None:
            return v
        if rel not in self._pending:
            self.submit([rel])
            if rel in self.verdicts:
                return self.verdicts[rel]
        future = self._pending.pop(rel)
        try:
            v, fresh = future.result(timeout=DECODE_TIMEOUT_S)
            self.decoded += fresh
        except FutureTimeout:
            future.cancel()
            v = Verdict(reason="unreadable_image",
                        detail=f"image file {rel!r}: decoding took longer than {DECODE_TIMEOUT_S:g} s; given up")
        self.verdicts[rel] = v
        return v

    def _check(self, rel: str) -> tuple[Verdict, bool]:
        """(verdict, whether the file was decoded now rather than served from the cache)."""
        try:
            info = self.root.info(rel)
            size = int(info.get("size") or 0)
            key = (rel, size, _stamp(info))
            cached = self._cached.get(key)
            if cached is not None:
                self._seen[key] = cached
                return cached, False
            if size > MAX_IMAGE_BYTES:
                v = Verdict(reason="unreadable_image",
                            detail=f"image file {rel!r} is {size:,} bytes, above the limit of {MAX_IMAGE_BYTES:,}")
            else:
                v = inspect(self.root.read_bytes(rel), rel)
            self._seen[key] = v
            return v, size <= MAX_IMAGE_BYTES
        except OSError as exc:
            return Verdict(reason="unreadable_image", detail=f"image file {rel!r} cannot be read: {exc}"), False

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

