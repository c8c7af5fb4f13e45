import json

import pytest

from pipeline.stages import render
from pipeline.validate import TurnContext, check_turn, validate_sample

GOOD = {"summary": "Count the red cubes in the scene.", "caption": "Three red cubes and one blue sphere.",
        "reasoning": "I count the red cubes one by one: three.", "conclusion": "3"}


def ann(response, status="ok", judge="rule:number", reason=""):
    return {"status": status, "reason": reason, "response": response, "judge_verdict": judge,
            "teacher_model": "gpt-4o", "prompt_version": "v1"}


CTX = TurnContext(answer="3", options=[], has_image=True)


@pytest.mark.parametrize(
    "row, ctx, reason",
    [
        (ann(render(GOOD)), CTX, None),
        (ann(render(GOOD), status="refused", reason="the teacher refused"), CTX, "teacher_refused"),
        (ann("The answer is 3."), CTX, "format_no_tags"),
        (ann(render(GOOD).replace("<CAPTION>", "").replace("</CAPTION>", "")), CTX, "format_missing_stage"),
        (ann("Note: " + render(GOOD)), CTX, "format_text_outside_tags"),
        (ann(render({**GOOD, "caption": ""})), CTX, "format_empty_stage"),
        (ann(render({**GOOD, "caption": ""})), TurnContext("3", [], has_image=False), None),
        (ann(render({**GOOD, "conclusion": "4"})), CTX, "answer_disagrees"),
        # a hedge inside the reasoning, then the right answer: not a refusal
        (ann(render({**GOOD, "reasoning": "I cannot determine the exact count from the image alone, but the "
                                          "three red shapes in front are cubes, so there are 3."})), CTX, None),
        (ann(render({**GOOD, "summary": "I can't be fully sure of the shading, so I will count the red cubes."})), CTX, None),
        # the conclusion declines, or gives no answer: a refusal
        (ann(render({**GOOD, "conclusion": "I'm sorry, but I can't help with that."})), CTX, "refusal"),
        (ann(render({**GOOD, "conclusion": "It cannot be determined from the image."})), CTX, "refusal"),
        (ann(render({**GOOD, "conclusion": "I cannot identify the people in this image."})),
         TurnContext("friends", [], True), "refusal"),
        (ann(render({**GOOD, "conclusion": "B"})), TurnContext("B", ["cat", "dog"], True), None),
        (ann(render({**GOOD, "conclusion": "dog"})), TurnContext("B", ["cat", "dog"], True), None),
        (ann(render({**GOOD, "conclusion": "A"})), TurnContext("B", ["cat", "dog"], True), "answer_disagrees"),
        (ann(render({**GOOD, "conclusion": "A small feline naps"}), judge="valid"), TurnContext("a cat sleeping on a mat", [], True), None),
        (ann(render({**GOOD, "conclusion": "A small feline naps"}), judge="invalid"), TurnContext("a cat sleeping on a mat", [], True), "answer_unverified"),
        (ann(render({**GOOD, "summary": "Ok."})), CTX, "too_short_summary"),
        (ann(render({**GOOD, "reasoning": "x" * 20000})), CTX, "too_long_reasoning"),
    ],
)
def test_each_rule(row, ctx, reason):
    problem = check_turn(row, ctx)
    assert (problem[0] if problem else None) == reason, problem


def sample(conversations, answer="3", options=()):
    return {"id": "clevr/1", "source": "clevr", "split": "train", "image_path": "a.png", "question": "How many?",
            "answer": answer, "options": list(options), "hints": [], "conversations": conversations, "meta": "{}"}


def test_a_sample_keeps_its_passing_turns_and_moves_the_image_token():
    conv = [{"from": "human", "value": "<image>\nHow many?"}, {"from": "gpt", "value": "3"},
            {"from": "human", "value": "What colour?"}, {"from": "gpt", "value": "red"}]
    bad_first = ann("no tags")
    good_second = ann(render({**GOOD, "conclusion": "red"}), judge="rule:text_exact")
    v = validate_sample(sample(conv), {0: bad_first, 1: good_second})
    assert v.turns_total == 2 and v.turns_valid == 1
    assert [r["reason"] for r in v.rejects] == ["format_no_tags"]
    assert v.sample["conversations"][0]["value"] == "<image>\nWhat colour?"
    assert "<CONCLUSION>\nred\n</CONCLUSION>" in v.sample["conversations"][1]["value"]
    assert json.loads(v.sample["meta"])["teacher_model"] == "gpt-4o"


def test_a_sample_with_no_passing_turn_is_rejected():
    conv = [{"from": "human", "value": "<image>\nHow many?"}, {"from": "gpt", "value": "3"}]
    v = validate_sample(sample(conv), {})
    assert v.sample is None and v.rejects[0]["reason"] == "not_annotated"
