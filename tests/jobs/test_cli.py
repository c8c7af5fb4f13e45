"""The main command against Dagster's own records: what runs, what is skipped and why.

One module fixture builds the whole graph once (the embedded sample, the tiny model, a 1 x 2
evaluation matrix; a short fine-tuning and short answers, as these tests are about what runs, not
what is learned) and keeps a copy; each test starts from that copy, at the same paths (the data
root is part of every asset's configuration), and changes one thing.
"""
import importlib
import re
import shutil

import dagster as dg
import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.slow

BENCHMARKS, STRATEGIES = "AI2D_TEST", "direct,stage_beam_2"
LATER_STAGES = ("cot_dataset", "finetuned_model", "benchmark_scores/AI2D_TEST/direct", "benchmark_report")


def _short(definitions) -> None:
    """The demo's graph with a 10-step fine-tuning and short stage budgets."""
    res = definitions.RESOURCES
    res["training"] = type(res["training"])(**{**res["training"].model_dump(), "max_steps": 10, "save_every": 10})
    budgets = {"summary": 8, "caption": 8, "reasoning": 8, "conclusion": 4}
    res["evaluation"] = type(res["evaluation"])(**{**res["evaluation"].model_dump(), "stage_budgets": budgets})
    definitions.defs = definitions.build_defs(res)


def _env(monkeypatch, work):
    monkeypatch.setenv("LLAVACOT_DATA_ROOT", str(work / "data"))
    monkeypatch.setenv("DAGSTER_HOME", str(work / "home"))
    monkeypatch.setenv("LLAVACOT_BENCHMARKS", BENCHMARKS)
    monkeypatch.setenv("LLAVACOT_STRATEGIES", STRATEGIES)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    base = tmp_path_factory.mktemp("cli")
    work, snapshot = base / "work", base / "snapshot"
    with pytest.MonkeyPatch.context() as mp:
        _env(mp, work)
        import definitions

        importlib.reload(definitions)
        _short(definitions)
        from jobs import cli

        assert cli.main(["run"]) == 0, "the first run of the whole graph failed"
    importlib.reload(definitions)  # the environment as it was
    shutil.copytree(work, snapshot)
    yield work, snapshot


@pytest.fixture
def cli(built, monkeypatch):
    work, snapshot = built
    shutil.rmtree(work)
    shutil.copytree(snapshot, work)
    _env(monkeypatch, work)
    import definitions

    importlib.reload(definitions)
    _short(definitions)
    from jobs import cli as cli_module

    instance = dg.DagsterInstance.from_config(str(work / "home"))
    yield cli_module, definitions, instance, work
    instance.dispose()
    monkeypatch.undo()
    importlib.reload(definitions)


def _latest(instance, key, partition=None):
    flt = dg.AssetRecordsFilter(asset_key=dg.AssetKey.from_user_string(key),
                                asset_partitions=[partition] if partition else None)
    records = instance.fetch_materializations(flt, limit=1).records
    return records[0].storage_id if records else None


def _stale(definitions, instance, key, partition=None):
    from jobs.plan import Records

    return Records(instance, definitions.defs.resolve_asset_graph()).stale.get_status(
        dg.AssetKey.from_user_string(key), partition).value


def test_a_second_run_runs_nothing(cli, capsys):
    cli_module, _, instance, _ = cli
    runs_before = len(instance.get_run_ids())
    assert cli_module.main(["run"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"sources\s+clevr\s+up to date", out)
    for name in LATER_STAGES[:2] + ("2 assets", "benchmark_report"):
        assert re.search(rf"{re.escape(name)}\s+up to date", out), name
    assert len(instance.get_run_ids()) == runs_before


def test_touching_a_raw_file_reruns_that_source_and_nothing_after_it(cli, capsys):
    """Fault 2: a new fingerprint with the same content re-runs the source; its data versions are
    unchanged, so the dataset, the model and the evaluation stay as they are."""
    cli_module, definitions, instance, work = cli
    before = {k: _latest(instance, k) for k in LATER_STAGES}
    (work / "data" / "raw" / "pisc" / "relationship.json").touch()
    assert cli_module.main(["run"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"observe\s+source_files\s+ok .*pisc", out)
    assert re.search(r"sources\s+pisc\s+ok .*raw_samples: the raw folder changed", out)
    assert re.search(r"sources\s+clevr\s+up to date", out)
    assert re.search(r"cot_dataset\s+up to date", out) and re.search(r"finetuned_model\s+up to date", out)
    assert {k: _latest(instance, k) for k in LATER_STAGES} == before
    assert all(_stale(definitions, instance, k) == "FRESH" for k in LATER_STAGES)


def test_runs_launched_elsewhere_count_as_done(cli, capsys):
    """Fault 3: a run launched from the UI, a schedule or a sensor (no tag of this command)."""
    cli_module, definitions, instance, _ = cli
    job = definitions.defs.resolve_job_def("sources")
    assert job.execute_in_process(partition_key="clevr", instance=instance).success
    assert cli_module.main(["run"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"sources\s+clevr\s+up to date", out)
    assert re.search(r"cot_dataset\s+up to date", out)


def test_a_setting_reruns_only_the_assets_that_read_it(cli, capsys):
    """Fault 4: an evaluation setting leaves sources, dataset and training alone."""
    cli_module, definitions, instance, _ = cli
    from resources.evaluation import EvaluationSettings

    before = {k: _latest(instance, k) for k in ("cot_dataset", "finetuned_model")}
    raw_before = _latest(instance, "raw_samples", "clevr")
    old = definitions.RESOURCES["evaluation"]
    changed = EvaluationSettings(**{**old.model_dump(), "sentence_tokens": old.sentence_tokens + 1})
    definitions.defs = definitions.build_defs({**definitions.RESOURCES, "evaluation": changed})
    assert cli_module.main(["run"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"sources\s+clevr\s+up to date", out)
    assert re.search(r"evaluation\s+2 assets\s+ok .*configuration changed", out)
    assert {k: _latest(instance, k) for k in before} == before
    assert _latest(instance, "raw_samples", "clevr") == raw_before


def test_a_failed_blocking_check_stops_everything_after_it_run_after_run(cli, capsys):
    """Fault 1: min_validity_rate above 1. Every run exits non-zero, prints the check's own
    description, publishes nothing, and runs nothing downstream; the previous good output stays."""
    cli_module, definitions, instance, work = cli
    from resources import QualityThresholds

    published = (work / "data" / "validated" / "clevr" / "samples.parquet").read_bytes()
    before = {k: _latest(instance, k) for k in LATER_STAGES}
    validated_before = _latest(instance, "validated", "clevr")
    strict = QualityThresholds(**{**definitions.RESOURCES["quality"].model_dump(), "min_validity_rate": 1.01})
    definitions.defs = definitions.build_defs({**definitions.RESOURCES, "quality": strict})
    for attempt in range(2):
        assert cli_module.main(["run"]) == 1, attempt
        captured = capsys.readouterr()
        assert re.search(r"sources\s+clevr\s+FAILED", captured.out)
        assert re.search(r"check validity_rate of validated\[clevr\] failed: \d+ of \d+ turns valid .*limit 101%", captured.err)
        assert "not published: the previous output of this partition stays in place" in captured.err
        assert re.search(r"cot_dataset\s+NOT RUN", captured.out)
        assert {k: _latest(instance, k) for k in LATER_STAGES} == before
    assert (work / "data" / "validated" / "clevr" / "samples.parquet").read_bytes() == published
    assert _latest(instance, "validated", "clevr") == validated_before
    assert pq.read_table(work / "data" / "validated" / ".rejected" / "clevr" / "samples.parquet").num_rows > 0


def test_dry_run_prints_the_plan_and_runs_nothing(cli, capsys):
    cli_module, _, instance, work = cli
    runs_before = len(instance.get_run_ids())
    (work / "data" / "raw" / "clevr" / "extra.txt").write_text("new file")
    assert cli_module.main(["run", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"observe\s+source_files\s+would observe .*clevr", out)
    assert re.search(r"sources\s+pisc\s+up to date", out)
    assert len(instance.get_run_ids()) == runs_before


def test_select_runs_one_stage(cli, capsys):
    cli_module, _, instance, _ = cli
    before = _latest(instance, "cot_dataset")
    assert cli_module.main(["run", "--select", "report", "--force"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"report\s+benchmark_report\s+ok .*forced", out)
    assert not re.search(r"^\s+(observe|sources|dataset|training|evaluation)\s", out, re.M)
    assert _latest(instance, "cot_dataset") == before
    with pytest.raises(SystemExit, match="names no asset"):
        cli_module.main(["run", "--select", "group:nonexistent"])


def test_the_command_runs_show_on_their_job_pages(cli):
    """The UI's job page lists the runs of that job carrying the code location's label."""
    _, _, instance, _ = cli
    for job in ("observe_sources", "sources", "dataset", "training", "evaluation", "report"):
        runs = instance.get_runs(dg.RunsFilter(job_name=job, tags={".dagster/repository": "__repository__@definitions"}))
        assert runs, job
        assert all(r.tags.get("llavacot/command") == "llavacot run" for r in runs)


def test_version(capsys):
    from jobs import cli

    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0
    assert re.match(r"llavacot \S+ \(dagster 1\.\d+", capsys.readouterr().out)


def test_unknown_partition_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("LLAVACOT_DATA_ROOT", str(tmp_path / "data"))
    from jobs import cli

    assert cli.main(["run", "--partition", "nope"]) == 2
    assert "unknown partition" in capsys.readouterr().err
