""""Materialize all" in the UI on a fresh instance: one backfill that materialises every asset of the
graph, every source partition and every evaluation asset included, each after what it reads.

The evaluation matrix is cut to two benchmarks under two strategies (LLAVACOT_BENCHMARKS /
LLAVACOT_STRATEGIES) so the test stays short; the graph is otherwise the demo deployment's.
"""
from __future__ import annotations

import re
import time

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

UI_ENV = {"LLAVACOT_BENCHMARKS": "AI2D_TEST,MMVet", "LLAVACOT_STRATEGIES": "direct,stage_beam_2"}
UI_TIMEOUT_MS = 60_000
BACKFILL_TIMEOUT_S = 1500  # the whole graph on two shared CPU cores, five backfill steps


def _dismiss_popups(page) -> None:
    page.add_locator_handler(page.get_by_role("button", name=re.compile(r"^Skip$")), lambda skip: skip.click())


def _wait_for_backfill(ui, backfill_id: str) -> str:
    """Poll the instance until the backfill has ended; its final status."""
    import dagster as dg

    deadline = time.monotonic() + BACKFILL_TIMEOUT_S
    instance = dg.DagsterInstance.from_config(str(ui.dagster_home))
    try:
        while time.monotonic() < deadline:
            backfill = instance.get_backfill(backfill_id)
            if backfill.status.value not in ("REQUESTED", "CANCELING"):
                return backfill.status.value
            time.sleep(5)
    finally:
        instance.dispose()
    pytest.fail(f"backfill {backfill_id} still running after {BACKFILL_TIMEOUT_S}s\n{ui.log_tail()}")


@pytest.mark.timeout(BACKFILL_TIMEOUT_S + 300)
def test_materialize_all_materialises_every_asset_in_dependency_order(dagster_ui, page):
    from playwright.sync_api import expect

    _dismiss_popups(page)
    page.goto(f"{dagster_ui.base_url}/asset-groups")
    button = page.get_by_role("button", name=re.compile(r"Materialize all"))
    expect(button).to_be_visible(timeout=UI_TIMEOUT_MS)
    button.click()

    # partitioned and unpartitioned assets together: the dialog launches one backfill from the
    # source partitions; "All" selects the ten of them
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_text("Partition selection")).to_be_visible(timeout=UI_TIMEOUT_MS)
    dialog.get_by_role("button", name="All", exact=True).click()
    launch = dialog.get_by_role("button", name="Launch backfill")
    expect(launch).to_be_enabled(timeout=UI_TIMEOUT_MS)
    launch.click()

    # the toast links to the backfill's page
    view = page.get_by_role("region", name=re.compile("Notifications")).get_by_role("link", name="View")
    expect(view).to_be_visible(timeout=UI_TIMEOUT_MS)
    backfill_id = view.get_attribute("href").rstrip("/").rsplit("/", 1)[-1]
    status = _wait_for_backfill(dagster_ui, backfill_id)

    # the backfill's page: succeeded, one row per asset, each 100% completed
    graph = _graph()
    page.goto(f"{dagster_ui.base_url}/runs/b/{backfill_id}")
    expect(page.get_by_text("Succeeded", exact=True).first).to_be_visible(timeout=UI_TIMEOUT_MS)
    for key in graph.materializable_asset_keys:
        expect(page.get_by_text(" / ".join(key.path), exact=True).first).to_be_visible(timeout=UI_TIMEOUT_MS)
    expect(page.get_by_text("100% completed")).to_have_count(len(graph.materializable_asset_keys))
    assert status == "COMPLETED_SUCCESS", f"backfill ended {status}\n{dagster_ui.log_tail()}"
    _assert_everything_materialised_in_order(dagster_ui)


def _graph():
    """The graph the server shows (the UI_ENV evaluation matrix)."""
    import definitions

    matrix = tuple(tuple(UI_ENV[var].split(",")) for var in ("LLAVACOT_BENCHMARKS", "LLAVACOT_STRATEGIES"))
    return definitions.build_defs(definitions.RESOURCES, matrix).resolve_asset_graph()


def _assert_everything_materialised_in_order(ui) -> None:
    """Every asset (every partition) of the graph has one materialisation, later than those of
    everything it reads."""
    import dagster as dg

    graph = _graph()
    instance = dg.DagsterInstance.from_config(str(ui.dagster_home))
    try:
        when: dict = {}
        for key in graph.materializable_asset_keys:
            node = graph.get(key)
            parts = node.partitions_def.get_partition_keys() if node.partitions_def else [None]
            for part in parts:
                flt = dg.AssetRecordsFilter(asset_key=key, asset_partitions=[part] if part else None)
                records = instance.fetch_materializations(flt, limit=2).records
                assert len(records) == 1, f"{key.to_user_string()}[{part}]: {len(records)} materialisations"
                when[(key, part)] = records[0].timestamp
        assert len([k for k, _ in when if k.path[0] == "benchmark_scores"]) == 4
        for (key, part), t in when.items():
            for parent in graph.get(key).parent_keys:
                for (pk, pp), pt in when.items():
                    if pk == parent and (part is None or pp in (part, None)):
                        assert pt < t, f"{key.to_user_string()}[{part}] before {parent.to_user_string()}[{pp}]"
    finally:
        instance.dispose()
