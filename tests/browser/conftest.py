"""Fixtures for the browser tests: a Dagster webserver on a throwaway instance, and a headless
Chromium page driven by Playwright.

The webserver runs `definitions.py` from the repository root (through workspace.yaml) with
- DAGSTER_HOME in a temporary folder whose dagster.yaml is the one `llavacot` writes for a local
  instance (no telemetry, no new-user pop-up, a run queue two runs wide, pools one step wide), and a
  dagster-daemon beside it that launches queued runs and carries out backfills, as `dagster dev` does;
- LLAVACOT_DATA_ROOT in a temporary folder, so the demo deployment writes the embedded sample and
  every output there and never touches ./data;
- any extra environment a test module sets in its module-level `UI_ENV` dict.

The browser is Debian's chromium (/usr/bin/chromium); Playwright's own browser download is not
reachable from these machines. Without it the tests are skipped on a laptop, and fail under CI
(the CI set-up, scripts/test.sh, installs it).
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
SERVER_START_TIMEOUT = 120.0  # seconds until /server_info answers and the code location has loaded


_LOCATIONS_QUERY = """
{ workspaceOrError { __typename
    ... on Workspace { locationEntries { name loadStatus
        locationOrLoadError { __typename ... on PythonError {
            message stack errorChain { error { message stack } } } } } }
    ... on PythonError { message stack } } }
"""


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def require_browser() -> None:
    """Skip without a browser on a laptop; under CI a missing browser is a failure."""
    problems = []
    if not CHROMIUM.exists():
        problems.append(f"{CHROMIUM} is absent (apt-get install chromium; scripts/test.sh does)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        problems.append("the playwright Python package is missing (pip install -e '.[test]')")
    if problems:
        reason = "; ".join(problems)
        if _in_ci():
            pytest.fail(f"browser test cannot run under CI: {reason}", pytrace=False)
        pytest.skip(reason)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class DagsterUI:
    base_url: str
    dagster_home: Path
    data_root: Path
    log_path: Path
    process: subprocess.Popen
    daemon: subprocess.Popen

    def log_tail(self, chars: int = 6000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no webserver log)"

    def graphql(self, query: str, timeout: float = 10.0) -> dict:
        req = urllib.request.Request(
            f"{self.base_url}/graphql", data=json.dumps({"query": query}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.load(resp)


def _wait_until_ready(ui: DagsterUI, timeout: float) -> None:
    """Poll /server_info, then the workspace, until the code location has loaded (bounded)."""
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while time.monotonic() < deadline:
        if ui.process.poll() is not None:
            pytest.fail(
                f"dagster-webserver exited with code {ui.process.returncode} before answering\n"
                f"--- webserver log ---\n{ui.log_tail()}", pytrace=False,
            )
        try:
            with urllib.request.urlopen(f"{ui.base_url}/server_info", timeout=5) as resp:
                json.load(resp)
            data = ui.graphql(_LOCATIONS_QUERY)["data"]["workspaceOrError"]
            if data["__typename"] != "Workspace":
                last = f"workspace error: {data.get('message')}"
            else:
                entries = data["locationEntries"]
                if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                    errors = [e for e in entries
                              if e["locationOrLoadError"]["__typename"] == "PythonError"]
                    if errors:
                        e = errors[0]
                        err = e["locationOrLoadError"]
                        chain = [err] + [link["error"] for link in err.get("errorChain") or []]
                        detail = "\n".join(
                            f"{c['message'].strip()}\n{''.join(c['stack'][-6:])}" for c in chain)
                        pytest.fail(
                            f"code location {e['name']!r} failed to load (definitions.py):\n"
                            f"{detail}", pytrace=False,
                        )
                    return
                last = f"locations: {[(e['name'], e['loadStatus']) for e in entries]}"
        except (OSError, ValueError, KeyError) as exc:  # not up yet (URLError is an OSError)
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(0.5)
    pytest.fail(
        f"dagster-webserver did not become ready within {timeout:.0f}s ({last})\n"
        f"--- webserver log ---\n{ui.log_tail()}", pytrace=False,
    )


def _stop(process: subprocess.Popen) -> None:
    """Terminate the webserver's whole process group (it spawns a code server and run workers)."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
    # Children (code server, run workers) may outlive the leader: make sure the group is gone.
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


@pytest.fixture(scope="module")
def dagster_ui(tmp_path_factory, request):
    """A dagster-webserver and a dagster-daemon for workspace.yaml on a temporary instance and data root."""
    from jobs.cli import LOCAL_INSTANCE

    require_browser()  # do not pay for a server start if the browser cannot run anyway
    base = tmp_path_factory.mktemp("dagster_ui")
    home = base / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(LOCAL_INSTANCE)
    data_root = base / "data"
    log_path = base / "webserver.log"
    port = _free_port()

    env = dict(os.environ)
    env.update({
        "DAGSTER_HOME": str(home),
        "LLAVACOT_DATA_ROOT": str(data_root),
        "LLAVACOT_DEPLOYMENT": "demo",
        "PYTHONUNBUFFERED": "1",
        **getattr(request.module, "UI_ENV", {}),
    })
    env.pop("OPENAI_API_KEY", None)
    cmd = [sys.executable, "-m", "dagster_webserver", "-w", "workspace.yaml",
           "-h", "127.0.0.1", "-p", str(port)]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            cmd, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,  # its own process group, for killpg
        )
        daemon = subprocess.Popen(
            [sys.executable, "-m", "dagster._daemon", "run", "-w", "workspace.yaml"], cwd=REPO_ROOT, env=env,
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
    ui = DagsterUI(f"http://127.0.0.1:{port}", home, data_root, log_path, process, daemon)
    try:
        _wait_until_ready(ui, SERVER_START_TIMEOUT)
        yield ui
    finally:
        _stop(daemon)
        _stop(process)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """When a browser test fails, screenshot its page (still open here) into its tmp_path and name
    the file in the failure report."""
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    pg = getattr(item, "funcargs", {}).get("page")
    tmp = getattr(item, "funcargs", {}).get("tmp_path")
    if pg is None or tmp is None:
        return
    shot = Path(tmp) / "failure.png"
    try:
        pg.screenshot(path=str(shot), full_page=True)
        report.sections.append(("browser", f"screenshot of {pg.url}: {shot}"))
    except Exception as exc:  # the page may be gone; the failure itself matters more
        report.sections.append(("browser", f"no screenshot ({exc})"))


@pytest.fixture
def page(tmp_path):
    """A headless Chromium page (a failing test leaves tmp_path/failure.png, see the hook above)."""
    require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 900})
            context.set_default_timeout(30_000)
            yield context.new_page()
        finally:
            browser.close()
