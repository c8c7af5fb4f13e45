import pytest

from pipeline.evaluate import get_benchmark
from pipeline.evaluate.cache import Ask
from pipeline.evaluate.tsv import Item
from tests.pipeline.evaluate.helpers import CountingJudge, four_stage

BENCH = get_benchmark("MathVista_MINI")


def item(answer, atype, precision="", qtype="free_form", choices="", answer_option="", question="Q?"):
    return Item(benchmark="MathVista_MINI", index="1", question=question, answer=answer,
                extra={"question_type": qtype, "answer_type": atype, "precision": precision, "choices": choices,
                       "answer_option": answer_option, "task": "t", "skills": "['arithmetic reasoning']"})


def correct(it, conclusion, ask=None):
    score = BENCH.score([it], {"1": four_stage(conclusion)}, ask)
    return score.records[0]["correct"] == 1


@pytest.mark.parametrize("answer, atype, precision, said, ok", [
    ("1000", "integer", "", "1,000", True),
    ("1000", "integer", "", "The total is 1,000 people.", True),
    ("12", "integer", "", "12 cm", True),
    ("12", "integer", "", "12.0", True),
    ("3", "integer", "", "3.7", False),  # not a whole number
    ("3.5", "float", "1.0", "3.50", True),
    ("3.5", "float", "1.0", "3.54", True),  # rounded to the answer's precision, as MathVista's scorer does
    ("3.5", "float", "1.0", "3.56", False),
    ("0.5", "float", "1.0", "1/2", True),
    ("0.75", "float", "2.0", "\\frac{3}{4}", True),
    ("1.45", "float", "2.0", "$1.45", True),
    ("45", "integer", "", "45%", True),
    ("-4", "integer", "", "−4", True),
    ("[2007, 2008]", "list", "", "Between 2007 and 2008: [2007, 2008]", True),
    ("[2007, 2008]", "list", "", "[2008, 2007]", False),
    ("[1.5, 2.25]", "list", "2.0", "[1.50, 2.25]", True),
    ("Jupiter", "text", "", "Jupiter.", True),
])
def test_typed_comparison(answer, atype, precision, said, ok):
    assert correct(item(answer, atype, precision), said) is ok


def test_option_letter_or_text_maps_to_the_answer_text():
    it = item("8/11", "text", qtype="multi_choice", choices="['3/11', '8/11', '6/11', '3/5']", answer_option="B")
    assert correct(it, "B")
    assert correct(it, "(B) 8/11")
    assert correct(it, "The correct answer is 8/11.")
    assert not correct(it, "C")
    assert not correct(it, "6/11")
    # no answer_option column: the letter's text is compared with the answer
    assert correct(item("8/11", "text", qtype="multi_choice", choices="['3/11', '8/11', '6/11', '3/5']"), "B")
    assert "Choices:" in BENCH.prompt(it) and "(B) 8/11" in BENCH.prompt(it)


def test_several_numbers_go_to_the_llm():
    it = item("14", "integer", question="Which number is missing?")
    said = "The sequence goes 2, 6, 10 so the next one is 14 then 18."
    assert not correct(it, said)  # rules alone cannot tell which of five numbers is meant
    judge = CountingJudge("14")
    assert correct(it, said, Ask(judge))
    assert len(judge.calls) == 1 and "Which number is missing?" in judge.calls[0] and said in judge.calls[0]
    assert not correct(it, said, Ask(CountingJudge("NONE")))


def test_breakdown_by_task_skill_and_types():
    items = [item("1", "integer"), item("2.5", "float", "1.0")]
    items[1].index = "2"
    items[1].extra["task"] = "u"
    score = BENCH.score(items, {"1": "1", "2": "2.4"})
    assert score.value == 50
    assert score.breakdown["task:t"] == 100 and score.breakdown["task:u"] == 0
    assert score.breakdown["answer_type:integer"] == 100 and score.breakdown["skill:arithmetic reasoning"] == 50
