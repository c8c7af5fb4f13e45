from pipeline.annotate.limits import SustainedRateLimits, parse_duration, remaining_budget, retry_after_seconds
from pipeline.annotate.pricing import image_tokens


def test_retry_after_headers():
    assert retry_after_seconds({"retry-after": "2"}) == 2
    assert retry_after_seconds({"retry-after-ms": "1500"}) == 1.5
    assert retry_after_seconds({"x-ratelimit-reset-requests": "1s", "x-ratelimit-reset-tokens": "6m0s"}) == 360
    assert retry_after_seconds({"x-ratelimit-reset-requests": "1s"}, resets=False) is None  # a 5xx
    assert retry_after_seconds({}) is None
    assert parse_duration("20ms") == 0.02


def test_remaining_budget_says_unknown_when_a_server_sends_none_or_minus_one():
    assert remaining_budget({"x-ratelimit-remaining-requests": "3", "x-ratelimit-remaining-tokens": "900"}) == (3, 900)
    assert remaining_budget({}) == (None, None)
    assert remaining_budget({"x-ratelimit-remaining-requests": "-1", "x-ratelimit-remaining-tokens": "-1"}) == (None, None)


def test_429s_are_sustained_only_when_most_recent_replies_are_429s():
    d = SustainedRateLimits(window=20, share=0.5)
    for i in range(400):  # a healthy server under load: one 429 in twenty
        d.record(i % 20 == 0)
        assert not d.sustained()
    for _ in range(9):
        d.record(True)
    assert not d.sustained()
    d.record(True)
    assert d.sustained()
    for _ in range(11):  # answers again: the storm is over
        d.record(False)
    assert not d.sustained()


def test_image_tokens_follow_the_tiling_rule():
    assert image_tokens(4096, 8192, "low") == 85
    assert image_tokens(1024, 1024, "high") == 85 + 170 * 4  # 768x768 -> 2x2 tiles
    assert image_tokens(2048, 4096, "high") == 85 + 170 * 6  # 1024x2048 -> 768x1536 -> 2x3
    assert image_tokens(300, 200) == 85 + 170
