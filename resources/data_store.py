"""Where data lives: one fsspec URI root (a local folder by default, `s3://bucket/prefix` in
production). Assets read and write through it; large data never passes through an IO manager.

Raw source folders are only ever read: `raw(source)` returns a read-only view of the dataset
folder found from `<raw root>/<source>` (see `pipeline.sources.layout`); what the pipeline derives
from them (rendered images, caches) goes under the data root."""
from __future__ import annotations

import dagster as dg
from pydantic import Field

from pipeline.demo import ensure_source
from pipeline.fingerprint import fingerprint
from pipeline.sources import SourceLayoutError, get_reader
from pipeline.sources.layout import locate
from pipeline.storage import Root


class DataStore(dg.ConfigurableResource):
    root_uri: str = Field(default="data", description="Root of everything this pipeline writes (fsspec URI).")
    raw_uri: str = Field(
        default="",
        description="Root holding one folder per source in its native layout; default <root_uri>/raw. "
        "Only read: a source folder may be a symlink, a read-only mount, the archive's extraction root, "
        "the dataset folder itself or its parent.",
    )
    embedded_sample: bool = Field(
        default=False,
        description="Write the embedded demo sample into a source folder that is absent or empty (never "
        "into one holding other files: that is an error saying what to do).",
    )
    demo_seed: int = 0
    image_roots: dict[str, dict[str, str]] = Field(
        default_factory=dict,
        description="Per source, image stores kept elsewhere: {source: {path prefix: URI}}, e.g. "
        "{'aokvqa': {'coco': '/datasets/coco'}} or {'sharegpt4v': {'coco': '/datasets/coco', 'sam': ...}}. "
        "Image paths keep the prefix; the files are read from the URI.",
    )

    def root(self) -> Root:
        return Root(self.root_uri)

    def raw_root(self) -> Root:
        return Root(self.raw_uri) if self.raw_uri else self.root().child("raw")

    def derived(self, source: str) -> Root:
        """Files derived from a source's raw data (e.g. GeoQA+'s rendered pickle images)."""
        return self.root().child("derived", source)

    def cache(self, source: str) -> Root:
        """Caches of work on a source's raw data (e.g. image decode verdicts)."""
        return self.root().child("cache", source)

    def raw(self, source: str) -> Root:
        """The read-only view of `source`'s dataset folder (writing the embedded sample first when
        configured and allowed). Raises SourceLayoutError / DemoRefused with what to do."""
        if self.embedded_sample:
            ensure_source(self.raw_root(), source, seed=self.demo_seed)
        stores = {prefix: Root(uri, read_only=True) for prefix, uri in self.image_roots.get(source, {}).items()}
        given = self.raw_root().child(source).reading()
        return locate(get_reader(source), given, stores=stores, derived=self.derived(source))

    def fingerprint(self, source: str) -> tuple[str, int, int]:
        """Fingerprint of what `raw(source)` reads (the dataset folder and its image stores); of
        the folder as given when no dataset is found there (the layout error surfaces when it is read)."""
        try:
            view = self.raw(source)
        except SourceLayoutError:
            view = self.raw_root().child(source).reading()
        return fingerprint(view)

    def step(self, asset: str, partition: str | None = None) -> Root:
        """The folder an asset (and partition) writes to: <root>/<asset>/<partition>/."""
        return self.root().child(asset, partition) if partition else self.root().child(asset)
