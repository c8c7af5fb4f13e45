"""Finding a dataset's folder from the folder a user points at, and the view a reader reads.

Users point at whatever they have: the folder an archive extracted into (`CLEVR_v1.0.zip` ->
`CLEVR_v1.0/`), the dataset folder itself, a repository checkout (`ScienceQA/data/scienceqa`), or
a sub-folder of the dataset (`spdocvqa_qas/`). `locate` tries, in order: the folder given, the
reader's known wrapper sub-folders, any single immediate sub-folder that holds the dataset, and
the reader's archives read in place (`CLEVR_v1.0.zip`), and the parent when the folder given is
one of the dataset's inner folders. The first that holds the
reader's annotation files is the dataset folder.

The result is a read-only `Root` on that folder with mounts: image stores the reader finds beside
it or in archives (A-OKVQA's `coco/` one level up, CLEVR-Math's zips read in place), stores the
user names explicitly (a shared COCO copy), and `_derived/` -> this project's own derived files
for the source under the data root (GeoQA+ renders pickled images there). Image paths are relative
to this view, so they are the same whichever layout the user has.

A folder where several sub-folders hold the dataset is an error too (reading one would silently
drop the others). A folder where nothing is found is a `SourceLayoutError` listing the folders tried and what lies
one level down and one level up, so the user can see where the data actually is.
"""
from __future__ import annotations

import posixpath

from pipeline.sources.base import Reader, SourceLayoutError
from pipeline.storage import Root

DERIVED = "_derived"
MAX_CHILDREN_SCANNED = 64
MAX_NAMES_SHOWN = 20


def locate(reader: Reader, given: Root, *, stores: dict[str, Root] | None = None,
           derived: Root | None = None) -> Root:
    """The read-only view of the dataset folder found from `given` (see the module docstring)."""
    if getattr(given, "located", None) == reader.name:
        return given  # already a located view (e.g. the data store's)
    tried: list[str] = []
    base = _find(reader, given, tried)
    if base is None:
        raise SourceLayoutError(_explain(reader, given, tried))
    view = base.reading()
    for prefix, target in reader.stores(base).items():
        view = view.mount(prefix, target.reading())
    for prefix, target in (stores or {}).items():
        view = view.mount(prefix, target.reading())
    if derived is not None:
        view = view.mount(DERIVED, derived)
    view.derived = derived
    view.located = reader.name
    view.given = given.uri
    reader.check_layout(view)
    return view


def _find(reader: Reader, given: Root, tried: list[str]) -> Root | None:
    tried.append(given.uri)
    if not given.isdir():
        return None
    parent = given.parent()
    inner = parent is not None and posixpath.basename(given.base) in reader.inner_names
    if inner and reader.is_dataset_folder(parent):  # e.g. `data/sharegpt4v/`: the dataset is its parent
        tried.append(parent.uri)
        return parent
    if reader.is_dataset_folder(given):
        return given
    hits: dict[str, Root] = {}
    for rel in reader.wrappers:
        candidate = given.child(rel)
        tried.append(candidate.uri)
        if candidate.isdir() and reader.is_dataset_folder(candidate):
            hits.setdefault(candidate.base, candidate)
    for name, inside in reader.archives:
        if given.isfile(name):
            tried.append(f"{given.uri}/{name} (read in place)")
            candidate = given.zip_root(name, inside)
            if reader.is_dataset_folder(candidate):
                hits.setdefault(candidate.uri, candidate)
    if not hits:  # any immediate sub-folder (an extraction folder under another name)
        children = [e.name for e in given.ls() if e.kind == "directory" and not e.name.startswith(".")]
        for name in children[:MAX_CHILDREN_SCANNED]:
            candidate = given.child(name)
            if reader.is_dataset_folder(candidate):
                hits.setdefault(candidate.base, candidate)
        tried.append(f"{given.uri}/* ({min(len(children), MAX_CHILDREN_SCANNED)} sub-folders)")
    if len(hits) == 1:
        return next(iter(hits.values()))
    if len(hits) > 1:
        raise SourceLayoutError(
            f"{reader.name}: several folders below {given.uri} hold this dataset: "
            f"{', '.join(sorted(h.uri for h in hits.values()))}; point the source at one of them "
            "(reading one and ignoring the others would lose data silently)"
        )
    if inner:
        tried.append(parent.uri)
    return None


def _explain(reader: Reader, given: Root, tried: list[str]) -> str:
    wanted = " or ".join(repr(a) for a in reader.required[0]) if reader.required else "its files"
    lines = [f"{reader.name}: no folder holds {wanted}."]
    if not given.isdir():
        lines = [f"{reader.name}: source folder {given.uri!r} does not exist (expected {wanted})."]
    lines.append("Folders tried: " + "; ".join(tried) + ".")
    lines.append(f"One level down, {given.uri} holds: {_names(given)}.")
    parent = given.parent()
    if parent is not None:
        lines.append(f"One level up, {parent.uri} holds: {_names(parent)}.")
    if reader.wrappers:
        lines.append("Point the source at the dataset folder, or at the folder holding one of: "
                     + ", ".join(reader.wrappers) + ".")
    return " ".join(lines)


def _names(root: Root) -> str:
    try:
        entries = root.ls()
    except OSError as exc:
        return f"(cannot list: {exc})"
    if not entries:
        return "nothing" if root.isdir() else "(no such folder)"
    shown = [e.name + ("/" if e.kind == "directory" else "") for e in entries[:MAX_NAMES_SHOWN]]
    more = len(entries) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")
