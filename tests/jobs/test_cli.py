"""The main command: every partition once, then nothing to do until something changes."""
import importlib
import re

import pytest


@pytest.fixture
def cli(tmp_path, monkeypatch):
    monkeypatch.setenv("LLAVACOT_DATA_ROOT", str(tmp_path / "data"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    import definitions

    importlib.reload(definitions)
    from jobs import cli as cli_module

    yield cli_module, tmp_path
    importlib.reload(definitions)


def test_main_command_runs_then_skips_then_reruns_what_changed(cli, capsys):
    cli_module, tmp_path = cli
    assert cli_module.main(["run", "--partition", "clevr", "--partition", "pisc"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"clevr\s+ok", out) and re.search(r"pisc\s+ok", out)
    assert "outputs under" in out and str(tmp_path / "data") in out
    assert (tmp_path / "data" / "validated" / "clevr" / "samples.parquet").exists()
    assert (tmp_path / "home" / "dagster.yaml").exists()

    assert cli_module.main(["run", "--partition", "clevr", "--partition", "pisc"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"clevr\s+up to date", out) and re.search(r"pisc\s+up to date", out)

    (tmp_path / "data" / "raw" / "pisc" / "relationship.json").touch()
    assert cli_module.main(["run", "--partition", "clevr", "--partition", "pisc"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"clevr\s+up to date", out)
    assert re.search(r"pisc\s+ok .*raw source folder changed", out)


def test_unknown_partition_is_a_clear_error(cli, capsys):
    cli_module, _ = cli
    assert cli_module.main(["run", "--partition", "nope"]) == 2
    assert "unknown partition" in capsys.readouterr().err
