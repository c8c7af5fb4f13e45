"""A folder addressed by an fsspec URI: a local path by default, `s3://bucket/prefix` the same way.

Every reader and writer goes through `Root`, so no code path assumes a local disk.
"""
from __future__ import annotations

import os
import posixpath
from typing import IO, Iterator

import fsspec


class Root:
    def __init__(self, uri: str, storage_options: dict | None = None) -> None:
        self.uri = str(uri)
        self.fs, base = fsspec.core.url_to_fs(self.uri, **(storage_options or {}))
        self.base = base.rstrip("/") or "/"
        self._listing: set[str] | None = None

    def __repr__(self) -> str:
        return f"Root({self.uri!r})"

    def child(self, *parts: str) -> "Root":
        sub = Root.__new__(Root)
        sub.fs = self.fs
        sub.base = self.path(*parts)
        protocol = self.fs.protocol[0] if isinstance(self.fs.protocol, tuple) else self.fs.protocol
        sub.uri = sub.base if protocol in ("file", "local") else f"{protocol}://{sub.base}"
        sub._listing = None
        return sub

    def path(self, *parts: str) -> str:
        return posixpath.join(self.base, *[p.strip("/") for p in parts if p])

    def exists(self, rel: str = "") -> bool:
        return self.fs.exists(self.path(rel))

    def isdir(self, rel: str = "") -> bool:
        return self.fs.isdir(self.path(rel))

    def open(self, rel: str, mode: str = "rb", **kwargs) -> IO:
        if "w" in mode:
            parent = posixpath.dirname(self.path(rel))
            self.fs.makedirs(parent, exist_ok=True)
            if self._listing is not None:  # keep the cached listing true for files we write
                self._listing.add(posixpath.normpath(rel))
        return self.fs.open(self.path(rel), mode, **kwargs)

    def makedirs(self, rel: str = "") -> None:
        self.fs.makedirs(self.path(rel), exist_ok=True)

    def glob(self, pattern: str) -> list[str]:
        """Relative paths matching `pattern` (relative to this root), sorted."""
        hits = [self.relative(h) for h in self.fs.glob(self.path(pattern))]
        if not posixpath.basename(pattern).startswith("."):
            # hidden files (our own markers, temporary shards) never match a plain pattern
            hits = [h for h in hits if not posixpath.basename(h).startswith(".")]
        return sorted(hits)

    def relative(self, full: str) -> str:
        full = full.rstrip("/")
        return posixpath.relpath(full, self.base) if full != self.base else ""

    def walk_files(self, rel: str = "") -> Iterator[tuple[str, dict]]:
        """(relative path, info) of every file below `rel`, in sorted order."""
        start = self.path(rel)
        if not self.fs.exists(start):
            return
        found = self.fs.find(start, detail=True)
        for full in sorted(found):
            info = found[full]
            if info.get("type") == "directory":
                continue
            yield self.relative(full), info

    def file_set(self) -> set[str]:
        """Every file below this root, listed once and cached: existence checks on object
        stores then cost one listing instead of one request per row."""
        if self._listing is None:
            self._listing = {p for p, _ in self.walk_files()}
        return self._listing

    def has_file(self, rel: str) -> bool:
        return posixpath.normpath(rel) in self.file_set()

    def replace(self, tmp_rel: str, final_rel: str) -> None:
        """Move a finished temporary file into place (an atomic rename on local disks)."""
        if self.is_local:
            os.replace(self.path(tmp_rel), self.path(final_rel))
            return
        # object stores have no rename: a copy then delete, and readers only ever see whole objects
        self.fs.mv(self.path(tmp_rel), self.path(final_rel))

    @property
    def is_local(self) -> bool:
        protocol = self.fs.protocol[0] if isinstance(self.fs.protocol, tuple) else self.fs.protocol
        return protocol in ("file", "local")
