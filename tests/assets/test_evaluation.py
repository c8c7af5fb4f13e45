"""benchmark_scores and benchmark_report in-process, on the tiny model, with lineage recorded."""
import dagster as dg

from assets.evaluation import benchmark_report, benchmark_scores, score_key
from pipeline.demo.tiny_model import write_tiny_model
from resources import DataStore
from resources.evaluation import EvaluationSettings
from resources.teacher import Teacher

BUDGETS = {"summary": 6, "caption": 6, "reasoning": 8, "conclusion": 4}


def test_scores_and_report_with_lineage(tmp_path):
    model = write_tiny_model(str(tmp_path / "tiny"))
    resources = {
        "data_store": DataStore(root_uri=str(tmp_path / "data")),
        "evaluation": EvaluationSettings(write_demo_benchmarks=True, stage_budgets=BUDGETS, sentence_tokens=6),
        "teacher": Teacher(backend="offline", cache_dir=str(tmp_path / "teacher")),
    }
    with dg.instance_for_test() as instance:
        # the upstream records the score descends from (normally written by finetuned_model and cot_dataset)
        instance.report_runless_asset_event(dg.AssetMaterialization(
            "finetuned_model", metadata={"export": dg.MetadataValue.path(str(model)),
                                         "dataset_manifest": dg.MetadataValue.path("/data/manifest.json")},
            tags={"dagster/data_version": "weights-v1"}))
        instance.report_runless_asset_event(dg.AssetMaterialization(
            "cot_dataset", metadata={"teacher_models": "offline-template", "prompt_versions": "v1"},
            tags={"dagster/data_version": "dataset-v1"}))
        results = {}
        for key in ("direct", "stage_beam_2"):
            results[key] = dg.materialize([benchmark_scores], selection=[score_key("AI2D_TEST", key)],
                                          instance=instance, resources=resources)
            assert results[key].success
        (m,) = results["stage_beam_2"].asset_materializations_for_node("benchmark_scores")
        assert 0.0 <= m.metadata["score"].value <= 100.0
        assert m.metadata["n_items"].value > 0 and m.metadata["missing_predictions"].value == 0
        assert m.metadata["predicted_this_run"].value == m.metadata["n_items"].value
        lineage = m.metadata["lineage"].value
        assert lineage["model_version"] == "weights-v1" and lineage["teacher_models"] == "offline-template"
        assert lineage["prompt_versions"] == "v1" and lineage["dataset_version"] == "dataset-v1"
        # a second materialisation resumes from the cached predictions
        again = dg.materialize([benchmark_scores], selection=[score_key("AI2D_TEST", "stage_beam_2")],
                               instance=instance, resources=resources)
        (m2,) = again.asset_materializations_for_node("benchmark_scores")
        assert m2.metadata["predicted_this_run"].value == 0
        assert m2.metadata["score"].value == m.metadata["score"].value
        report = dg.materialize([benchmark_scores, benchmark_report], selection=[benchmark_report],
                                instance=instance, resources=resources)
        (r,) = report.asset_materializations_for_node("benchmark_report")
        table = r.metadata["table"].value
        assert "| direct |" in table and "| stage_beam_2 |" in table and "AI2D_TEST" in table
        assert r.metadata["score_vs_beam"].value.startswith("![score vs beam](data:image/png;base64,")
    assert (tmp_path / "data" / "benchmark_report" / "score_vs_beam.png").stat().st_size > 1000
