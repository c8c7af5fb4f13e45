from collections import Counter

import pytest

from pipeline.sampling import PAPER_QUOTAS, QuotaPlan, allocate, rank, select


def ids(n, prefix="s"):
    return [f"{prefix}/{i}" for i in range(n)]


def test_paper_quotas_are_the_table():
    assert sum(PAPER_QUOTAS.values()) == 99_400  # the paper's ~99k
    assert PAPER_QUOTAS["sharegpt4v"] == 31_300 and PAPER_QUOTAS["clevr_math"] == 500


def test_quota_plan_scale_min_and_override():
    plan = QuotaPlan(scale=0.01, min_quota=10, overrides={"pisc": 3})
    assert plan.quota("sharegpt4v") == 313
    assert plan.quota("clevr") == 10  # 5 lifted to the minimum
    assert plan.quota("pisc") == 3  # override wins, even under the minimum
    with pytest.raises(KeyError):
        QuotaPlan().quota("not_a_source")


def test_select_is_deterministic_for_a_seed_and_differs_across_seeds():
    pool = ids(1000)
    a = select(pool, 100, seed=1)
    assert a == select(list(pool), 100, seed=1)
    assert len(a) == 100 and set(a) <= set(pool)
    assert set(a) != set(select(pool, 100, seed=2))
    # order of input does not change which ids are chosen
    assert set(select(list(reversed(pool)), 100, seed=1)) == set(a)


def test_select_is_stable_when_data_is_added():
    pool = ids(1000)
    before = set(select(pool, 100, seed=0))
    grown = pool + ids(200, prefix="new")
    after = set(select(grown, 100, seed=0))
    kept = before & after
    displaced = before - after
    newcomers = after - before
    # every chosen sample that left was displaced by a newcomer with a lower rank
    assert all(n.startswith("new/") for n in newcomers)
    assert len(displaced) == len(newcomers)
    worst_kept = max(rank(i, 0) for i in after)
    assert all(rank(d, 0) > worst_kept for d in displaced)
    assert len(kept) >= 80  # 200 new among 1200: about 1/6 displaced


def test_quota_larger_than_pool_takes_everything_in_order():
    pool = ids(5)
    assert select(pool, 10) == pool


def test_stratified_selection_is_proportional():
    pool = ids(1000)
    strata = ["a" if i < 700 else ("b" if i < 950 else "c") for i in range(1000)]
    chosen = select(pool, 100, seed=0, strata=strata)
    by = Counter(strata[int(c.split("/")[1])] for c in chosen)
    assert by == {"a": 70, "b": 25, "c": 5}


def test_allocate_uses_largest_remainder_and_caps_at_size():
    assert allocate({"a": 1, "b": 1, "c": 1}, 2) == {"a": 1, "b": 1, "c": 0}
    assert allocate({"a": 10, "b": 1}, 5) == {"a": 5, "b": 0}
    assert sum(allocate({"a": 3, "b": 7, "c": 11}, 13).values()) == 13
    assert allocate({"a": 2, "b": 50}, 100) == {"a": 2, "b": 50}


def test_select_rejects_duplicate_ids():
    with pytest.raises(ValueError):
        select(["x", "x"], 1)


# --- duplicates are removed before the quota is drawn --------------------------------------------

def _table(path, rows):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline import schema

    full = [{"id": r[0], "source": r[0].split("/")[0], "split": r[1], "image_path": "x.png", "question": r[3],
             "answer": "a", "options": [], "hints": [], "conversations": [], "meta": "{}", "image_width": 1,
             "image_height": 1, "image_sha256": r[2]} for r in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(full, schema=schema.SAMPLE), path)
    return str(path)


def test_duplicates_within_across_and_against_held_out_rows_never_reach_the_subsample(tmp_path):
    import pyarrow.parquet as pq

    from pipeline.sampling import earlier_sources, source_keys, subsample_source
    from pipeline.storage import Root

    earlier = _table(tmp_path / "a.parquet", [("aokvqa/1", "train", "img-A", "What is it?")])
    path = _table(tmp_path / "b.parquet", [
        ("geoqa_plus/GeoQA-train/1", "train", "img-1", "Find x."),
        ("geoqa_plus/Mix-train/1", "train", "img-1", "find  X"),  # same image, same normalised question
        ("geoqa_plus/Mix-train/2", "train", "img-2", "Find x."),  # same question, another image: kept
        ("geoqa_plus/Mix-train/3", "train", "img-A", "What is it?"),  # an earlier source has it
        ("geoqa_plus/Mix-train/4", "train", "img-T", "Find y."),  # a test row has it
        ("geoqa_plus/new-test/9", "test", "img-T", "Find y."),
        ("geoqa_plus/Mix-train/5", "train", None, "Find z."),  # no image hash: nothing to compare
    ])
    out = Root(str(tmp_path / "out"))
    assert earlier_sources("geoqa_plus", ["aokvqa", "geoqa_plus", "clevr"]) == ["aokvqa"]
    s = subsample_source("geoqa_plus", path, out, quota=100, earlier_keys={"aokvqa": source_keys(earlier, out.fs)})
    kept = pq.read_table(s.samples_path).column("id").to_pylist()
    within = {"geoqa_plus/GeoQA-train/1", "geoqa_plus/Mix-train/1"}
    assert len(set(kept) & within) == 1  # one copy of the pair, the lower hash rank
    assert set(kept) - within == {"geoqa_plus/Mix-train/2", "geoqa_plus/Mix-train/5"}
    assert (s.duplicates_within_source, s.duplicates_of_held_out, s.duplicates_of_other_sources) == (1, 1, {"aokvqa": 1})
    assert s.duplicates_removed == 3 and s.candidates == 3
    listed = {r["sample_id"]: (r["reason"], r["detail"]) for r in pq.read_table(s.duplicates_path).to_pylist()}
    assert listed["geoqa_plus/Mix-train/3"] == ("duplicate_of_other_source",
                                                "same image and question as aokvqa/1 (aokvqa comes first)")
    assert listed["geoqa_plus/Mix-train/4"][0] == "duplicate_of_held_out"
    again = subsample_source("geoqa_plus", path, Root(str(tmp_path / "again")), quota=100,
                             earlier_keys={"aokvqa": source_keys(earlier, out.fs)})
    assert again.content_hash == s.content_hash  # deterministic


def test_unassigned_rows_are_held_out_by_default(tmp_path):
    import pyarrow.parquet as pq

    from pipeline.sampling import subsample_source
    from pipeline.storage import Root

    path = _table(tmp_path / "p.parquet", [("pisc/1/1-2", "train", "i1", "Q?"), ("pisc/2/1-2", "unassigned", "i2", "Q?")])
    s = subsample_source("pisc", path, Root(str(tmp_path / "o")), quota=10)
    assert pq.read_table(s.samples_path).column("id").to_pylist() == ["pisc/1/1-2"]
    assert s.excluded_splits == {"unassigned": 1}
