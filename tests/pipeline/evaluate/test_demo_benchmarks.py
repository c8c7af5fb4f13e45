import csv
import io

from pipeline.demo.benchmarks import write_benchmarks
from pipeline.demo.common import COLOURS
from pipeline.evaluate import BENCHMARKS, all_benchmarks, run
from tests.pipeline.evaluate.helpers import CountingJudge, four_stage


def _oracle(item):
    a = item.answer.replace("<AND>", " and ").replace("<OR>", " or ")
    return four_stage(f"{a}. {item.options[a]}" if item.options else a)


def test_six_small_files_deterministic_and_not_rewritten(tmp_path):
    a = write_benchmarks(str(tmp_path / "a"), seed=1)
    b = write_benchmarks(str(tmp_path / "b"), seed=1)
    c = write_benchmarks(str(tmp_path / "c"), seed=2)
    assert sorted(a) == sorted(BENCHMARKS)
    for name in BENCHMARKS:
        data = open(a[name], "rb").read()
        assert data == open(b[name], "rb").read()
        rows = list(csv.DictReader(io.StringIO(data.decode()), delimiter="\t"))
        assert 5 <= len(rows) <= 12, name
    assert any(open(a[n], "rb").read() != open(c[n], "rb").read() for n in BENCHMARKS)
    import os

    before = os.stat(a["MMStar"]).st_mtime_ns
    write_benchmarks(str(tmp_path / "a"), seed=1)
    assert os.stat(a["MMStar"]).st_mtime_ns == before


def test_the_demo_files_load_and_a_true_answer_scores_full_marks(tmp_path):
    paths = write_benchmarks(str(tmp_path / "data"), seed=0)
    scores = {}
    for name, bench in all_benchmarks().items():
        items = bench.load(paths[name])
        assert all(it.image() is not None for it in items), name
        judge = CountingJudge("1.0")
        scores[name] = run.evaluate(name, paths[name], _oracle, tmp_path / "out", strategy="direct", model="oracle",
                                    judge=judge, rank=0, world_size=1)
        assert scores[name].value == 100, (name, scores[name].records)
        assert len(judge.calls) == (len(items) if name == "MMVet" else 0)
    assert run.summary(scores)["average"] == 100 and run.summary(scores)["complete"]
    # always answering "A" / "Yes" / "0" does worse everywhere
    for name, bench in all_benchmarks().items():
        s = run.evaluate(name, paths[name], lambda it: "A" if it.options else "Yes" if name == "HallusionBench" else "0",
                         tmp_path / "out", strategy="lazy", model="oracle", judge=CountingJudge("0.0"), rank=0, world_size=1)
        assert s.value < 100, name


def test_references_groups_and_true_pictures(tmp_path):
    paths = write_benchmarks(str(tmp_path), seed=0)
    bench = all_benchmarks()
    mmb = bench["MMBench_DEV_EN"].load(paths["MMBench_DEV_EN"])
    raw = list(csv.DictReader(open(paths["MMBench_DEV_EN"]), delimiter="\t"))
    assert sum(len(r["image"]) <= 64 for r in raw) >= 3  # rotated copies name their original's row
    groups = {}
    for it in mmb:
        groups.setdefault(it.group, []).append(it)
    assert sorted(len(g) for g in groups.values()) == [2, 3, 4]
    for g in groups.values():  # every copy's answer points at the same option text, over the same picture
        assert len({it.options[it.answer] for it in g}) == 1
        assert len({it.image().tobytes() for it in g}) == 1
    hb = bench["HallusionBench"].load(paths["HallusionBench"])
    hraw = list(csv.DictReader(open(paths["HallusionBench"]), delimiter="\t"))
    assert sum(len(r["image"]) <= 64 for r in hraw) == 4
    # the chart question's answer agrees with the bars' drawn heights
    blue = COLOURS["blue"]
    for it in hb:
        if it.question.startswith("Is bar A taller"):
            im = it.image().convert("RGB")
            heights = []
            for x in (im.width * 0.3, im.width * 0.7):
                col = [im.getpixel((int(x), y)) for y in range(im.height)]
                heights.append(sum(1 for p in col if p == blue))
            assert (heights[0] > heights[1]) == (it.answer == "Yes")
    star = bench["MMStar"].load(paths["MMStar"])
    bg = next(it for it in star if "background" in it.question)
    assert bg.image().convert("RGB").getpixel((2, 2)) == COLOURS[bg.options[bg.answer]]
