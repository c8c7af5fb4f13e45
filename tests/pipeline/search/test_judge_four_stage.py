"""The judge works with a model that answers everything in four stages and was never shown a judge
prompt: its verdicts come from its own probabilities, and it prefers the candidate that is right on
a planted difference far more often than chance."""
import random

import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.slow

from pipeline.search.base import Candidate  # noqa: E402
from pipeline.search.core import GenerationCore  # noqa: E402
from pipeline.search.judge import Judge  # noqa: E402

from .conftest import FOUR_STAGE_COLOURS, FOUR_STAGE_SHAPES, four_stage_answer  # noqa: E402

TRIALS = 40


def test_the_trained_model_writes_four_stages_and_the_judge_sees_it(four_stage_model):
    from pipeline.search import SearchConfig, run
    from pipeline.stages import parse

    model, processor = four_stage_model
    img = None      # text-only questions, as it was trained
    core = GenerationCore(model, processor, greedy=True)
    res = run("direct", core, img, "How many red cubes are there?", SearchConfig(
        greedy=True, budgets={"summary": 40, "caption": 40, "reasoning": 40, "conclusion": 40}))
    assert parse(res.text).ok, res.text
    session = core.open(img, "How many red cubes are there?")
    assert Judge(core).mode_for(session) == "likelihood"      # the probe: its replies open with <SUMMARY>


def test_the_knockout_prefers_the_conclusion_that_agrees_with_the_reasoning(four_stage_model):
    model, processor = four_stage_model
    img = None      # text-only questions, as it was trained
    core = GenerationCore(model, processor, greedy=True)
    judge = Judge(core)
    rng = random.Random(7)
    right = 0
    for trial in range(TRIALS):
        k, colour, shape = rng.randint(0, 12), rng.choice(FOUR_STAGE_COLOURS), rng.choice(FOUR_STAGE_SHAPES)
        wrong = rng.choice([x for x in range(13) if x != k])
        context = four_stage_answer(k, colour, shape).split("<CONCLUSION>")[0]
        session = core.open(img, f"How many {colour} {shape}s are there?")
        session.commit(Candidate(context, core.tokens(context)))
        cands = [Candidate(f"<CONCLUSION>\n{v}\n</CONCLUSION>") for v in ((k, wrong) if trial % 2 else (wrong, k))]
        ko = judge.knockout(session, "conclusion", cands, random.Random(trial))
        right += int(cands[ko.winner].text == f"<CONCLUSION>\n{k}\n</CONCLUSION>")
        session.close()
    # chance is 20 of 40; 30 or more happens by chance with probability < 0.2 %
    assert right >= 30, f"{right}/{TRIALS} right"


def test_label_verdicts_of_such_a_model_would_be_noise(four_stage_model):
    """Why the probe matters: asked for "1" or "2", the four-stage model's choice does not follow the
    planted difference (it was never taught the judge's reply format)."""
    model, processor = four_stage_model
    img = None      # text-only questions, as it was trained
    core = GenerationCore(model, processor, greedy=True)
    judge = Judge(core, mode="label")
    session = core.open(img, "How many red cubes are there?")
    [v] = judge.compare(session, "conclusion", "", [("3", "5")])
    assert max(v.scores) < -2.0        # neither label is a likely reply: the model wants to write <SUMMARY>
