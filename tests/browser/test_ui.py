"""The data engineer's path through the Dagster UI, in a real (headless) browser.

Start the webserver on a throwaway instance (conftest.py), open the asset graph, see the source
assets, open raw_samples, launch one partition through the Materialize dialog, and wait until the
UI reports the run succeeded; then check the instance on disk agrees.
"""
from __future__ import annotations

import re
import time

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PARTITION = "clevr"
SOURCE_ASSETS = ("source_files", "raw_samples", "subsample")
RUN_TIMEOUT_MS = 180_000  # the launched run must finish within this
UI_TIMEOUT_MS = 60_000  # first paint of a page (the code location may still be warming up)


def _dismiss_popups(page) -> None:
    """The community/newsletter pop-up is off in dagster.yaml (nux); should it appear anyway
    (another Dagster version), skip it whenever it gets in the way."""
    page.add_locator_handler(
        page.get_by_role("button", name=re.compile(r"^Skip$")), lambda skip: skip.click()
    )


@pytest.mark.timeout(300)
def test_materialize_one_partition_from_the_ui(dagster_ui, page):
    from playwright.sync_api import expect

    _dismiss_popups(page)
    base = dagster_ui.base_url

    # 1. The graph of the "sources" asset group (code location "definitions", from workspace.yaml)
    #    shows the three source assets.
    page.goto(f"{base}/locations/definitions/asset-groups/sources")
    graph = page.locator("svg")
    for name in SOURCE_ASSETS:
        expect(graph.get_by_text(name, exact=True).first).to_be_visible(timeout=UI_TIMEOUT_MS)

    # 2. Open raw_samples: select its node, then follow the side panel to its catalog page.
    graph.get_by_text("raw_samples", exact=True).first.click()
    page.get_by_role("link", name=re.compile(r"View in Asset Catalog")).click()
    page.wait_for_url(re.compile(r"/assets/raw_samples(\?|$)"))
    expect(page.get_by_role("tab", name="Partitions")).to_be_visible(timeout=UI_TIMEOUT_MS)

    # 3. Materialize -> partition dialog -> exactly one partition -> launch.
    page.get_by_role("button", name=re.compile(r"Materialize")).first.click()
    dialog = page.get_by_role("dialog").filter(has_text="Launch runs to materialize raw_samples")
    expect(dialog).to_be_visible()
    # The dialog loads the partition set and preselects something (none, or all once "Custom" is
    # clicked, in Dagster 1.13): wait for it, then make the selection exactly {PARTITION}.
    expect(dialog.get_by_role("progressbar")).to_have_count(0, timeout=UI_TIMEOUT_MS)
    expect(dialog.get_by_text(re.compile(r"^\d+ partitions?$"))).to_be_visible()
    dialog.get_by_role("button", name="Custom").click()
    dialog.get_by_role("img", name="expand_more").click()  # the partition drop-down
    page.get_by_role("textbox", name="Filter partitions").wait_for()
    items = page.get_by_role("menuitem").filter(has=page.get_by_role("checkbox"))
    # (a menu item's accessible name repeats the key: one copy is a hidden text-measuring twin)
    wanted = page.get_by_role("menuitem", name=re.compile(rf"^{PARTITION}(\s+{PARTITION})?$"))
    expect(wanted).to_have_count(1)
    for item in items.all():
        words = set(item.inner_text().split())  # the key, possibly twice (see above)
        if "Select" in words:  # "Select all (N)"
            continue
        if item.get_by_role("checkbox").is_checked() != (words == {PARTITION}):
            item.click()
    dialog.get_by_text("Launch runs to materialize raw_samples").click()  # close the drop-down
    expect(dialog.get_by_text("1 partition", exact=True)).to_be_visible()
    launch = dialog.get_by_role("button", name="Launch 1 run")
    expect(launch).to_be_enabled()
    launch.click()

    # 4. The toast names the run; follow it to the run page and wait for the outcome.
    toast = page.get_by_role("region", name=re.compile("Notifications"))
    view = toast.get_by_role("link", name="View")
    expect(view).to_be_visible(timeout=UI_TIMEOUT_MS)
    run_id = view.get_attribute("href").rstrip("/").rsplit("/", 1)[-1]
    view.click()
    page.wait_for_url(re.compile(rf"/runs/{run_id}"))
    expect(page.get_by_text(f"partition: {PARTITION}", exact=True).first).to_be_visible()

    started = time.monotonic()
    outcome = page.get_by_text(re.compile(r"^(Success|Failure|Canceled)$"))
    expect(outcome.first).to_be_visible(timeout=RUN_TIMEOUT_MS)
    status = outcome.first.inner_text().strip()
    assert status == "Success", (
        f"run {run_id} for partition {PARTITION!r} ended {status!r} in the UI after "
        f"{time.monotonic() - started:.0f}s; its event log is at {page.url}\n"
        f"--- webserver log ---\n{dagster_ui.log_tail()}"
    )

    # 5. The instance on disk agrees: that run, that partition, succeeded and materialised it.
    import dagster as dg
    from dagster import DagsterRunStatus

    instance = dg.DagsterInstance.from_config(str(dagster_ui.dagster_home))
    try:
        run = instance.get_run_by_id(run_id)
        assert run is not None, f"run {run_id} is not in {dagster_ui.dagster_home}"
        assert run.status == DagsterRunStatus.SUCCESS, run.status
        assert run.tags.get("dagster/partition") == PARTITION, run.tags
        succeeded = instance.get_runs(filters=dg.RunsFilter(
            statuses=[DagsterRunStatus.SUCCESS], tags={"dagster/partition": PARTITION}))
        assert [r.run_id for r in succeeded] == [run_id]
        event = instance.get_latest_materialization_event(dg.AssetKey("raw_samples"))
        assert event is not None and event.run_id == run_id
        assert event.asset_materialization.partition == PARTITION
        assert instance.get_materialized_partitions(dg.AssetKey("raw_samples")) == {PARTITION}
    finally:
        instance.dispose()

    # ... and the demo deployment wrote the sample and the output under the temporary data root.
    assert (dagster_ui.data_root / "raw" / PARTITION).is_dir(), "no embedded sample written"
    out = dagster_ui.data_root / "raw_samples" / PARTITION
    assert out.is_dir() and any(out.iterdir()), f"nothing written to {out}"
