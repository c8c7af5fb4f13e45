import re
from pathlib import Path

import dagster as dg

REPO = Path(__file__).resolve().parents[1]


def test_definitions_load_and_the_main_job_covers_the_graph():
    from definitions import defs

    dg.Definitions.validate_loadable(defs)
    main = defs.resolve_job_def("main")
    keys = {k.to_user_string() for k in main.asset_layer.executable_asset_keys}
    assert {"raw_samples", "subsample"} <= keys
    graph = defs.resolve_asset_graph()
    assert {k.to_user_string() for k in graph.get_all_asset_keys()} >= {"source_files", "raw_samples", "subsample"}
    assert defs.resolve_job_def("observe_sources")


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
