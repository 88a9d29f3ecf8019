"""The examples of docs/ratelimit.md, run by the convention of tests/_docs.py."""

from __future__ import annotations

from _docs import Doc

QUICK_START = [
    "True 100 99 ",
    "cost 6 exceeds the limit of rate 5/minute",
    "RateLimitStats(hits=3, allowed=2, rejected=1, peeks=1",
]
PROXIES = ["[200, 200, 200, 200, 200, 429, 429]"]

test_examples_run_twice = Doc(
    "docs/ratelimit.md",
    expect={'algorithm="sliding_window"': QUICK_START, "rules=[RateLimitRule.auth()]": PROXIES},
).test()
