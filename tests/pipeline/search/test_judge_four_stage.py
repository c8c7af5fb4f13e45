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


def test_the_knockout_prefers_the_caption_that_describes_what_was_asked(four_stage_model):
    """The planted difference: two captions that differ only in the colour of the objects; the right
    one names the colour the question asks about (as every training answer's caption does)."""
    model, processor = four_stage_model
    core = GenerationCore(model, processor, greedy=True)
    judge = Judge(core)
    rng = random.Random(7)
    right = 0
    for trial in range(TRIALS):
        k, colour, shape = rng.randint(0, 12), rng.choice(FOUR_STAGE_COLOURS), rng.choice(FOUR_STAGE_SHAPES)
        # the two captions differ in the colour alone, and are as long in tokens (the judge compares
        # mean log-probabilities per token: a difference in length would be a second difference)
        same_length = [c for c in FOUR_STAGE_COLOURS if c != colour and len(core.tokens(f" {c} {shape}s.")) ==
                       len(core.tokens(f" {colour} {shape}s."))]
        other = rng.choice(same_length or [c for c in FOUR_STAGE_COLOURS if c != colour])
        context = four_stage_answer(k, colour, shape).split("<CAPTION>")[0]
        session = core.open(None, f"How many {colour} {shape}s are there?")
        session.commit(Candidate(context, core.tokens(context)))
        good = f"<CAPTION>\nThe image shows {k} {colour} {shape}s.\n</CAPTION>"
        cands = [Candidate(t) for t in ((good, good.replace(colour, other)) if trial % 2 else (good.replace(colour, other), good))]
        ko = judge.knockout(session, "caption", cands, random.Random(trial))
        right += int(cands[ko.winner].text == good)
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
