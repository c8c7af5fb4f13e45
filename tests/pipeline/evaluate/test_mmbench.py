import pytest

from pipeline.evaluate import get_benchmark
from pipeline.evaluate.cache import Ask
from pipeline.evaluate.mmbench import OFFSET, rotatable, with_copies
from tests.pipeline.evaluate.helpers import CountingJudge, four_stage, mc_item, png_b64, write

BENCH = get_benchmark("MMBench_DEV_EN")
HEADER = ["index", "image", "question", "hint", "A", "B", "C", "D", "answer", "category", "l2-category"]


def _originals():
    return [
        mc_item("0", "C", {"A": "red", "B": "green", "C": "blue", "D": "gray"}, benchmark="MMBench_DEV_EN",
                category="colour", l2_category="Attribute"),
        mc_item("1", "A", {"A": "left", "B": "right"}, benchmark="MMBench_DEV_EN", category="position", l2_category="Relation"),
        mc_item("2", "B", {"A": "A and B", "B": "only C", "C": "none"}, benchmark="MMBench_DEV_EN", category="odd",
                l2_category="Relation"),  # an option names two labels: not rotated (VLMEvalKit's rule)
    ]


def test_rotated_copies_are_built_from_originals():
    items = with_copies(_originals())
    by = {it.index: it for it in items}
    assert sorted(by, key=int) == ["0", "1", "2", str(OFFSET), str(OFFSET + 1), str(2 * OFFSET), str(3 * OFFSET)]
    # copy i: the option at letter q is the original's option at (q + i) mod k; the answer moves with its text
    c1, c2, c3 = by[str(OFFSET)], by[str(2 * OFFSET)], by[str(3 * OFFSET)]
    assert c1.options == {"A": "green", "B": "blue", "C": "gray", "D": "red"} and c1.answer == "B"
    assert c2.options == {"A": "blue", "B": "gray", "C": "red", "D": "green"} and c2.answer == "A"
    assert c3.options == {"A": "gray", "B": "red", "C": "green", "D": "blue"} and c3.answer == "D"
    for it in (c1, c2, c3):
        assert it.options[it.answer] == "blue" and it.group == "0"
    assert by[str(OFFSET + 1)].options == {"A": "right", "B": "left"} and by[str(OFFSET + 1)].answer == "B"
    assert not rotatable(by["2"]) and by["2"].group == "2"


def test_offset_grows_with_large_indices():
    items = with_copies([mc_item("1500000", "A", {"A": "x", "B": "y"}, benchmark="MMBench_DEV_EN")])
    assert [it.index for it in items] == ["1500000", "11500000"]


def _predict_all_right(items):
    return {it.index: four_stage(f"{it.answer}. {it.options[it.answer]}") for it in items}


def test_one_wrong_rotation_sinks_its_group():
    items = with_copies(_originals())
    preds = _predict_all_right(items)
    assert BENCH.score(items, preds).value == 100
    preds[str(2 * OFFSET)] = four_stage("C")  # group 0, copy 2 answered wrong
    score = BENCH.score(items, preds)
    assert score.value == pytest.approx(200 / 3)  # groups 1 and 2 still right
    assert score.breakdown["colour"] == 0 and score.breakdown["position"] == 100
    assert score.n_units == 3 and score.n_items == 7
    # a missing copy also sinks its group
    del preds[str(OFFSET + 1)]
    assert BENCH.score(items, preds).value == pytest.approx(100 / 3)


def test_a_wrong_copy_by_the_rules_spares_the_judge():
    items = with_copies(_originals())
    preds = _predict_all_right(items)
    preds["0"] = four_stage("Either red or blue")  # undecided by the rules
    preds[str(OFFSET)] = four_stage("A")  # wrong by the rules
    judge = CountingJudge("C")
    score = BENCH.score(items, preds, Ask(judge))
    assert judge.calls == []  # the group is lost already: no need to ask about copy 0
    assert score.value == pytest.approx(200 / 3)
    preds[str(OFFSET)] = four_stage("B")  # now every other copy is right: the judge decides copy 0
    assert BENCH.score(items, preds, Ask(judge)).value == 100 and len(judge.calls) == 1


def test_file_with_copies_is_grouped_not_rotated_again(tmp_path):
    img = png_b64()
    rows = [
        {"index": 5, "image": img, "question": "q", "hint": "", "A": "x", "B": "y", "answer": "A", "category": "c"},
        {"index": OFFSET + 5, "image": "5", "question": "q", "hint": "", "A": "y", "B": "x", "answer": "B", "category": "c"},
        {"index": 6, "image": img, "question": "q2", "hint": "h", "A": "u", "B": "v", "answer": "B", "category": "c"},
        {"index": OFFSET + 6, "image": "6", "question": "q2", "hint": "h", "A": "v", "B": "u", "answer": "A", "category": "c"},
    ]
    items = BENCH.load(write(tmp_path, "MMBench_DEV_EN", HEADER, rows))
    assert [(it.index, it.group) for it in items] == [("5", "5"), (str(OFFSET + 5), "5"), ("6", "6"), (str(OFFSET + 6), "6")]
    assert items[1].image().getpixel((0, 0)) == (200, 40, 40)  # the copy's image is the original's
    assert "Hint: h" in items[2].prompt and "A. u" in items[2].prompt
    preds = {"5": "A", str(OFFSET + 5): "B", "6": "B", str(OFFSET + 6): "B"}  # group 6: copy wrong
    assert BENCH.score(items, preds).value == 50
