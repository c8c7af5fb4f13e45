import pytest

from pipeline.agreement import agree, is_refusal, normalise

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
