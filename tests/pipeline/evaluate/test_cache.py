import json

import pytest

from pipeline.demo.benchmarks import write_benchmarks
from pipeline.evaluate import get_benchmark, run
from pipeline.evaluate.cache import PredictionStore, merge_predictions, rank_and_world, shard
from tests.pipeline.evaluate.helpers import four_stage


class Crash(Exception):
    pass


def oracle(item):
    return four_stage(f"{item.answer}. {item.options[item.answer]}" if item.options else item.answer)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return write_benchmarks(str(tmp_path_factory.mktemp("bench")), seed=3)


def test_shards_partition_the_items():
    idx = [str(i) for i in range(10)]
    parts = [shard(idx, 3, r) for r in range(3)]
    assert parts == [["0", "3", "6", "9"], ["1", "4", "7"], ["2", "5", "8"]]
    assert sorted(sum(parts, []), key=int) == idx
    with pytest.raises(ValueError):
        shard(idx, 2, 2)


def test_rank_and_world_from_torchrun_variables(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert rank_and_world() == (0, 1)
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert rank_and_world() == (2, 4)


def test_interrupted_run_resumes_where_it_stopped(tmp_path, files):
    calls = []

    def flaky(item):
        calls.append(item.index)
        if len(calls) == 4:
            raise Crash("killed")
        return oracle(item)

    with pytest.raises(Crash):
        run.evaluate("MMStar", files["MMStar"], flaky, tmp_path, strategy="direct", model="fp", rank=0, world_size=1)
    assert len(calls) == 4
    first = list(calls[:3])
    # a kill mid-write leaves a torn last line: it is ignored, and the next line starts fresh
    store = PredictionStore(tmp_path, "MMStar", "direct", "fp")
    with open(store.path, "ab") as f:
        f.write(b'{"benchmark": "MMStar", "strat')
    calls.clear()
    score = run.evaluate("MMStar", files["MMStar"], oracle_counting(calls), tmp_path, strategy="direct", model="fp",
                         rank=0, world_size=1)
    assert score.value == 100 and score.missing == 0
    assert not set(calls) & set(first) and len(calls) == 8 - 3
    # a third run predicts nothing; another strategy or model is a separate run
    calls.clear()
    run.evaluate("MMStar", files["MMStar"], oracle_counting(calls), tmp_path, strategy="direct", model="fp", rank=0, world_size=1)
    assert calls == []
    run.evaluate("MMStar", files["MMStar"], oracle_counting(calls), tmp_path, strategy="best_of_n", model="fp", rank=0, world_size=1)
    assert len(calls) == 8


def oracle_counting(calls):
    def predict(item):
        calls.append(item.index)
        return {"prediction": oracle(item), "tokens": 7}
    return predict


def test_ranks_predict_their_shards_and_rank0_merges(tmp_path, files):
    items = get_benchmark("HallusionBench").load(files["HallusionBench"])
    seen = {}
    barrier_calls = []
    for rank in (1, 2, 0):  # rank 0 last: by its barrier every other rank has finished
        seen[rank] = []
        out = run.evaluate("HallusionBench", files["HallusionBench"], oracle_counting(seen[rank]), tmp_path,
                           strategy="stage_beam", model="fp", rank=rank, world_size=3, barrier=lambda: barrier_calls.append(1))
        assert (out is None) == (rank != 0)
    assert sorted(sum(seen.values(), [])) == sorted(it.index for it in items)
    assert seen[1] == [it.index for it in items][1::3]
    assert out.value == 100 and len(barrier_calls) == 3
    merged = (tmp_path / "HallusionBench" / "stage_beam" / "fp" / "predictions.jsonl").read_text().splitlines()
    recs = [json.loads(x) for x in merged]
    assert [r["index"] for r in recs] == [it.index for it in items]  # in the file's order, one per item
    assert {r["rank"] for r in recs} == {0, 1, 2} and all(r["tokens"] == 7 for r in recs)
    assert (tmp_path / "HallusionBench" / "stage_beam" / "fp" / "score-conclusion.json").exists()


def test_merge_reports_missing_items_and_a_new_world_size_resumes(tmp_path, files):
    bench = get_benchmark("AI2D_TEST")
    items = bench.load(files["AI2D_TEST"])
    calls = []
    from pipeline.evaluate.run import predict_items

    predict_items(items, oracle_counting(calls), PredictionStore(tmp_path, "AI2D_TEST", "direct", "fp", rank=0), rank=0, world_size=2)
    _, preds, missing = merge_predictions(tmp_path, "AI2D_TEST", "direct", "fp", [it.index for it in items])
    assert missing == [it.index for it in items][1::2] and len(preds) == len(items) - len(missing)
    # resumed with a single rank: only the missing half is predicted
    calls.clear()
    stats = predict_items(items, oracle_counting(calls), PredictionStore(tmp_path, "AI2D_TEST", "direct", "fp", rank=0))
    assert sorted(calls) == sorted(missing) and stats["cached"] == len(items) - len(missing)


def test_many_ranks_need_a_barrier(tmp_path, files):
    with pytest.raises(ValueError):
        run.evaluate("MMStar", files["MMStar"], oracle, tmp_path, strategy="d", model="m", rank=0, world_size=2)


def test_average_is_the_unweighted_mean():
    s = run.summary({"MMStar": 50.0, "MMBench_DEV_EN": 70.0})
    assert s["average"] == 60.0 and not s["complete"] and "MMVet" in s["missing"]


def test_search_predictions_record_every_item_even_when_one_fails(tmp_path):
    """Items in flight together; an item whose image cannot be read, or whose search fails, is
    recorded with its reason (an empty prediction that scores as wrong), the others as predicted."""
    from pipeline.evaluate.cache import PredictionStore
    from pipeline.evaluate.run import predict_items, search_predictor
    from pipeline.evaluate.tsv import Item
    from pipeline.search import SearchConfig
    from tests.pipeline.search.scripted import ScriptedCore

    class Broken(Item):
        def images(self):
            raise ValueError("truncated PNG")

    items = [Item(benchmark="MMStar", index=str(i), question=f"q{i}", answer="A", prompt=f"q{i}") for i in range(4)]
    items[2] = Broken(**{k: getattr(items[2], k) for k in ("benchmark", "index", "question", "answer", "prompt")})

    def cont(text, stop, n):
        return ["<SUMMARY> s </SUMMARY> <CAPTION> c </CAPTION> <REASONING> r </REASONING> <CONCLUSION> A </CONCLUSION>"] * n

    core = ScriptedCore(cont)          # not a batching core: the items go one by one, through the same path
    store = PredictionStore(tmp_path, "MMStar", "direct", "m")
    progress = []
    got = predict_items(items, None, store, predict_many=search_predictor("direct", core, SearchConfig(), parallel=4),
                        on_progress=lambda done, total, eta: progress.append((done, total)))
    assert got["predicted"] == 4 and progress[-1] == (4, 4)
    recs = store.load()
    assert "truncated PNG" in recs["2"]["error"] and recs["2"]["prediction"] == ""
    assert all(recs[i]["well_formed"] for i in ("0", "1", "3"))
