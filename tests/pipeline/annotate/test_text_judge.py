from pipeline.annotate.text_judge import text_judge
from tests.pipeline.annotate.conftest import make_annotator


def test_the_teacher_as_a_cached_text_callable(fake, tmp_path, toy_source):
    source_root, _ = toy_source
    fake.configure(responder=lambda body: "score: 0.8", rate_limit=0.3, seed=3)
    ann = make_annotator(fake, tmp_path, source_root)
    judge = text_judge(ann)
    try:
        assert judge("Grade this answer.") == "score: 0.8"  # through 429s and retries
        received = fake.stats()["received"]
        assert judge("Grade this answer.") == "score: 0.8"
        assert fake.stats()["received"] == received  # the second time from the cache
        assert ann.stats.cache_hits == 1
    finally:
        judge.close()
        ann.cache.close()
