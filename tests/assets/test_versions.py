"""Code versions carry the configuration each asset reads, and nothing else."""
import dagster as dg

from assets.versions import config_digest, describe_change, with_config_versions
from resources import DataStore, QualityThresholds, SamplingPlan
from resources.evaluation import EvaluationSettings
from resources.teacher import Teacher


def resources(**over):
    base = {
        "data_store": DataStore(root_uri="/data"),
        "sampling": SamplingPlan(),
        "quality": QualityThresholds(),
        "teacher": Teacher(backend="offline"),
        "evaluation": EvaluationSettings(),
    }
    return {**base, **over}


def test_a_setting_changes_only_the_assets_that_read_it():
    before = {a: config_digest(a, resources()) for a in ("raw_samples", "subsample", "validated", "benchmark_scores")}
    after = {a: config_digest(a, resources(evaluation=EvaluationSettings(sentence_tokens=7)))
             for a in before}
    assert after["benchmark_scores"] != before["benchmark_scores"]
    assert {a: after[a] for a in ("raw_samples", "subsample", "validated")} == \
        {a: before[a] for a in ("raw_samples", "subsample", "validated")}
    # the validity threshold is read by validated only, the quarantine limit by raw_samples only
    strict = resources(quality=QualityThresholds(min_validity_rate=0.99))
    assert config_digest("validated", strict) != before["validated"]
    assert config_digest("raw_samples", strict) == before["raw_samples"]


def test_the_teachers_endpoint_is_its_identity_and_its_key_is_never_read(monkeypatch):
    def digest(url: str, key: str) -> str:
        monkeypatch.setenv("OPENAI_BASE_URL", url)
        monkeypatch.setenv("OPENAI_API_KEY", key)
        teacher = Teacher(api_key=dg.EnvVar("OPENAI_API_KEY"), base_url=dg.EnvVar("OPENAI_BASE_URL"))
        return config_digest("annotations", resources(teacher=teacher))

    a = digest("http://vllm-a:8000/v1", "sk-one")
    assert digest("http://vllm-b:8000/v1", "sk-one") != a
    assert digest("http://vllm-a:8000/v1", "sk-two") == a
    # limits and spending caps change how fast and how much, not what the teacher answers
    limited = Teacher(api_key=dg.EnvVar("OPENAI_API_KEY"), base_url=dg.EnvVar("OPENAI_BASE_URL"),
                      requests_per_minute=5, max_spend_usd=1.0)
    assert config_digest("annotations", resources(teacher=limited)) == a


def test_code_versions_name_logic_and_configuration():
    @dg.asset(code_version="subsample-1")
    def subsample():
        ...

    (versioned,) = with_config_versions([subsample], resources())
    version = versioned.code_versions_by_key[dg.AssetKey("subsample")]
    assert version == f"subsample-1|cfg:{config_digest('subsample', resources())}"
    assert describe_change(version, version.replace("subsample-1", "subsample-2")) == "code changed"
    assert describe_change(version, "subsample-1|cfg:other") == "configuration changed"
