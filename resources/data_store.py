"""Where data lives: one fsspec URI root (a local folder by default, `s3://bucket/prefix` in
production). Assets read and write through it; large data never passes through an IO manager."""
from __future__ import annotations

import dagster as dg
from pydantic import Field

from pipeline.demo import write_demo
from pipeline.storage import Root


class DataStore(dg.ConfigurableResource):
    root_uri: str = Field(default="data", description="Root of everything this pipeline writes (fsspec URI).")
    raw_uri: str = Field(
        default="",
        description="Root holding one folder per source in its native layout; default <root_uri>/raw.",
    )
    embedded_sample: bool = Field(
        default=False,
        description="Write the embedded demo sample into the raw root when a source folder is absent.",
    )
    demo_seed: int = 0

    def root(self) -> Root:
        return Root(self.root_uri)

    def raw_root(self) -> Root:
        return Root(self.raw_uri) if self.raw_uri else self.root().child("raw")

    def raw(self, source: str) -> Root:
        raw = self.raw_root()
        if self.embedded_sample and not raw.child(source).exists(".demo.json"):
            write_demo(raw, seed=self.demo_seed)
        return raw.child(source)

    def step(self, asset: str, partition: str | None = None) -> Root:
        """The folder an asset (and partition) writes to: <root>/<asset>/<partition>/."""
        return self.root().child(asset, partition) if partition else self.root().child(asset)
