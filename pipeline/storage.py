"""A folder addressed by an fsspec URI: a local path by default, `s3://bucket/prefix` the same way.

Every reader and writer goes through `Root`, so no code path assumes a local disk. Three things a
user's raw data needs beyond a plain fsspec path:
- **symlinks are followed** (files and folders) when listing, with loop protection: a folder that
  links back to one of its own ancestors is listed once, never forever. Locally this is done with
  `os.scandir` (fsspec's local listing reports a linked folder as a file-like "other" entry and does
  not descend); on other fsspec filesystems a link that `isdir` resolves is descended the same way.
- **read-only roots**: a `Root(..., read_only=True)` refuses every write with `ReadOnlyRootError`,
  so code that should only read a user's raw folder cannot write into it even when the file
  permissions would allow it (tests run as root, where permission bits stop nothing).
- **mounts**: a root can show other roots under a path prefix (`coco/` -> a shared COCO copy, a zip
  read in place, the project's own derived files). Paths stay the same whichever folder holds them.
"""
from __future__ import annotations

import fnmatch
import os
import posixpath
import stat as stat_mod
from dataclasses import dataclass
from typing import IO, Iterator

import fsspec


class ReadOnlyRootError(PermissionError):
    """A write was attempted through a root that may only be read (a user's raw data)."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One name in a folder listing, links resolved: kind is "file", "directory" or "missing"
    (a dangling link)."""

    name: str
    kind: str


def _protocol(fs) -> str:
    return fs.protocol[0] if isinstance(fs.protocol, tuple) else fs.protocol


class Root:
    # Set on a dataset view made by `pipeline.sources.layout.locate`: the source it was located
    # for, the folder the user gave, and the writable folder for derived files (under the data root).
    located: str | None = None
    given: str | None = None
    derived: "Root | None" = None

    def __init__(self, uri: str, storage_options: dict | None = None, read_only: bool = False) -> None:
        self.uri = str(uri)
        self.fs, base = fsspec.core.url_to_fs(self.uri, **(storage_options or {}))
        self.base = base.rstrip("/") or "/"
        self.read_only = read_only
        self.mounts: dict[str, Root] = {}
        self._listing: set[str] | None = None

    @classmethod
    def _make(cls, fs, base: str, uri: str, read_only: bool) -> "Root":
        sub = cls.__new__(cls)
        sub.fs, sub.base, sub.uri, sub.read_only = fs, base, uri, read_only
        sub.mounts = {}
        sub._listing = None
        return sub

    def __repr__(self) -> str:
        extra = f", mounts={sorted(self.mounts)}" if self.mounts else ""
        return f"Root({self.uri!r}{', read_only' if self.read_only else ''}{extra})"

    # -- addressing --------------------------------------------------------------------------------

    def child(self, *parts: str) -> "Root":
        prefix = posixpath.normpath("/".join(p.strip("/") for p in parts if p)) if any(parts) else ""
        target, sub = self._resolve(prefix)
        if target is not self:  # inside a mount: the mounted root's own child
            return target.child(sub) if sub else target
        base = self.path(*parts)
        protocol = _protocol(self.fs)
        uri = base if protocol in ("file", "local") else f"{protocol}://{base}"
        sub = Root._make(self.fs, base, uri, self.read_only)
        for mount, target in self.mounts.items():  # mounts below the child stay visible
            if prefix and mount.startswith(prefix + "/"):
                sub.mounts[mount[len(prefix) + 1:]] = target
        return sub

    def parent(self) -> "Root | None":
        """The folder one level up (None at the filesystem root)."""
        up = posixpath.dirname(self.base)
        if not up or up == self.base:
            return None
        protocol = _protocol(self.fs)
        return Root._make(self.fs, up, up if protocol in ("file", "local") else f"{protocol}://{up}", self.read_only)

    def reading(self) -> "Root":
        """The same folder (and mounts), refusing writes."""
        sub = Root._make(self.fs, self.base, self.uri, True)
        sub.mounts = dict(self.mounts)
        sub.located, sub.given, sub.derived = self.located, self.given, self.derived
        return sub

    def mount(self, prefix: str, target: "Root") -> "Root":
        """A copy of this root that shows `target` under `prefix` (relative, no leading slash)."""
        sub = Root._make(self.fs, self.base, self.uri, self.read_only)
        sub.mounts = {**self.mounts, prefix.strip("/"): target}
        sub.located, sub.given, sub.derived = self.located, self.given, self.derived
        return sub

    def path(self, *parts: str) -> str:
        return posixpath.join(self.base, *[p.strip("/") for p in parts if p])

    def _resolve(self, rel: str) -> tuple["Root", str]:
        """(the root that holds `rel`, the path relative to it): the longest matching mount wins."""
        if self.mounts:
            rel = posixpath.normpath(rel.strip("/")) if rel else ""
            best = None
            for prefix in self.mounts:
                if rel == prefix or rel.startswith(prefix + "/"):
                    if best is None or len(prefix) > len(best):
                        best = prefix
            if best is not None:
                target = self.mounts[best]
                return target._resolve(rel[len(best) + 1:] if rel != best else "")
        return self, rel

    # -- reading -----------------------------------------------------------------------------------

    def exists(self, rel: str = "") -> bool:
        root, rel = self._resolve(rel)
        return root.fs.exists(root.path(rel))

    def isdir(self, rel: str = "") -> bool:
        root, rel = self._resolve(rel)
        return root.fs.isdir(root.path(rel))

    def isfile(self, rel: str) -> bool:
        root, rel = self._resolve(rel)
        return root.fs.isfile(root.path(rel))

    def info(self, rel: str) -> dict:
        """size and mtime (links followed) of one file."""
        root, rel = self._resolve(rel)
        if root.is_local:
            st = os.stat(root.path(rel))
            return {"size": st.st_size, "mtime": st.st_mtime_ns, "type": "file"}
        return root.fs.info(root.path(rel))

    def open(self, rel: str, mode: str = "rb", **kwargs) -> IO:
        root, rel = self._resolve(rel)
        if any(c in mode for c in "wax+"):
            root._check_writable(rel)
            parent = posixpath.dirname(root.path(rel))
            root.fs.makedirs(parent, exist_ok=True)
            if root._listing is not None:  # keep the cached listing true for files we write
                root._listing.add(posixpath.normpath(rel))
        return root.fs.open(root.path(rel), mode, **kwargs)

    def read_bytes(self, rel: str) -> bytes:
        with self.open(rel, "rb") as f:
            return f.read()

    def makedirs(self, rel: str = "") -> None:
        root, rel = self._resolve(rel)
        root._check_writable(rel)
        root.fs.makedirs(root.path(rel), exist_ok=True)

    def _check_writable(self, rel: str) -> None:
        if self.read_only:
            raise ReadOnlyRootError(
                f"refusing to write {self.path(rel)!r}: {self.uri} is a raw data root, read only "
                "(everything this project derives goes under its data root)"
            )

    def ls(self, rel: str = "") -> list[Entry]:
        """The names in one folder, links followed, sorted; [] when it is not a folder."""
        root, rel = self._resolve(rel)
        entries = root._ls(root.path(rel))
        if root is self and self.mounts:
            here = posixpath.normpath(rel) if rel else ""
            names = {e.name for e in entries}
            for prefix in self.mounts:
                head, _, name = prefix.rpartition("/")
                if head == here and name not in names:
                    entries.append(Entry(name, "directory"))
        return sorted(entries, key=lambda e: e.name)

    def _ls(self, full: str) -> list[Entry]:
        if self.is_local:
            try:
                with os.scandir(full) as it:
                    out = []
                    for d in it:
                        try:
                            kind = "directory" if d.is_dir() else "file" if d.is_file() else "missing"
                        except OSError:
                            kind = "missing"
                        out.append(Entry(d.name, kind))
                    return out
            except (NotADirectoryError, FileNotFoundError, PermissionError):
                return []
        try:
            found = self.fs.ls(full, detail=True)
        except (FileNotFoundError, NotADirectoryError):
            return []
        out = []
        for info in found:
            name = posixpath.basename(info["name"].rstrip("/"))
            kind = info.get("type")
            if kind not in ("file", "directory"):  # a link on a filesystem that has them
                kind = "directory" if self.fs.isdir(info["name"]) else "file" if self.fs.isfile(info["name"]) else "missing"
            if name:
                out.append(Entry(name, kind))
        return out

    def glob(self, pattern: str) -> list[str]:
        """Relative paths matching `pattern` segment by segment (`*`, `?`, `[...]` within one
        segment), links followed, sorted. Hidden names never match a pattern that does not
        itself start with "." (our own markers and temporary files)."""
        parts = [p for p in pattern.strip("/").split("/") if p]
        found = [""]
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            nxt = []
            for folder in found:
                if not fnmatch_magic(part):
                    rel = posixpath.join(folder, part) if folder else part
                    if (self.isdir(rel) if not last else self.exists(rel)):
                        nxt.append(rel)
                    continue
                for e in self.ls(folder):
                    if e.name.startswith(".") and not part.startswith("."):
                        continue
                    if (last or e.kind == "directory") and e.kind != "missing" and fnmatch.fnmatchcase(e.name, part):
                        nxt.append(posixpath.join(folder, e.name) if folder else e.name)
            found = nxt
        return sorted(found)

    def relative(self, full: str) -> str:
        full = full.rstrip("/")
        if not self.base:  # the top of an archive
            return full.lstrip("/")
        return posixpath.relpath(full, self.base) if full != self.base else ""

    def walk_files(self, rel: str = "", detail: bool = True) -> Iterator[tuple[str, dict]]:
        """(path relative to this root, info) of every file below `rel`, links followed (a link
        back to an ancestor folder is not descended), mounts included, in sorted order."""
        rel = posixpath.normpath(rel.strip("/")) if rel.strip("/") else ""
        target, sub = self._resolve(rel)
        if target is not self:
            mount = (rel[: len(rel) - len(sub)] if sub else rel).rstrip("/")
            for r, info in target.walk_files(sub, detail):
                yield posixpath.join(mount, r), info
            return
        items = [(self.relative(full), info) for full, info in self._walk(self.path(rel), detail)]
        for prefix, mounted in self.mounts.items():
            if not rel or prefix == rel or prefix.startswith(rel + "/"):
                items += [(posixpath.join(prefix, r), info) for r, info in mounted.walk_files("", detail)]
        yield from sorted(items, key=lambda item: item[0])

    def _walk(self, start: str, detail: bool) -> Iterator[tuple[str, dict]]:
        """(full path, info) of the files below `start`."""
        if self.is_local:
            yield from _walk_local(start, detail)
            return
        yield from self._walk_fsspec(start, detail, ancestors=())

    def _walk_fsspec(self, start: str, detail: bool, ancestors: tuple) -> Iterator[tuple[str, dict]]:
        try:
            found = self.fs.find(start, detail=True, withdirs=False)
        except FileNotFoundError:
            return
        for full, info in found.items():
            kind = info.get("type")
            if kind == "file":
                yield full, info
            elif kind not in ("directory",) and self.fs.isdir(full):
                target = info.get("destination") or full
                if target in ancestors or any(str(target).startswith(a.rstrip("/") + "/") for a in ancestors):
                    continue  # a link into one of its own ancestors: a loop
                yield from self._walk_fsspec(full, detail, ancestors + (start,))
            elif kind not in ("directory",) and self.fs.isfile(full):
                yield full, self.fs.info(full)

    def file_set(self) -> set[str]:
        """Every file below this root (not its mounts), listed once and cached: existence checks
        on object stores then cost one listing instead of one request per row."""
        if self._listing is None:  # this root's own files: `has_file` resolves mounts first
            self._listing = {self.relative(p) for p, _ in self._walk(self.path(), False)}
        return self._listing

    def has_file(self, rel: str) -> bool:
        root, sub = self._resolve(rel)
        if root is not self:
            return root.has_file(sub)
        return posixpath.normpath(rel) in self.file_set()

    def replace(self, tmp_rel: str, final_rel: str) -> None:
        """Move a finished temporary file into place (an atomic rename on local disks)."""
        self._check_writable(final_rel)
        if self.is_local:
            os.replace(self.path(tmp_rel), self.path(final_rel))
            return
        # object stores have no rename: a copy then delete, and readers only ever see whole objects
        self.fs.mv(self.path(tmp_rel), self.path(final_rel))

    @property
    def is_local(self) -> bool:
        return _protocol(self.fs) in ("file", "local")

    # -- archives ----------------------------------------------------------------------------------

    def zip_root(self, rel: str, inside: str = "") -> "Root":
        """A read-only root over the folder `inside` of the zip archive `rel` (read in place)."""
        from fsspec.implementations.zip import ZipFileSystem

        root, rel = self._resolve(rel)
        fs = ZipFileSystem(fo=root.path(rel), target_protocol=_protocol(root.fs),
                           target_options=getattr(root.fs, "storage_options", {}))
        base = inside.strip("/")
        return Root._make(fs, base, f"zip://{base}::{root.uri.rstrip('/')}/{rel}", True)


def fnmatch_magic(part: str) -> bool:
    return any(c in part for c in "*?[")


def _walk_local(start: str, detail: bool) -> Iterator[tuple[str, dict]]:
    """Local walk that follows links to folders and files; a folder whose (device, inode) is one
    of its own ancestors is skipped (a link loop)."""
    try:
        st = os.stat(start)
    except OSError:
        return
    if not stat_mod.S_ISDIR(st.st_mode):
        return
    stack = [(start, ((st.st_dev, st.st_ino),))]
    while stack:
        folder, ancestors = stack.pop()
        try:
            it = os.scandir(folder)
        except OSError:
            continue
        with it:
            for d in it:
                try:
                    if d.is_dir():
                        s = d.stat()
                        key = (s.st_dev, s.st_ino)
                        if key not in ancestors:
                            stack.append((d.path, ancestors + (key,)))
                    elif d.is_file():
                        if detail:
                            s = d.stat()
                            yield d.path, {"size": s.st_size, "mtime": s.st_mtime, "type": "file"}
                        else:
                            yield d.path, {}
                except OSError:
                    continue  # a dangling link or a file removed while listing
