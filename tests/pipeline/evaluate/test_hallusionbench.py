import pytest

from pipeline.evaluate import get_benchmark
from pipeline.evaluate.cache import Ask
from pipeline.evaluate.hallusionbench import ids_of
from pipeline.evaluate.tsv import Item
from tests.pipeline.evaluate.helpers import CountingJudge, four_stage

BENCH = get_benchmark("HallusionBench")

# (index, answer, answered correctly?)
CRAFTED = [
    ("VS_chart_1_0_0_0", "Yes", True),   # set 0, figure 0, question 0
    ("VS_chart_1_0_0_1", "No", True),    # set 0, figure 0, question 1
    ("VS_chart_2_0_1_0", "No", True),    # set 0, figure 1 (edited), question 0
    ("VS_chart_2_0_1_1", "Yes", False),  # set 0, figure 1, question 1  -> figure 1 and question 1 fail
    ("VD_figure_1_1_0_0", "Yes", True),
    ("VD_figure_1_1_0_1", "Yes", False),  # -> figure 0 and question 1 of set 1 fail
    ("VD_figure_2_1_1_0", "No", True),
    ("VD_figure_2_1_1_1", "Yes", True),
    ("VD_illusion_1_2_0_0", "No", True),  # a set with one figure and one question
]


def _items():
    return [Item(benchmark="HallusionBench", index=i, question="Is it so?", answer=a, category=i.split("_")[0],
                 l2_category=i.split("_")[1]) for i, a, _ in CRAFTED]


def _preds():
    flip = {"Yes": "No", "No": "Yes"}
    return {i: four_stage(f"{a if ok else flip[a]}, that is what the figure shows.") for i, a, ok in CRAFTED}


def test_three_accuracies_on_a_crafted_set():
    score = BENCH.score(_items(), _preds())
    b = score.breakdown
    assert b["aAcc"] == pytest.approx(700 / 9)  # 7 of 9 questions
    assert b["fAcc"] == pytest.approx(60.0)  # figures: VS0f0 ok, VS0f1 no, VD1f0 no, VD1f1 ok, VD2f0 ok
    assert b["qAcc"] == pytest.approx(60.0)  # questions: VS0q0 ok, VS0q1 no, VD1q0 ok, VD1q1 no, VD2q0 ok
    assert score.value == pytest.approx((700 / 9 + 60 + 60) / 3)
    assert b["category:VS:aAcc"] == 75 and b["category:VS:fAcc"] == 50 and b["category:VS:qAcc"] == 50
    assert b["l2:illusion:fAcc"] == 100


def test_ids_from_columns_win_over_the_index():
    it = Item(benchmark="HallusionBench", index="17", question="q", answer="Yes",
              extra={"set_id": "3", "figure_id": "1", "question_id": "0"})
    assert ids_of(it) == ("3", "1", "0")
    with pytest.raises(ValueError):
        ids_of(Item(benchmark="HallusionBench", index="17", question="q", answer="Yes"))


def test_unclear_answers_go_to_the_llm_and_numeric_answers_are_read():
    items = [Item(benchmark="HallusionBench", index="VS_map_1_0_0_0", question="Is Paris north of Rome?", answer="1")]
    preds = {"VS_map_1_0_0_0": "Paris lies well to the north of Rome."}
    assert BENCH.score(items, preds).value == 0  # neither yes nor no: wrong without an LLM
    judge = CountingJudge("Yes")
    assert BENCH.score(items, preds, Ask(judge)).value == 100 and len(judge.calls) == 1


def test_rows_without_an_image_are_left_out_as_vlmevalkit_does(tmp_path):
    from tests.pipeline.evaluate.helpers import png_b64, write

    rows = [{"index": "VS_map_0_0_0_0", "image": "", "question": "Without the map: is Paris north of Rome?", "answer": "Yes"},
            {"index": "VS_map_1_0_1_0", "image": png_b64(), "question": "Is Paris north of Rome?", "answer": "Yes"}]
    items = BENCH.load(write(tmp_path, "HallusionBench", ["index", "image", "question", "answer"], rows))
    assert [it.index for it in items] == ["VS_map_1_0_1_0"]
    assert len(BENCH.load(write(tmp_path, "h2", ["index", "image", "question", "answer"], rows), skip_no_image=False)) == 2
