import pytest

from pipeline.evaluate.base import MultipleChoice, judge_mc
from pipeline.evaluate.cache import Ask
from pipeline.evaluate.extract import extract_option, extract_yes_no, number_by_rules, scored_text
from tests.pipeline.evaluate.helpers import CountingJudge, four_stage, mc_item

OPTS = {"A": "cat", "B": "dog", "C": "dark red", "D": "red"}


@pytest.mark.parametrize("text, letter, how", [
    ("B", "B", "letter"),
    ("(B)", "B", "letter"),
    ("b.", "B", "letter"),
    ("**B**", "B", "letter"),
    ("Option B", "B", "letter"),
    ("The answer is (B)", "B", "letter_phrase"),
    ("The correct answer is B because it barks.", "B", "letter_phrase"),
    ("Answer: C", "C", "letter_phrase"),
    ("B. dog", "B", "letter"),
    ("(A) the cat", "A", "letter"),
    ("I would pick D", "D", "letter_lone"),
    ("dog", "B", "option_text"),
    ("It is a dog.", "B", "option_text"),
    ("A dog is sitting on the mat.", "B", "option_text"),  # "A" is the article here, not option A
    ("The answer is a dog", "B", "option_text"),
    ("dark red", "C", "option_text"),  # "red" lies inside "dark red": the longer option wins
    ("It is red.", "D", "option_text"),
])
def test_tricky_option_extractions(text, letter, how):
    got = extract_option(text, OPTS)
    assert (got.value, got.how) == (letter, how)


@pytest.mark.parametrize("text", ["cat or dog, hard to say", "Either B or C.", "answer: b",
                                  "I'm sorry, I can't determine that.", ""])
def test_ambiguous_or_refused_is_wrong_without_llm(text):
    assert extract_option(text, OPTS).value is None


def test_ambiguous_goes_to_the_llm_once_and_is_cached(tmp_path):
    from pipeline.evaluate.cache import Verdicts

    judge = CountingJudge("B")
    verdicts = Verdicts(tmp_path / "v.sqlite")
    ask = Ask(judge, verdicts, benchmark="MMStar", strategy="direct", model="m")
    item = mc_item("7", "B", OPTS)
    pred = four_stage("Either a cat or a dog, the dog seems likelier.")
    r = judge_mc(item, pred, ask, "conclusion")
    assert (r["extracted"], r["correct"], r["how"]) == ("B", 1, "llm")
    assert len(judge.calls) == 1 and "Either a cat or a dog" in judge.calls[0] and "B. dog" in judge.calls[0]
    # again, and from a fresh Ask without a judge: the verdict comes from the cache
    judge_mc(item, pred, ask, "conclusion")
    assert len(judge.calls) == 1 and ask.hits == 1
    offline = Ask(None, verdicts, benchmark="MMStar", strategy="direct", model="m", judge_name="fake-judge")
    assert judge_mc(item, pred, offline, "conclusion")["correct"] == 1
    # no judge, no cache: wrong, and nothing called
    assert judge_mc(item, pred, Ask(None), "conclusion")["correct"] == 0


def test_llm_reply_of_z_is_wrong():
    judge = CountingJudge("Z")
    r = judge_mc(mc_item("1", "A", OPTS), "a cat and a dog", Ask(judge), "conclusion")
    assert r["correct"] == 0 and r["how"] == "llm_none" and len(judge.calls) == 1


def test_unambiguous_answers_never_call_the_llm():
    judge = CountingJudge("A")
    ask = Ask(judge)
    for text in ("B", "The answer is (B)", "B. dog", "dog"):
        assert judge_mc(mc_item("1", "B", OPTS), text, ask, "conclusion")["correct"] == 1
    assert judge.calls == []


def test_conclusion_is_scored_by_default_and_full_text_as_an_option():
    pred = four_stage("The answer is B.")
    reasoning_mentions_a = pred.replace("Thinking it over.", "Option A is wrong because cats meow.")
    assert scored_text(reasoning_mentions_a) == "The answer is B."
    assert extract_option(scored_text(reasoning_mentions_a), OPTS).value == "B"
    assert extract_option(scored_text(reasoning_mentions_a, "full"), OPTS).value is None  # A and B both named
    assert scored_text("Just B") == "Just B"  # no tags: the whole text
    assert scored_text("<SUMMARY>s</SUMMARY><CAPTION>c</CAPTION><REASONING>cut off") == ""  # never concluded
    assert scored_text("<SUMMARY>s</SUMMARY> <CONCLUSION>C, surely") == "C, surely"  # cut short in the conclusion
    with pytest.raises(ValueError):
        scored_text("x", "middle")


def test_multiple_choice_benchmark_accuracy_and_categories():
    items = [mc_item(str(i), "A", {"A": "yes", "B": "no"}, category=c) for i, c in enumerate(["math", "math", "science"])]
    score = MultipleChoice().score(items, {"0": four_stage("A"), "1": four_stage("B")})  # item 2 has no prediction
    assert score.value == pytest.approx(100 / 3) and score.missing == 1
    assert score.breakdown["math"] == 50 and score.breakdown["science"] == 0


@pytest.mark.parametrize("text, want", [("Yes, it is.", "Yes"), ("No.", "No"), ("There is no cat", "No"),
                                        ("Yes and no", None), ("Maybe", None)])
def test_yes_no_rule(text, want):
    assert extract_yes_no(text).value == want


@pytest.mark.parametrize("text, value", [("1,000", 1000.0), ("3.50", 3.5), ("1/2", 0.5), ("12 cm", 12.0), ("$4.25", 4.25),
                                         ("50%", 50.0), ("\\frac{3}{4}", 0.75), ("x = 3 + 4 = 7", 7.0),
                                         ("There are 5 apples.", 5.0), ("−2", -2.0), ("3 and 4", None)])
def test_number_rules(text, value):
    assert number_by_rules(text).value == value
