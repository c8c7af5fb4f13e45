"""The teacher resource: prices from config and environment (a model the table does not know runs;
without any price nothing starts), the Batch API chosen for large partitions."""
import pyarrow.parquet as pq
import pytest

from pipeline.annotate.partition import annotate_partition
from pipeline.annotate.pricing import Price, UnknownPrice
from pipeline.storage import Root
from resources.teacher import Teacher
from tests.fakes.openai_server import FakeOpenAI
from tests.pipeline.annotate.conftest import write_toy_source

MODEL = "Qwen2.5-VL-72B-Instruct"  # a vLLM / SGLang model: in no price table


@pytest.fixture
def fake():
    with FakeOpenAI(retry_after=0.05) as server:
        yield server


def annotate(teacher: Teacher, tmp_path, n_rows=8):
    src, sub = write_toy_source(tmp_path, n_rows)

    def load(rel):
        with src.open(rel, "rb") as f:
            return f.read()

    annotator, cleanup = teacher.build(tmp_path / "teacher", load, log=lambda *_: None)
    try:
        summary = annotate_partition("toy", sub, src, Root(str(tmp_path / "out")), annotator, log=lambda *_: None)
    finally:
        cleanup()
    return summary, pq.read_table(summary.annotations_path).to_pylist(), annotator


def test_an_unknown_teacher_model_runs_with_a_configured_price(fake, tmp_path):
    teacher = Teacher(api_key="sk-x", base_url=fake.base_url, model=MODEL, prices={MODEL: [0.5, 1.5]})
    summary, rows, ann = annotate(teacher, tmp_path)
    assert {r["status"] for r in rows} == {"ok"} and {r["teacher_model"] for r in rows} == {MODEL}
    usage = fake.stats()["usage"]
    assert summary.stats["spent_usd"] == pytest.approx(
        (usage["prompt_tokens"] * 0.5 + usage["completion_tokens"] * 1.5) / 1e6, abs=1e-6)


def test_an_unknown_teacher_model_runs_with_a_price_from_the_environment(fake, tmp_path, monkeypatch):
    monkeypatch.setenv("LLAVACOT_TEACHER_PRICE_IN", "0")
    monkeypatch.setenv("LLAVACOT_TEACHER_PRICE_OUT", "0")  # a self-hosted server
    monkeypatch.setenv("LLAVACOT_TEACHER_PRICES", '{"judge-snapshot-2099": [0.1, 0.4, 0.05]}')
    teacher = Teacher(api_key="sk-x", base_url=fake.base_url, model=MODEL, judge_model="judge-snapshot-2099",
                      max_spend_usd=1.0)
    assert teacher.price_table().price("judge-snapshot-2099") == Price(0.1, 0.4, 0.05)
    summary, rows, _ = annotate(teacher, tmp_path)
    assert {r["status"] for r in rows} == {"ok"} and summary.stats["spent_usd"] == 0


def test_without_any_price_the_run_refuses_to_start_and_sends_nothing(fake, tmp_path):
    for i, teacher in enumerate([
            Teacher(api_key="sk-x", base_url=fake.base_url, model=MODEL, max_spend_usd=100.0),
            Teacher(api_key="sk-x", base_url=fake.base_url, judge_model="gpt-4o-mini-2099-12-31")]):
        with pytest.raises(UnknownPrice, match="nothing was sent.*LLAVACOT_TEACHER_PRICE_IN"):
            annotate(teacher, tmp_path / str(i))
    assert fake.stats()["received"] == 0


def test_auto_mode_sends_a_large_partition_through_the_batch_api(fake, tmp_path, monkeypatch):
    # auto picks the Batch API on api.openai.com only: point the default endpoint at the fake
    monkeypatch.setenv("OPENAI_BASE_URL", fake.base_url)
    teacher = Teacher(api_key="sk-x", batch_min_turns=10, batch_poll_interval_s=0.05)
    summary, rows, _ = annotate(teacher, tmp_path, n_rows=8)  # 10 turns
    assert summary.batch and {r["status"] for r in rows} == {"ok"}
    assert fake.stats()["batch_lines_answered"] == 10 and fake.stats()["requests"] == 0
    summary, rows, _ = annotate(Teacher(api_key="sk-x", batch_min_turns=11, batch_poll_interval_s=0.05),
                                tmp_path / "small", n_rows=8)
    assert not summary.batch and fake.stats()["requests"] == 10  # below the threshold: online
