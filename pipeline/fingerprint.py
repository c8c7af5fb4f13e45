"""A cheap fingerprint of a raw source folder: what changed since the last look?

Hashes every file's relative path, size and modification stamp (mtime locally, the ETag or
mtime an object store reports, the CRC of a zip member), not the bytes; symlinked folders and the
image stores mounted into a dataset view count like local files: a 100 GB source is fingerprinted from one listing.
Paths under a folder whose name starts with "_" or "." are this product's own derived files
(for example rendered GeoQA+ images) and do not count.
"""
from __future__ import annotations

import hashlib

from pipeline.storage import Root


def _ignored(rel: str) -> bool:
    return any(part.startswith(("_", ".")) for part in rel.split("/"))


def fingerprint(root: Root) -> tuple[str, int, int]:
    """(hex digest, file count, total bytes) of the folder; ('missing', 0, 0) if it does not exist."""
    if not root.exists():
        return "missing", 0, 0
    if root.mounts:  # our own derived files (mounted under "_...") are not part of the raw data
        view = root.reading()
        view.mounts = {k: v for k, v in root.mounts.items() if not _ignored(k)}
        root = view
    h = hashlib.sha256()
    files = total = 0
    for rel, info in root.walk_files():
        if _ignored(rel):
            continue
        stamp = (info.get("ETag") or info.get("etag") or info.get("mtime") or info.get("LastModified")
                 or info.get("CRC") or "")  # CRC: a member of a zip read in place
        size = int(info.get("size") or 0)
        h.update(f"{rel}\0{size}\0{stamp}\n".encode())
        files += 1
        total += size
    return h.hexdigest()[:32], files, total
