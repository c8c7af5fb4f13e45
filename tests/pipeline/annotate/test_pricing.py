import pytest

from pipeline.annotate.pricing import Price, PriceTable, UnknownPrice, prices_from_env


def test_costs_cached_input_and_the_batch_discount():
    prices = PriceTable.default()
    assert prices.cost("gpt-4o", 1_000_000, 100_000) == pytest.approx(2.5 + 1.0)
    assert prices.cost("gpt-4o", 1_000_000, 0, batch=True) == pytest.approx(1.25)
    # 400k of the million prompt tokens came from the provider's prompt cache, at $1.25/M
    assert prices.cost("gpt-4o", 1_000_000, 0, cached_tokens=400_000) == pytest.approx(0.6 * 2.5 + 0.4 * 1.25)
    assert prices.cost("gpt-4o", 1_000_000, 0, cached_tokens=400_000, batch=True) == pytest.approx(
        (0.6 * 2.5 + 0.4 * 1.25) / 2)
    assert prices.cost("gpt-4o-2024-05-13", 1_000_000, 0, cached_tokens=400_000) == pytest.approx(5.0)  # no discount


def test_every_unpriced_model_is_named_before_anything_is_sent():
    prices = PriceTable.default()
    prices.require(["gpt-4o", "gpt-4o-mini-2024-07-18"])
    with pytest.raises(UnknownPrice) as info:
        prices.require(["gpt-4o", "my-vllm-model", "gpt-4o-mini-2099-01-01"])
    message = str(info.value)
    assert "'gpt-4o-mini-2099-01-01', 'my-vllm-model'" in message and "nothing was sent" in message
    assert "LLAVACOT_TEACHER_PRICE_IN" in message and "LLAVACOT_TEACHER_PRICES" in message
    with pytest.raises(KeyError, match="no price"):
        prices.cost("my-vllm-model", 1, 1)


def test_prices_from_the_environment():
    env = {"LLAVACOT_TEACHER_PRICE_IN": "0.5", "LLAVACOT_TEACHER_PRICE_OUT": "1.5",
           "LLAVACOT_TEACHER_PRICES": '{"judge-x": [0.1, 0.2, 0.05], "free": [0, 0]}'}
    got = prices_from_env("Qwen2.5-VL-72B-Instruct", env)
    assert got == {"Qwen2.5-VL-72B-Instruct": Price(0.5, 1.5), "judge-x": Price(0.1, 0.2, 0.05), "free": Price(0, 0)}
    assert prices_from_env("m", {}) == {}
    with pytest.raises(ValueError, match="both"):
        prices_from_env("m", {"LLAVACOT_TEACHER_PRICE_IN": "1"})
    with pytest.raises(ValueError, match="not valid JSON"):
        prices_from_env("m", {"LLAVACOT_TEACHER_PRICES": "{oops"})
    with pytest.raises(ValueError, match=">= 0"):
        Price.of([-1, 2])


def test_usage_that_is_missing_or_garbled_counts_zero_rather_than_losing_the_answer():
    from pipeline.annotate.pricing import usage_tokens

    assert usage_tokens({"usage": {"prompt_tokens": 10, "completion_tokens": 3,
                                   "prompt_tokens_details": {"cached_tokens": 8}}}) == (10, 3, 8)
    assert usage_tokens({}) == (0, 0, 0)
    assert usage_tokens({"usage": {"prompt_tokens": "many", "completion_tokens": None,
                                   "prompt_tokens_details": None}}) == (0, 0, 0)
