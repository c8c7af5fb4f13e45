"""Is a partition already up to date? Then the main command does not launch a run for it.

Dagster records, for every materialisation, the code version of the asset and the data version of
each input. A partition is up to date when every asset of the job has a materialisation whose code
version is the current one, whose inputs' data versions are the upstream's latest, whose raw folder
fingerprint is unchanged, and whose run used the same resource configuration. Anything else
(never materialised, new code, new upstream data, new config) runs.
"""
from __future__ import annotations

import hashlib
import json

import dagster as dg

CONFIG_TAG = "llavacot/config"


def config_fingerprint(defs: dg.Definitions) -> str:
    """A hash of every resource's configuration (EnvVar fields hash as their names, never values)."""
    dump = {}
    for name, res in sorted(defs.resources.items()):
        if isinstance(res, dg.ConfigurableResource):
            dump[name] = res.model_dump()
    text = json.dumps(dump, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def stale_reason(instance: dg.DagsterInstance, defs: dg.Definitions, job_name: str, partition: str | None,
                 config: str, fingerprint: str | None = None) -> str | None:
    """None when up to date, else why not (for the user)."""
    graph = defs.resolve_asset_graph()
    job = defs.resolve_job_def(job_name)
    keys = [k for k in graph.toposorted_asset_keys if k in job.asset_layer.executable_asset_keys]
    latest: dict[dg.AssetKey, dg.EventLogRecord] = {}
    for key in keys:
        flt = dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition] if partition else None)
        records = instance.fetch_materializations(flt, limit=1).records
        if not records:
            return f"{key.to_user_string()} never materialised"
        record = records[0]
        m = record.asset_materialization
        if m.tags.get("dagster/code_version") != graph.get(key).code_version:
            return f"{key.to_user_string()}: code changed"
        run = instance.get_run_by_id(record.run_id)
        if run is None or run.tags.get(CONFIG_TAG) != config:
            return f"{key.to_user_string()}: resource configuration changed"
        for parent in graph.get(key).parent_keys:
            if parent not in latest and graph.get(parent).is_materializable:
                # an upstream outside this job (e.g. every partition of `validated` above the
                # whole-dataset job): stale if any of it was materialised after this asset
                newest = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=parent), limit=1).records
                if newest and newest[0].storage_id > record.storage_id:
                    return f"{key.to_user_string()}: {parent.to_user_string()} has newer data"
            if parent in latest:
                # Dagster records which upstream materialisation (its event storage id) each
                # input came from; for partitioned inputs the recorded data version is a combined
                # hash, so the pointer is what can be compared.
                want = str(latest[parent].storage_id)
                got = m.tags.get(f"dagster/input_event_pointer/{parent.to_user_string()}")
                if want != got:
                    return f"{key.to_user_string()}: {parent.to_user_string()} has newer data"
        if fingerprint is not None and "source_fingerprint" in m.metadata:
            if m.metadata["source_fingerprint"].value != fingerprint:
                return "the raw source folder changed"
        latest[key] = record
    return None
