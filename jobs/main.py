"""The main job: the whole asset graph. Partitioned assets run once per source partition."""
import dagster as dg

from assets.sources import source_files

# Observation of the raw folders runs as its own job: an observable source asset is observed for
# all partitions at once, while the main job runs one source partition per run.
observe_sources_job = dg.define_asset_job(
    "observe_sources", selection=dg.AssetSelection.assets(source_files.key),
    description="Fingerprint every raw source folder (the data versions of source_files).",
)

main_job = dg.define_asset_job(
    "main",
    selection=dg.AssetSelection.all() - dg.AssetSelection.assets(source_files.key),
    description="The full asset graph, one source partition per run.",
)
