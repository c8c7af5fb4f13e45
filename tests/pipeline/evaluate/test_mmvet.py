import re

import pytest

from pipeline.evaluate import get_benchmark
from pipeline.evaluate.cache import Ask, Verdicts
from pipeline.evaluate.mmvet import grader_prompt, parse_grade, rule_grade
from pipeline.evaluate.tsv import Item
from tests.pipeline.evaluate.helpers import CountingJudge, four_stage

BENCH = get_benchmark("MMVet")


def _items():
    return [
        Item(benchmark="MMVet", index="0", question="How many apples?", answer="3", category="rec"),
        Item(benchmark="MMVet", index="1", question="What is written?", answer="EXIT", category="ocr"),
        Item(benchmark="MMVet", index="2", question="Sum?", answer="12", category="ocr,math"),
        Item(benchmark="MMVet", index="3", question="Which two?", answer="circle<AND>square", category="rec,spat"),
    ]


@pytest.mark.parametrize("reply, grade", [("0.7", 0.7), ("Score: 1.0", 1.0), ("0", 0.0), (" .5\n", 0.5),
                                          ("1.0 - the answer matches", 1.0), ("7", None), ("great answer", None), ("", None)])
def test_parse_grade(reply, grade):
    assert parse_grade(reply) == grade


def test_grader_prompt_spells_out_and_or():
    p = grader_prompt("Which two?", "circle<AND>square", "a circle and a square")
    assert "circle <AND> square" in p and "a circle and a square" in p
    # MM-Vet's layout: graded few-shot rows, the last row's correctness left for the grader
    last = p.rstrip().splitlines()[-1]
    assert last == "| Which two? | circle <AND> square | a circle and a square |"
    assert sum(1 for line in p.splitlines() if line.startswith("| ") and re.search(r"\| [01]\.\d \|$", line.rstrip())) >= 6


def test_a_pipe_or_newline_in_the_answer_cannot_break_the_table():
    p = grader_prompt("Q?", "x", "a | b\nc")
    assert p.rstrip().splitlines()[-1] == "| Q? | x | a / b c |"


def test_scores_are_graded_once_cached_and_broken_down(tmp_path):
    grades = {"3": "1.0", "EXIT": "0.5", "12": "0.0", "circle <AND> square": "0.6"}

    def reply(prompt):
        ref = prompt.rstrip().splitlines()[-1].split(" | ")[1]
        return grades[ref]

    judge = CountingJudge(reply)
    verdicts = Verdicts(tmp_path / "v.sqlite")
    preds = {str(i): four_stage(f"answer {i}") for i in range(4)}
    ask = Ask(judge, verdicts, benchmark="MMVet", strategy="direct", model="m")
    score = BENCH.score(_items(), preds, ask)
    assert len(judge.calls) == 4
    assert score.value == pytest.approx(100 * (1.0 + 0.5 + 0.0 + 0.6) / 4)
    assert score.breakdown["rec"] == pytest.approx(80.0) and score.breakdown["ocr"] == pytest.approx(25.0)
    assert score.breakdown["math"] == 0 and score.breakdown["spat"] == pytest.approx(60.0)
    assert score.breakdown["combo:ocr_math"] == 0
    # a second scoring (even a new process, no grader) reads the cache
    again = BENCH.score(_items(), preds, Ask(None, verdicts, benchmark="MMVet", strategy="direct", model="m",
                                            judge_name="fake-judge"))
    assert again.value == score.value and len(judge.calls) == 4 and again.judge_hits == 4
    # a changed prediction is graded afresh
    preds["0"] = four_stage("three")
    BENCH.score(_items(), preds, Ask(judge, verdicts, benchmark="MMVet", strategy="direct", model="m"))
    assert len(judge.calls) == 5


def test_unparseable_replies_are_retried_then_zero():
    judge = CountingJudge("I cannot grade this")
    score = BENCH.score(_items()[:1], {"0": "3"}, Ask(judge))
    assert len(judge.calls) == 5 and score.value == 0 and score.records[0]["how"] == "grader_unparsed"  # VLMEvalKit: 5 tries
    flaky = iter(["hmm", "0.8"])
    judge2 = CountingJudge(lambda p: next(flaky))
    assert BENCH.score(_items()[:1], {"0": "3"}, Ask(judge2)).value == pytest.approx(80)


def test_without_a_grader_rules_stand_in_and_say_so():
    score = BENCH.score(_items(), {"0": "3 apples", "1": "EXIT", "2": "11", "3": "a circle"})
    assert [r["how"] for r in score.records] == ["rules_no_grader"] * 4
    assert score.value == pytest.approx(100 * (1 + 1 + 0 + 0.5) / 4)
    assert rule_grade("a parasol", "umbrella <OR> parasol") == 1.0


def test_empty_and_missing_predictions_score_zero_without_a_call():
    judge = CountingJudge("1.0")
    empty = "<SUMMARY>s</SUMMARY><CAPTION>c</CAPTION><REASONING>r</REASONING><CONCLUSION> </CONCLUSION>"
    score = BENCH.score(_items()[:2], {"0": empty}, Ask(judge))
    assert judge.calls == [] and score.value == 0 and score.missing == 1


def test_grading_from_threads_calls_once_per_item(tmp_path):
    import threading

    seen_threads = set()

    def reply(prompt):
        seen_threads.add(threading.get_ident())
        return "0.5"

    judge = CountingJudge(reply)
    items = [Item(benchmark="MMVet", index=str(i), question="q", answer=str(i), category="rec") for i in range(20)]
    preds = {str(i): f"answer {i}" for i in range(20)}
    ask = Ask(judge, Verdicts(tmp_path / "v.sqlite"), benchmark="MMVet", workers=4)
    score = BENCH.score(items, preds, ask)
    assert score.value == 50 and len(judge.calls) == 20 and ask.calls == 20
    assert Verdicts(tmp_path / "v.sqlite").count() == 20
