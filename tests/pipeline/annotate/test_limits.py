import asyncio

from pipeline.annotate.limits import SharedRateLimiter, parse_duration, retry_after_seconds
from pipeline.annotate.pricing import PriceTable, image_tokens


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def test_buckets_refuse_past_the_budget_and_refill_over_time(tmp_path):
    clock = Clock()
    lim = SharedRateLimiter(tmp_path / "b.db", rpm=60, tpm=1000, clock=clock)
    assert lim._try(100) == 0
    for _ in range(8):
        assert lim._try(100) == 0
    assert lim._try(200) > 0  # 100 tokens left
    clock.t += 6  # 100 tokens refilled (1000/min)
    assert lim._try(200) == 0


def test_two_limiters_on_one_file_share_the_budget(tmp_path):
    clock = Clock()
    a = SharedRateLimiter(tmp_path / "b.db", rpm=2, tpm=10_000, clock=clock)
    b = SharedRateLimiter(tmp_path / "b.db", rpm=2, tpm=10_000, clock=clock)
    assert a._try(1) == 0 and b._try(1) == 0
    assert a._try(1) > 0 and b._try(1) > 0  # two requests a minute between them, not four


def test_pause_holds_everyone(tmp_path):
    clock = Clock()
    a = SharedRateLimiter(tmp_path / "b.db", rpm=100, tpm=10_000, clock=clock)
    b = SharedRateLimiter(tmp_path / "b.db", rpm=100, tpm=10_000, clock=clock)
    a.pause(3)
    assert abs(b._try(1) - 3) < 1e-6
    clock.t += 3
    assert b._try(1) == 0


def test_acquire_waits_then_proceeds(tmp_path):
    lim = SharedRateLimiter(tmp_path / "b.db", rpm=60, tpm=10**9)
    async def go():
        for _ in range(61):
            await lim.acquire(1)
    asyncio.run(asyncio.wait_for(go(), 5))
    assert lim.waited_s > 0


def test_retry_after_headers():
    assert retry_after_seconds({"retry-after": "2"}) == 2
    assert retry_after_seconds({"retry-after-ms": "1500"}) == 1.5
    assert retry_after_seconds({"x-ratelimit-reset-requests": "1s", "x-ratelimit-reset-tokens": "6m0s"}) == 360
    assert retry_after_seconds({}) is None
    assert parse_duration("20ms") == 0.02


def test_image_tokens_follow_the_tiling_rule():
    assert image_tokens(4096, 8192, "low") == 85
    assert image_tokens(1024, 1024, "high") == 85 + 170 * 4  # 768x768 -> 2x2 tiles
    assert image_tokens(2048, 4096, "high") == 85 + 170 * 6  # 1024x2048 -> 768x1536 -> 2x3
    assert image_tokens(300, 200) == 85 + 170


def test_costs_and_batch_discount():
    prices = PriceTable.default()
    assert prices.cost("gpt-4o", 1_000_000, 100_000) == 2.5 + 1.0
    assert prices.cost("gpt-4o", 1_000_000, 0, batch=True) == 1.25
    import pytest
    with pytest.raises(KeyError, match="no price"):
        prices.cost("my-vllm-model", 1, 1)
