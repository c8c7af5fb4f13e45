"""Reading a reply's rate-limit headers: how long to wait (Retry-After and the reset headers) and
how much of the account's budget is left (x-ratelimit-remaining-*). The shared budget itself is
in pipeline/annotate/budget.py."""
from __future__ import annotations

import re
import time


def retry_after_seconds(headers, resets: bool = True) -> float | None:
    """Seconds to wait from a response's headers: `retry-after-ms`, `retry-after` (seconds or an
    HTTP date), else (with `resets`, for a 429) the x-ratelimit reset headers ("1s", "6m0s", "20ms").
    The reset headers say when the rate budget is full again, which means nothing for a 5xx: a
    server error passes resets=False and backs off with jitter unless told a Retry-After."""
    if headers is None:
        return None
    get = headers.get
    if get("retry-after-ms"):
        try:
            return float(get("retry-after-ms")) / 1000.0
        except ValueError:
            pass
    ra = get("retry-after")
    if ra:
        try:
            return float(ra)
        except ValueError:
            from email.utils import parsedate_to_datetime

            try:
                return max(0.0, parsedate_to_datetime(ra).timestamp() - time.time())
            except (TypeError, ValueError):
                pass
    if not resets:
        return None
    found = [parse_duration(get(h)) for h in ("x-ratelimit-reset-requests", "x-ratelimit-reset-tokens") if get(h)]
    found = [r for r in found if r is not None]
    return max(found) if found else None


def remaining_budget(headers) -> tuple[float | None, float | None]:
    """(requests, tokens) the account has left by the x-ratelimit-remaining-* headers; None where
    a header is missing or unreadable."""
    out = []
    for h in ("x-ratelimit-remaining-requests", "x-ratelimit-remaining-tokens"):
        value = headers.get(h) if headers is not None else None
        try:
            number = float(value) if value is not None else None
        except ValueError:
            number = None
        out.append(number if number is not None and number >= 0 else None)  # -1: the server does not say
    return out[0], out[1]


def parse_duration(text: str) -> float | None:
    """'1s', '6m0s', '20ms', '1h2m3.5s' -> seconds."""
    if not text:
        return None
    total, matched = 0.0, False
    for value, unit in re.findall(r"([\d.]+)(ms|h|m|s)", text):
        matched = True
        total += float(value) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
    return total if matched else None


class SustainedRateLimits:
    """Whether 429s keep coming: at least `share` of the last `window` replies were 429s.

    A single 429 delays only the request that got it (with its Retry-After, or backoff); the
    whole client (every process sharing the budget) pauses only when this says the refusals are
    not a passing burst: an account or server over its limit refuses nearly everything, a healthy
    one under load refuses a few per cent."""

    def __init__(self, window: int = 20, share: float = 0.5) -> None:
        from collections import deque

        self.window, self.share = window, share
        self._last: deque[bool] = deque(maxlen=window)
        self._count = 0

    def record(self, was_429: bool) -> None:
        if len(self._last) == self.window:
            self._count -= self._last[0]
        self._last.append(was_429)
        self._count += was_429

    def sustained(self) -> bool:
        return len(self._last) >= self.window // 2 and self._count >= self.share * self.window
