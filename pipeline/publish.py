"""Write a step's output beside the published one; publish it only once its checks pass.

A step that has blocking checks writes into `<asset>/.staging/<partition>/` (a `Staged` folder),
computes its checks on what it wrote, then either
- `publish()`es: every file moves over the published folder `<asset>/<partition>/` (a rename on
  local disks) and files the new output no longer has are removed, or
- `reject()`s: the whole staged folder moves to `<asset>/.rejected/<partition>/` for inspection
  (replacing an earlier rejected one) and the published folder is left exactly as it was.

So readers of the published folder (the next step, the dataset, the user) only ever see output that
passed its checks, and a failed check never destroys the previous good output. Hidden folder names
keep staging and rejects out of plain listings (`Root.glob`).
"""
from __future__ import annotations

import posixpath

from pipeline.storage import Root

STAGING = ".staging"
REJECTED = ".rejected"


class Staged:
    def __init__(self, published: Root, asset_root: Root, name: str) -> None:
        self.published = published
        self.asset_root = asset_root
        self.name = name
        self.root = asset_root.child(STAGING, name)
        if self.root.exists():  # a crashed earlier attempt: start clean
            self.root.fs.rm(self.root.base, recursive=True)
        self.root.makedirs()

    def final_path(self, staged_path: str) -> str:
        """Where a file written under the staging folder lives once published (other paths, and
        "" for none, are returned as they are)."""
        if not staged_path or not staged_path.startswith(self.root.base + "/"):
            return staged_path
        return self.published.path(posixpath.relpath(staged_path, self.root.base))

    def publish(self) -> None:
        staged = {rel for rel, _ in self.root.walk_files()}
        for rel in sorted(staged):
            target = self.published.path(rel)
            self.published.fs.makedirs(posixpath.dirname(target), exist_ok=True)
            self.published.fs.mv(self.root.path(rel), target)
        for rel, _ in list(self.published.walk_files()):
            if rel not in staged:
                self.published.fs.rm(self.published.path(rel))
        self.root.fs.rm(self.root.base, recursive=True)

    def reject(self) -> Root:
        """Keep the rejected output aside (the latest one per partition); returns where."""
        kept = self.asset_root.child(REJECTED, self.name)
        if kept.exists():
            kept.fs.rm(kept.base, recursive=True)
        kept.fs.makedirs(posixpath.dirname(kept.base), exist_ok=True)
        self.root.fs.mv(self.root.base, kept.base, recursive=True)
        return kept


def staged(asset_root: Root, partition: str) -> Staged:
    """The staging folder of `asset_root/partition` (the published folder)."""
    return Staged(asset_root.child(partition), asset_root, partition)
