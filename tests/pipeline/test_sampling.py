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
