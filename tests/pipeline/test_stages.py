import pytest

from pipeline.stages import STAGES, next_stage, parse, render

GOOD = {
    "summary": "Count the red cubes.",
    "caption": "Three red cubes and a blue sphere on a grey floor.",
    "reasoning": "There are three red cubes; nothing hides another.",
    "conclusion": "3",
}


def test_render_then_parse_round_trips():
    p = parse(render(GOOD))
    assert p.ok and p.stages == GOOD


@pytest.mark.parametrize(
    "text, problem",
    [
        ("The answer is 3.", "no_tags"),
        ("<SUMMARY>a</SUMMARY><CAPTION>b</CAPTION><REASONING>c</REASONING>", "missing_stage"),
        ("<SUMMARY>a</SUMMARY><REASONING>c</REASONING><CAPTION>b</CAPTION><CONCLUSION>d</CONCLUSION>", "out_of_order"),
        ("<SUMMARY>a</SUMMARY><SUMMARY>a</SUMMARY><CAPTION>b</CAPTION><REASONING>c</REASONING><CONCLUSION>d</CONCLUSION>", "repeated_tag"),
        ("<SUMMARY>a<CAPTION>b</CAPTION></SUMMARY><REASONING>c</REASONING><CONCLUSION>d</CONCLUSION>", "unbalanced_tag"),
        ("<SUMMARY>a</SUMMARY><CAPTION>b</CAPTION><REASONING>c</REASONING><CONCLUSION>d", "unbalanced_tag"),
        ("Sure! <SUMMARY>a</SUMMARY><CAPTION>b</CAPTION><REASONING>c</REASONING><CONCLUSION>d</CONCLUSION>", "text_outside_tags"),
        ("<SUMMARY> </SUMMARY><CAPTION>b</CAPTION><REASONING>c</REASONING><CONCLUSION>d</CONCLUSION>", "empty_stage"),
    ],
)
def test_bad_texts_get_their_problem(text, problem):
    p = parse(text)
    assert p.problem == problem, p.detail
    assert p.detail


def test_empty_caption_allowed_only_when_asked():
    text = render({**GOOD, "caption": ""})
    assert parse(text).problem == "empty_stage"
    assert parse(text, caption_may_be_empty=True).ok


def test_next_stage_follows_closed_tags():
    assert next_stage("") == "summary"
    assert next_stage("<SUMMARY>x</SUMMARY>") == "caption"
    assert next_stage(render(GOOD)) is None
    assert STAGES[-1] == "conclusion"
