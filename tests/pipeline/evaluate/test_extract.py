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
    ("The answer is (B)", "B", "letter_final"),
    ("The correct answer is B because it barks.", "B", "letter_final"),
    ("Answer: C", "C", "letter_final"),
    ("I think option B", "B", "letter_phrase"),
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


@pytest.mark.parametrize("text", ["cat or dog, hard to say", "Either B or C.",
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
    # the whole text names A and B, but states B as the answer last
    assert extract_option(scored_text(reasoning_mentions_a, "full"), OPTS).value == "B"
    both = pred.replace("The answer is B.", "B").replace("Thinking it over.", "Option A is wrong; option C too.")
    assert extract_option(scored_text(both, "full"), OPTS).value is None and extract_option(scored_text(both), OPTS).value == "B"
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


# --- answers as real models write them (each once read wrongly) -----------------------------------
def test_a_final_stated_answer_beats_earlier_option_mentions():
    text = "Option A shows a cat, which does not fit. Option B is a dog, also wrong. So the answer is C."
    assert extract_option(text, OPTS) == extract_option("C", OPTS).__class__("C", "letter_final")
    # the last statement decides when the model corrects itself
    assert extract_option("The answer is A. On reflection, the answer is D.", OPTS).value == "D"


def test_a_hedge_or_apology_before_a_stated_answer_is_not_a_refusal():
    assert extract_option("I'm sorry, but it is B.", OPTS).value == "B"
    assert extract_option("I can't be fully sure, but the answer is D.", OPTS).value == "D"
    # a refusal the rules cannot read goes to the judge instead of being dropped unasked
    judge = CountingJudge("Z")
    r = judge_mc(mc_item("1", "A", OPTS), "I'm sorry, I cannot help with that.", Ask(judge), "conclusion")
    assert len(judge.calls) == 1 and r["correct"] == 0
    assert extract_option("I'm sorry, I cannot help with that.", OPTS).how == "refusal"


def test_an_echoed_option_list_then_the_answer_reads_the_answer():
    text = "A. cat\nB. dog\nC. dark red\nD. red\nAnswer: C"
    assert extract_option(text, OPTS).value == "C"
    assert extract_option("(A) cat\n(B) dog\n(C) dark red\n(D) red\n\nC", OPTS).value == "C"


def test_an_excluded_option_is_not_selected():
    assert extract_option("everything except the dog", OPTS).value is None
    assert extract_option("It is not a dog, it is a cat", OPTS).value == "A"
    assert extract_option("Anything other than the cat.", OPTS).value is None


@pytest.mark.parametrize("text", ["the answer is c", "The answer is (c).", "answer: c", "Final answer: c"])
def test_a_lower_case_letter_after_the_answer_is_read(text):
    assert extract_option(text, OPTS).value == "C"


def test_a_lower_case_article_after_the_answer_is_not_a_letter():
    assert extract_option("the answer is a dog", OPTS).value == "B"


def test_the_conclusion_still_wins_over_a_discussion_in_the_reasoning():
    pred = four_stage("C").replace("Thinking it over.", "The answer is A, or maybe B. Option D is out.")
    assert extract_option(scored_text(pred), OPTS).value == "C"
