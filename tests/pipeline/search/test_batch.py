"""Several questions at once: the same answers as one by one, in fewer, larger forward calls; a
failing question fails alone."""
import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.slow

from pipeline.search import SearchConfig, run  # noqa: E402
from pipeline.search.batch import run_many  # noqa: E402
from pipeline.search.core import GenerationCore  # noqa: E402

BUDGETS = {"summary": 4, "caption": 4, "reasoning": 5, "conclusion": 3}


@pytest.mark.parametrize("strategy,beam", [("direct", 1), ("stage_beam", 2)])
def test_batched_questions_answer_as_one_by_one_with_fewer_forward_calls(four_stage_model, image, strategy, beam):
    # the trained model: its clear preferences leave no near-ties for rounding to flip
    model, processor = four_stage_model
    cfg = SearchConfig(beam=beam, budgets=BUDGETS, greedy=True, give_up_without_tags=False, judge="label")
    questions = [(image, "How many red cubes are there?"), (None, "How many blue spheres are there?"),
                 (image.rotate(90), "How many green cylinders are there?"), (image, "How many red spheres are there?")]
    one = GenerationCore(model, processor, greedy=True)
    alone = [run(strategy, one, im, q, cfg) for im, q in questions]
    many = GenerationCore(model, processor, greedy=True)
    seen = []
    together = run_many(strategy, many, questions, cfg, parallel=4, on_result=lambda i, r: seen.append(i))
    assert [r.text for r in together] == [r.text for r in alone]
    assert sorted(seen) == [0, 1, 2, 3]
    assert many.stats.forward_calls < one.stats.forward_calls       # rows of several questions per forward
    assert many.stats.vision_calls == one.stats.vision_calls == 3
    assert many.runner.R - len(many.runner.free) == 0                # every row given back


def test_a_failing_question_fails_alone(tiny, image):
    model, processor = tiny
    core = GenerationCore(model, processor, greedy=True)
    bad = object()                                                     # not an image
    res = run_many("direct", core, [(image, "a?"), (bad, "b?"), (image, "c?")],
                   SearchConfig(budgets=BUDGETS, greedy=True), parallel=3)
    assert isinstance(res[1], Exception)
    assert res[0].text and res[2].text
