import re
from pathlib import Path

import dagster as dg

REPO = Path(__file__).resolve().parents[1]


def test_definitions_load_and_the_stage_jobs_cover_the_graph_in_order():
    from definitions import defs
    from jobs.main import STAGES

    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    covered = [k for s in STAGES for k in sorted(s.selection.resolve(graph))]
    assert set(covered) == set(graph.materializable_asset_keys) and len(covered) == len(set(covered))
    position = {k: i for i, s in enumerate(STAGES) for k in s.selection.resolve(graph)}
    for key in covered:  # no stage reads a later one
        assert all(position[p] <= position[key] for p in graph.get(key).parent_keys if p in position)
    assert len([k for k in covered if k.path[0] == "benchmark_scores"]) == 30
    assert defs.resolve_job_def("observe_sources")


def test_every_asset_has_an_automation_condition_and_every_blocking_check_is_per_partition():
    from definitions import defs

    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        assert graph.get(key).automation_condition is not None, key
    for check in graph.asset_check_keys:
        spec = graph.get_check_spec(check)
        assert spec.blocking and spec.partitions_def == graph.get(check.asset_key).partitions_def, check


def test_production_deployment_takes_roots_from_the_environment(monkeypatch):
    import importlib

    import definitions

    monkeypatch.setenv("LLAVACOT_DEPLOYMENT", "production")
    monkeypatch.setenv("LLAVACOT_DATA_ROOT", "/tmp/prod-data")
    monkeypatch.setenv("LLAVACOT_RAW_ROOT", "/tmp/prod-raw")
    try:
        prod = importlib.reload(definitions)
        store = prod.defs.resources["data_store"]
        assert store.embedded_sample is False
    finally:
        monkeypatch.delenv("LLAVACOT_DEPLOYMENT")
        importlib.reload(definitions)


def test_the_library_never_imports_dagster():
    offenders = [
        str(p.relative_to(REPO))
        for p in (REPO / "pipeline").rglob("*.py")
        if re.search(r"dagster", p.read_text(), re.IGNORECASE)
    ]
    assert offenders == []
