"""deploy/: the team instance, workspace and Helm values load, and say the same thing."""
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
PG_ENV = {"DAGSTER_PG_HOST": "db", "DAGSTER_PG_PORT": "5432", "DAGSTER_PG_USER": "dagster",
          "DAGSTER_PG_PASSWORD": "secret", "DAGSTER_PG_DB": "dagster"}


def test_the_instance_config_is_valid_for_this_dagster(tmp_path, monkeypatch):
    import shutil

    from dagster._core.instance.config import dagster_instance_config

    for key, value in PG_ENV.items():
        monkeypatch.setenv(key, value)
    shutil.copy(DEPLOY / "dagster.yaml", tmp_path / "dagster.yaml")
    config, _ = dagster_instance_config(str(tmp_path))  # Dagster's own schema: raises when invalid
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert config["concurrency"]["pools"] == {"default_limit": 1, "granularity": "op"}


def test_the_workspace_names_the_location_the_command_uses():
    from dagster._core.workspace.config_schema import ensure_workspace_config

    from jobs.runs import LOCATION

    config = ensure_workspace_config(yaml.safe_load((DEPLOY / "workspace.yaml").read_text()), str(DEPLOY))
    assert [e["grpc_server"]["location_name"] for e in config["load_from"]] == [LOCATION]


def test_the_helm_values_match_the_instance_config():
    from jobs.runs import LOCATION

    values = yaml.safe_load((DEPLOY / "values.yaml").read_text())
    instance = yaml.safe_load((DEPLOY / "dagster.yaml").read_text())
    (code,) = values["dagster-user-deployments"]["deployments"]
    assert code["name"] == LOCATION
    args = code["dagsterApiGrpcArgs"]
    assert args[args.index("--module-name") + 1] == "definitions"
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["dagsterDaemon"]["runCoordinator"]["type"] == "QueuedRunCoordinator"
    pools, runs = instance["concurrency"]["pools"], instance["concurrency"]["runs"]
    assert values["concurrency"]["enabled"]
    assert values["concurrency"]["pools"] == {"defaultLimit": pools["default_limit"], "granularity": pools["granularity"]}
    assert values["concurrency"]["runs"]["maxConcurrentRuns"] == runs["max_concurrent_runs"]
    assert values["postgresql"]["postgresqlScheme"] == instance["storage"]["postgres"]["postgres_db"]["scheme"]
