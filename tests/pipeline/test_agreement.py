import pytest

from pipeline.agreement import agree, declines, is_refusal, non_answer, normalise

OPTS = ["shark", "whale", "trout", "eel"]


@pytest.mark.parametrize(
    "conclusion, answer, options, decision, rule",
    [
        ("B", "B", OPTS, "agree", "option_letter"),
        ("(B) whale", "B", OPTS, "agree", "option_letter"),
        ("The answer is C.", "B", OPTS, "disagree", "option_letter"),
        ("whale", "B", OPTS, "agree", "option_text"),
        ("It is a trout", "B", OPTS, "disagree", "option_text"),
        ("Both whales and sharks", "B", OPTS, "undecided", "option"),
        ("42", "42", [], "agree", "number"),
        ("The total is 1,234.0 dollars", "1234", [], "agree", "number"),
        ("41", "42", [], "disagree", "number"),
        ("About 45%", "45", [], "agree", "number"),
        ("63 and 26", "[63, 26]", [], "agree", "number_list"),
        ("63 and 27", "[63, 26]", [], "disagree", "number_list"),
        ("Red.", "red", [], "agree", "text_exact"),
        ("Yes, there is a cube.", "yes", [], "agree", "yes_no"),
        ("No", "yes", [], "disagree", "yes_no"),
        ("The sphere is large and metallic", "metallic", [], "agree", "text_contains"),
        ("A grey cat sleeping on a sofa near a window", "A cat is asleep on a couch.", [], "undecided", "text"),
        ("I'm sorry, I can't help with that.", "3", [], "disagree", "refusal"),
        ("", "3", [], "disagree", "empty"),
    ],
)
def test_rules(conclusion, answer, options, decision, rule):
    v = agree(conclusion, answer, options)
    assert (v.decision, v.rule) == (decision, rule), v


def test_refusal_and_normalise():
    assert is_refusal("As an AI, I cannot determine that.")
    assert not is_refusal("The sorry-looking dog is brown.")
    assert normalise("The  Red, cube.") == "red cube"
    assert normalise("3.5 m") == "3.5 m"


REFUSAL_SHAPES = [
    "I'm sorry, but I can't assist with that.",
    "I'm sorry, I can't help with identifying or making assumptions about people in images.",
    "Sorry, I can't help with that request.",
    "I'm unable to help with that.",
    "I can't provide assistance with that request.",
    "Unfortunately, I cannot comply with this request.",
    "I won't be able to help with this one.",
    "As an AI, I don't identify real people.",
    "I must decline to answer that.",
]
HEDGES = [  # answer-bearing text that only opens with doubt
    "I cannot determine the exact value from the chart alone, but the bar reaches 42.",
    "I can't be certain of the shade, though the cube looks red.",
    "The sorry-looking dog is brown.",
    "Sorry-faced emoji: the answer is B.",
]


@pytest.mark.parametrize("text", REFUSAL_SHAPES)
def test_real_refusals_decline(text):
    assert declines(text) and declines(f'  "{text}"') and declines(f"**{text}**")


@pytest.mark.parametrize("text", HEDGES)
def test_hedges_do_not_decline(text):
    assert not declines(text)


def test_a_conclusion_that_gives_no_answer_is_a_refusal_only_when_no_answer_is_in_it():
    assert agree("It cannot be determined from the image.", "42").rule == "refusal"
    assert agree("Not enough information to tell.", "yes").rule == "refusal"
    assert agree("I cannot read it exactly, but it is 42", "42").decision == "agree"
    assert agree("I cannot read it exactly, but it is 41", "42").rule == "number"  # wrong, not a refusal
    assert non_answer("Unclear from the picture.") and not non_answer("Unclearly drawn, but 3.")


def test_an_article_is_not_an_option_letter():
    assert agree("a picture of a whale", "B", OPTS).rule != "option_letter"
    assert agree("(a) shark", "A", OPTS).decision == "agree"
